"""The sandbox fake upstream, driven as a real subprocess with httpx and the official openai SDK."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest

from libs.devproc import Proc, free_port, spawn_python_service

KEY = "sk-sandbox-test-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
WORDS = {
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett", "kilo", "lima",
    "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango", "uniform", "victor", "whiskey",
    "xray", "yankee", "zulu",
}  # fmt: skip
TOOLS = [
    {
        "type": "function",
        "function": {"name": "search", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}},
    }
]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    port = free_port()
    proc = spawn_python_service(
        "sandbox",
        "services.sandbox",
        env={"PORT": str(port), "SANDBOX_API_KEY": KEY, "SANDBOX_MODELS": "m-one,m-two"},
        log_dir=tmp_path_factory.mktemp("sandbox-logs"),
        health_url=f"http://127.0.0.1:{port}/healthz",
    )
    proc.url = f"http://127.0.0.1:{port}"
    try:
        yield proc
    finally:
        proc.stop()
    log = proc.log()
    assert "Traceback" not in log and "Exception in ASGI" not in log, log


@pytest.fixture
async def http(sandbox: Proc) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sandbox.url, headers=AUTH, timeout=10.0) as client:
        yield client


@pytest.fixture
async def sdk(sandbox: Proc) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=f"{sandbox.url}/v1", api_key=KEY, max_retries=0) as client:
        yield client


def mark() -> str:
    return uuid.uuid4().hex[:12]


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "any-model", "messages": [{"role": "user", "content": text}], **extra}


def sse_payloads(raw: str) -> list[Any]:
    """Split an SSE body into decoded `data:` payloads ("[DONE]" kept as a string)."""
    assert raw.endswith("\n\n")
    out: list[Any] = []
    for block in raw.split("\n\n")[:-1]:
        assert block.startswith("data: "), block
        data = block[len("data: ") :]
        out.append(data if data == "[DONE]" else orjson.loads(data))
    return out


async def events(http: httpx.AsyncClient, tag: str) -> list[dict[str, Any]]:
    response = await http.get("/_sandbox/events", params={"mark": tag})
    assert response.status_code == 200
    return response.json()["events"]


async def wait_event(http: httpx.AsyncClient, tag: str, key: str, within: float = 2.0) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        found = await events(http, tag)
        if found and found[-1][key] is not None:
            return found[-1]
        assert time.monotonic() < deadline, f"no {key} for mark {tag}: {found}"
        await asyncio.sleep(0.005)


def assert_error_body(body: dict[str, Any], code: str | None) -> None:
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert body["error"]["code"] == code


# -- basics -------------------------------------------------------------------------------------------------


async def test_health_and_models(http: httpx.AsyncClient, sdk: openai.AsyncOpenAI) -> None:
    root = await http.get("/")
    assert (root.status_code, root.text) == (200, "OK")
    assert root.headers["content-type"].startswith("text/plain")
    assert (await http.get("/healthz")).status_code == 200
    listed = (await http.get("/v1/models")).json()
    assert listed["object"] == "list"
    # the chat models first, then the embedding, image and moderation models (their defaults here)
    assert [m["id"] for m in listed["data"]][:2] == ["m-one", "m-two"]
    assert all(
        m["object"] == "model" and m["owned_by"] == "sandbox" and isinstance(m["created"], int) for m in listed["data"]
    )
    assert [m.id async for m in sdk.models.list()] == [m["id"] for m in listed["data"]]


async def test_api_key_required(sandbox: Proc) -> None:
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        for headers in ({}, {"Authorization": "Bearer sk-wrong"}):
            for response in (
                await client.post("/v1/chat/completions", json=chat("hi"), headers=headers),
                await client.get("/v1/models", headers=headers),
            ):
                assert response.status_code == 401
                assert_error_body(response.json(), "invalid_api_key")
                assert "sk-wrong" not in response.text  # only echoed when asked to
        assert (await client.get("/healthz")).status_code == 200  # health stays open
    async with openai.AsyncOpenAI(base_url=f"{sandbox.url}/v1", api_key="sk-wrong", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError) as caught:
            await bad.chat.completions.create(**chat("hi"))
    assert caught.value.code == "invalid_api_key"


async def test_invalid_requests_get_openai_400s(http: httpx.AsyncClient) -> None:
    bad = [
        ("/v1/chat/completions", b"{not json"),
        ("/v1/chat/completions", orjson.dumps({"model": "m"})),
        ("/v1/chat/completions", orjson.dumps({"model": "m", "messages": []})),
        ("/v1/chat/completions", orjson.dumps(chat("hi", n=0))),
        ("/v1/chat/completions", orjson.dumps(chat("hi [sandbox tokenz=3]"))),
        ("/v1/chat/completions", orjson.dumps(chat("hi [sandbox tokens=many]"))),
        ("/v1/completions", orjson.dumps({"model": "m"})),
        ("/v1/completions", orjson.dumps({"model": "m", "prompt": {"x": 1}})),
    ]
    for path, body in bad:
        response = await http.post(path, content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400, (path, body, response.text)
        assert_error_body(response.json(), None)
        assert response.json()["error"]["type"] == "invalid_request_error"
    unknown = await http.post("/v1/chat/completions", json=chat("hi", frobnicate={"x": [1]}, temperature=0.2))
    assert unknown.status_code == 200  # unknown fields are ignored
    assert (await http.get("/v1/chat/completions")).status_code == 405
    missing = await http.get("/nope")
    assert missing.status_code == 404
    assert_error_body(missing.json(), "unknown_url")


# -- chat ---------------------------------------------------------------------------------------------------


async def test_chat_non_stream_via_sdk(sdk: openai.AsyncOpenAI) -> None:
    result = await sdk.chat.completions.create(
        model="whatever-model",
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "one two three"}]},
        ],
    )
    assert result.object == "chat.completion"
    assert result.id.startswith("chatcmpl-")
    assert result.model == "whatever-model"
    assert result.system_fingerprint
    assert isinstance(result.created, int) and abs(result.created - time.time()) < 60
    (choice,) = result.choices
    assert (choice.index, choice.finish_reason, choice.message.role) == (0, "stop", "assistant")
    content = choice.message.content
    assert content is not None and content.endswith(" ")
    words = content.split()
    assert len(words) == 16 and set(words) <= WORDS
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.total_tokens) == (5, 16, 21)


async def test_determinism_and_tokens(http: httpx.AsyncClient) -> None:
    async def text(prompt: str, **extra: Any) -> list[str]:
        body = (await http.post("/v1/chat/completions", json=chat(prompt, **extra))).json()
        return [c["message"]["content"] for c in body["choices"]]

    first = await text("the same prompt")
    assert first == await text("the same prompt")
    assert first != await text("another prompt")
    # The directive is not part of the seed: fewer tokens are a prefix of the default answer.
    five = (await text("the same prompt [sandbox tokens=5]"))[0]
    assert len(five.split()) == 5 and first[0].startswith(five)
    two = await text("the same prompt", n=2)
    assert two[0] == first[0] and two[1] != two[0]
    assert (await text("the same prompt [sandbox tokens=0]")) == [""]


async def test_max_tokens_caps_with_length(http: httpx.AsyncClient) -> None:
    for field in ("max_tokens", "max_completion_tokens"):
        body = (await http.post("/v1/chat/completions", json=chat("cap me", **{field: 3}))).json()
        assert body["choices"][0]["finish_reason"] == "length"
        assert len(body["choices"][0]["message"]["content"].split()) == 3
        assert body["usage"]["completion_tokens"] == 3
    roomy = (await http.post("/v1/chat/completions", json=chat("cap me [sandbox tokens=4]", max_tokens=10))).json()
    assert roomy["choices"][0]["finish_reason"] == "stop"
    assert roomy["usage"]["completion_tokens"] == 4


async def test_chat_stream_shapes_without_usage(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/chat/completions", json=chat("stream me [sandbox tokens=4]", stream=True))
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    payloads = sse_payloads(response.text)
    assert payloads[-1] == "[DONE]"
    chunks = payloads[:-1]
    assert len(chunks) == 1 + 4 + 1
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-")
    for chunk in chunks:
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["model"] == "any-model" and chunk["system_fingerprint"]
        assert "usage" not in chunk
        assert len(chunk["choices"]) == 1 and chunk["choices"][0]["index"] == 0
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    tokens = [c["choices"][0]["delta"]["content"] for c in chunks[1:-1]]
    assert all(t.endswith(" ") and t.strip() in WORDS for t in tokens)
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * 5 + ["stop"]
    assert chunks[-1]["choices"][0]["delta"] == {}
    whole = (await http.post("/v1/chat/completions", json=chat("stream me [sandbox tokens=4]"))).json()
    assert "".join(tokens) == whole["choices"][0]["message"]["content"]


async def test_chat_stream_include_usage_via_sdk(sdk: openai.AsyncOpenAI, http: httpx.AsyncClient) -> None:
    stream = await sdk.chat.completions.create(
        **chat("count these words [sandbox tokens=6]"), stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (5, 6)
    assert all(c.usage is None for c in chunks[:-1])
    assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1]).count(" ") == 6
    raw = sse_payloads(
        (
            await http.post(
                "/v1/chat/completions",
                json=chat("x [sandbox tokens=2]", stream=True, stream_options={"include_usage": True}),
            )
        ).text
    )
    assert all("usage" in c and c["usage"] is None for c in raw[:-2])  # an explicit null, like OpenAI
    assert raw[-2]["choices"] == [] and raw[-2]["usage"]["total_tokens"] == 3 + 2


async def test_chat_stream_n2_interleaves_choices(http: httpx.AsyncClient) -> None:
    payloads = sse_payloads(
        (await http.post("/v1/chat/completions", json=chat("two of them [sandbox tokens=3]", n=2, stream=True))).text
    )
    texts = {0: "", 1: ""}
    finishes = {}
    for chunk in payloads[:-1]:
        (choice,) = chunk["choices"]
        texts[choice["index"]] += choice["delta"].get("content") or ""
        if choice["finish_reason"]:
            finishes[choice["index"]] = choice["finish_reason"]
    assert finishes == {0: "stop", 1: "stop"}
    assert texts[0] != texts[1]
    whole = (await http.post("/v1/chat/completions", json=chat("two of them [sandbox tokens=3]", n=2))).json()
    assert [c["message"]["content"] for c in whole["choices"]] == [texts[0], texts[1]]
    assert whole["usage"]["completion_tokens"] == 6


async def test_completions_prompt_list(sdk: openai.AsyncOpenAI) -> None:
    result = await sdk.completions.create(model="legacy", prompt=["a b", "c d e [sandbox tokens=3]"], n=2)
    assert result.object == "text_completion" and result.id.startswith("cmpl-")
    assert [c.index for c in result.choices] == [0, 1, 2, 3]
    assert all(len(c.text.split()) == 3 and c.finish_reason == "stop" for c in result.choices)
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (2 + 5, 12)
    stream = await sdk.completions.create(
        model="legacy",
        prompt=["a b", "c d e [sandbox tokens=3]"],
        n=2,
        stream=True,
        stream_options={"include_usage": True},
    )
    streamed: dict[int, str] = {}
    ids = set()
    usage = None
    async for chunk in stream:
        ids.add(chunk.id)
        assert chunk.object == "text_completion"
        for choice in chunk.choices:
            streamed[choice.index] = streamed.get(choice.index, "") + choice.text
        usage = chunk.usage or usage
    assert len(ids) == 1
    assert streamed == {c.index: c.text for c in result.choices}
    assert usage is not None and usage.completion_tokens == 12


# -- tools --------------------------------------------------------------------------------------------------


async def test_tool_call_stream_reassembled_by_sdk(sdk: openai.AsyncOpenAI) -> None:
    async with sdk.chat.completions.stream(
        model="tooly",
        messages=[{"role": "user", "content": "find cheap flights [sandbox tool=search]"}],
        tools=TOOLS,  # type: ignore[arg-type]
    ) as stream:
        fragments = 0
        async for event in stream:
            if event.type == "tool_calls.function.arguments.delta":
                fragments += 1
        final = await stream.get_final_completion()
    assert fragments >= 3
    (choice,) = final.choices
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "search"
    assert orjson.loads(call.function.arguments) == {"q": "find cheap flights"}


async def test_tool_choice_non_stream_and_tool_history(http: httpx.AsyncClient) -> None:
    history = [
        {"role": "user", "content": "weather please"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "search", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "user", "content": "and tomorrow"},
    ]
    named = {"type": "function", "function": {"name": "search"}}
    body = {"model": "m", "messages": history, "tools": TOOLS, "tool_choice": named}
    result = (await http.post("/v1/chat/completions", json=body)).json()
    message = result["choices"][0]["message"]
    assert result["choices"][0]["finish_reason"] == "tool_calls"
    assert message["content"] is None
    assert message["tool_calls"][0]["function"] == {"name": "search", "arguments": '{"q": "and tomorrow"}'}
    assert result["usage"]["prompt_tokens"] == 2 + 1 + 2
    again = (await http.post("/v1/chat/completions", json=body)).json()
    assert again["choices"][0]["message"]["tool_calls"][0]["id"] == message["tool_calls"][0]["id"]
    # Without `tools` the directive is inert: plain text.
    plain = (await http.post("/v1/chat/completions", json=chat("x [sandbox tool=search]"))).json()
    assert plain["choices"][0]["finish_reason"] == "stop"


# -- fault injection ----------------------------------------------------------------------------------------


async def test_status_429_with_retry_after(sdk: openai.AsyncOpenAI, http: httpx.AsyncClient) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        await sdk.chat.completions.create(**chat("slow down [sandbox status=429]"))
    assert caught.value.status_code == 429
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.response.headers["retry-after"] == "1"
    custom = await http.post("/v1/chat/completions", json=chat("x [sandbox status=429 retry_after=7]"))
    assert (custom.status_code, custom.headers["retry-after"]) == (429, "7")
    for status in (400, 500, 503):
        response = await http.post("/v1/completions", json={"model": "m", "prompt": f"x [sandbox status={status}]"})
        assert response.status_code == status
        assert_error_body(response.json(), response.json()["error"]["code"])
        assert "retry-after" not in response.headers
    unauthorized = await http.post("/v1/chat/completions", json=chat("x [sandbox status=401]"))
    assert unauthorized.status_code == 401
    assert_error_body(unauthorized.json(), "invalid_api_key")


async def test_echo_key_puts_the_token_in_the_message(http: httpx.AsyncClient) -> None:
    tag = mark()
    response = await http.post("/v1/chat/completions", json=chat(f"x [sandbox status=401 echo_key=1 mark={tag}]"))
    assert response.status_code == 401
    assert KEY in response.json()["error"]["message"]
    other = await http.post("/v1/chat/completions", json=chat("x [sandbox status=503 echo_key=1]"))
    assert KEY in other.json()["error"]["message"]
    (event,) = await events(http, tag)
    assert event["authorization_present"] is True and event["status"] == 401
    assert KEY not in (await http.get("/_sandbox/events")).text  # the log never stores the token


async def test_error_after_ends_a_stream_with_an_error_event(http: httpx.AsyncClient) -> None:
    """As OpenAI reports a failure mid-generation: tokens, then `data: {"error": ...}`, no [DONE]."""
    tag = mark()
    streamed = await http.post("/v1/chat/completions",
                               json=chat(f"x [sandbox error_after=2 echo_key=1 mark={tag}]", stream=True))
    assert streamed.status_code == 200
    payloads = sse_payloads(streamed.text)
    assert "[DONE]" not in payloads
    contents = [p["choices"][0]["delta"].get("content") for p in payloads[:-1] if p["choices"]]
    assert len([c for c in contents if c]) == 2
    assert payloads[-1]["error"]["type"] == "server_error" and KEY in payloads[-1]["error"]["message"]
    (event,) = await events(http, tag)
    assert event["outcome"] == "error_event" and event["content_chunks"] == 2
    whole = await http.post("/v1/chat/completions", json=chat("x [sandbox error_after=2]"))
    assert whole.status_code == 500 and whole.json()["error"]["type"] == "server_error"
    assert KEY not in whole.text  # echoed only with echo_key


async def test_fail_after_truncates_the_stream(http: httpx.AsyncClient, sdk: openai.AsyncOpenAI) -> None:
    tag = mark()
    received = []
    with pytest.raises(httpx.RemoteProtocolError):
        async with http.stream(
            "POST", "/v1/chat/completions", json=chat(f"x [sandbox fail_after=3 tokens=10 mark={tag}]", stream=True)
        ) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    received.append(line[6:])
    assert "[DONE]" not in received
    assert len(received) == 1 + 3  # the role chunk, then exactly three tokens
    (event,) = await events(http, tag)
    assert (event["outcome"], event["content_chunks"], event["completed_at"]) == ("aborted", 3, None)
    assert event["aborted_at"] >= event["first_byte_at"]

    stream = await sdk.chat.completions.create(**chat("x [sandbox fail_after=2]"), stream=True)
    got = []
    with pytest.raises(openai.APIConnectionError):  # the SDK wraps the transport's incomplete read
        async for chunk in stream:
            got.append(chunk)
    assert len(got) == 3 and all(c.choices[0].finish_reason is None for c in got)


async def test_hang_detects_client_disconnect_promptly(http: httpx.AsyncClient, sandbox: Proc) -> None:
    tag = mark()
    async with httpx.AsyncClient(base_url=sandbox.url, headers=AUTH) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post("/v1/chat/completions", json=chat(f"x [sandbox hang=1 mark={tag}]"), timeout=0.3)
        closed_at = time.time()
    event = await wait_event(http, tag, "disconnected_at")
    assert abs(event["disconnected_at"] - closed_at) < 0.1, event["disconnected_at"] - closed_at
    assert event["disconnected_at"] - event["received_at"] >= 0.25
    assert (event["outcome"], event["first_byte_at"], event["completed_at"], event["status"]) == (
        "disconnected",
        None,
        None,
        None,
    )


async def test_hang_after_and_token_delay_disconnects(http: httpx.AsyncClient) -> None:
    for directive, expected_chunks in (("hang_after=2", 2), ("token_delay_ms=40 tokens=200", None)):
        tag = mark()
        seen = 0
        async with http.stream(
            "POST", "/v1/chat/completions", json=chat(f"x [sandbox {directive} mark={tag}]", stream=True)
        ) as response:
            async for line in response.aiter_lines():
                if line.startswith('data: {"'):
                    seen += 1
                if seen == 3:  # role chunk + two tokens
                    break
            await asyncio.sleep(0.05)
            await response.aclose()
            closed_at = time.time()
        event = await wait_event(http, tag, "disconnected_at")
        assert abs(event["disconnected_at"] - closed_at) < 0.1, (directive, event["disconnected_at"] - closed_at)
        assert event["outcome"] == "disconnected" and event["completed_at"] is None
        assert event["first_byte_at"] is not None and event["status"] == 200
        if expected_chunks is not None:
            assert event["content_chunks"] == expected_chunks
        else:
            assert 2 <= event["content_chunks"] < 10  # stopped generating soon after the client left


async def test_latency_first_token_and_token_delay(http: httpx.AsyncClient) -> None:
    tag = mark()
    started = time.monotonic()
    response = await http.post("/v1/chat/completions", json=chat(f"x [sandbox latency_ms=150 mark={tag}]"))
    assert response.status_code == 200 and time.monotonic() - started >= 0.15
    (event,) = await events(http, tag)
    assert event["first_byte_at"] - event["received_at"] >= 0.15
    assert event["completed_at"] >= event["first_byte_at"] and event["outcome"] == "completed"

    tag = mark()
    arrivals: list[float] = []
    async with http.stream(
        "POST",
        "/v1/chat/completions",
        json=chat(f"x [sandbox first_token_ms=120 token_delay_ms=30 tokens=4 mark={tag}]", stream=True),
    ) as response:
        headers_at = time.monotonic()
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                arrivals.append(time.monotonic())
    assert arrivals[0] - headers_at >= 0.1  # headers first, then the first token after first_token_ms
    assert arrivals[-1] - arrivals[0] >= 3 * 0.03 * 0.9  # three gaps between four tokens
    event = await wait_event(http, tag, "completed_at")
    assert event["completed_at"] - event["first_byte_at"] >= 0.12 + 0.09 - 0.01
    assert (event["content_chunks"], event["outcome"], event["stream"]) == (4, "completed", True)


async def test_fail_times_then_success(http: httpx.AsyncClient) -> None:
    tag = mark()
    statuses = [
        (
            await http.post("/v1/chat/completions", json=chat(f"x [sandbox fail_times=2 status=503 mark={tag}]"))
        ).status_code
        for _ in range(4)
    ]
    assert statuses == [503, 503, 200, 200]
    assert [e["status"] for e in await events(http, tag)] == statuses
    tag = mark()
    default = [
        (
            await http.post("/v1/completions", json={"model": "m", "prompt": f"[sandbox fail_times=1 mark={tag}]"})
        ).status_code
        for _ in range(2)
    ]
    assert default == [500, 200]


async def test_global_config_defaults(http: httpx.AsyncClient) -> None:
    try:
        assert (await http.post("/_sandbox/config", json={"tokens": 3, "token_delay_ms": 0})).status_code == 200
        assert (await http.get("/_sandbox/config")).json() == {"tokens": 3, "token_delay_ms": 0}
        body = (await http.post("/v1/chat/completions", json=chat("config"))).json()
        assert body["usage"]["completion_tokens"] == 3
        override = (await http.post("/v1/chat/completions", json=chat("config [sandbox tokens=5]"))).json()
        assert override["usage"]["completion_tokens"] == 5  # per-request directives win
        rejected = await http.post("/_sandbox/config", json={"tokenz": 1})
        assert rejected.status_code == 400 and "tokenz" in rejected.json()["error"]["message"]
        assert (await http.get("/_sandbox/config")).json() == {"tokens": 3, "token_delay_ms": 0}
    finally:
        assert (await http.post("/_sandbox/config", json={})).json() == {}
    body = (await http.post("/v1/chat/completions", json=chat("config"))).json()
    assert body["usage"]["completion_tokens"] == 16


async def test_events_api(http: httpx.AsyncClient) -> None:
    tag = mark()
    await http.post("/v1/chat/completions", json=chat(f"first [sandbox mark={tag}]", model="m-a"))
    await http.post("/v1/completions", json={"model": "m-b", "prompt": f"second [sandbox mark={tag}]", "stream": True})
    await http.post("/v1/chat/completions", json=chat("unmarked"))
    first, second = await events(http, tag)
    assert (first["path"], first["model"], first["stream"]) == ("/v1/chat/completions", "m-a", False)
    assert (second["path"], second["model"], second["stream"]) == ("/v1/completions", "m-b", True)
    for event in (first, second):
        assert event["mark"] == tag and event["status"] == 200 and event["authorization_present"] is True
        assert event["received_at"] <= event["first_byte_at"] <= event["completed_at"]
        assert event["disconnected_at"] is None
    assert first["received_at"] <= second["received_at"]
    everything = (await http.get("/_sandbox/events")).json()["events"]
    assert all("mark" in e and e["mark"] for e in everything)  # unmarked requests are not logged
    assert (await http.delete("/_sandbox/events")).status_code == 200
    assert await events(http, tag) == []
