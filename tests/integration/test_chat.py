"""Chat completions through the real stack (edge → NATS → openai-worker → sandbox), via the SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import cast

import httpx
import openai
import orjson
import pytest_asyncio
from openai.types.chat import (
    ChatCompletionMessageFunctionToolCallParam,
    ChatCompletionMessageParam,
    ChatCompletionToolParam,
)

from tests.conftest import AUTH_KEY, SANDBOX_KEY, Stack
from tests.wiretap import Wiretap


@pytest_asyncio.fixture
async def client(stack: Stack) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=stack.base_url, api_key=AUTH_KEY, max_retries=0, timeout=30) as sdk:
        yield sdk


def user(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": text}]


async def test_non_stream_answer(client: openai.AsyncOpenAI) -> None:
    reply = await client.chat.completions.create(model="sandbox-chat", messages=user("hello there [sandbox tokens=5]"))
    assert reply.id.startswith("chatcmpl-")
    assert reply.object == "chat.completion"
    assert reply.model == "sandbox-chat"
    assert len(reply.choices) == 1
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content and len(choice.message.content.split()) == 5
    assert choice.finish_reason == "stop"
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 5
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 5


async def test_answers_are_deterministic_and_alias_routes(client: openai.AsyncOpenAI) -> None:
    first = await client.chat.completions.create(model="sandbox-fast", messages=user("same prompt"))
    again = await client.chat.completions.create(model="fast", messages=user("same prompt"))
    assert first.choices[0].message.content == again.choices[0].message.content
    assert again.model == "fast"  # the client's name for it, as OpenAI echoes the requested model


async def test_stream_with_usage(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="sandbox-chat", messages=user("stream me [sandbox tokens=6]"), stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    ids = {c.id for c in chunks}
    assert len(ids) == 1 and ids.pop().startswith("chatcmpl-")
    with_choices = [c for c in chunks if c.choices]
    roles = [c.choices[0].delta.role for c in with_choices]
    assert roles[0] == "assistant" and all(r is None for r in roles[1:])
    assert with_choices[-1].choices[0].finish_reason == "stop"
    assert all(c.choices[0].finish_reason is None for c in with_choices[:-1])
    text = "".join(c.choices[0].delta.content or "" for c in with_choices)
    assert len(text.split()) == 6
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 6
    assert all(c.usage is None for c in chunks[:-1])


async def test_stream_without_usage_has_no_usage_chunk(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(model="sandbox-chat", messages=user("no usage"), stream=True)
    chunks = [chunk async for chunk in stream]
    assert all(c.choices for c in chunks)
    assert all(getattr(c, "usage", None) is None for c in chunks)


async def test_sse_golden_bytes(stack: Stack) -> None:
    """The raw wire: headers, one JSON object per data line, stable id, role once, [DONE] last."""
    body = {"model": "sandbox-chat", "messages": user("golden [sandbox tokens=3]"), "stream": True,
            "stream_options": {"include_usage": True}}
    async with httpx.AsyncClient() as http, http.stream(
        "POST", stack.base_url + "/chat/completions", json=body, headers={"authorization": f"Bearer {AUTH_KEY}"}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        raw = b"".join([part async for part in response.aiter_raw()])
    events = [e for e in raw.split(b"\n\n") if e and not e.startswith(b":")]
    assert events[-1] == b"data: [DONE]"
    payloads = [orjson.loads(e.removeprefix(b"data: ")) for e in events[:-1]]
    assert all(e.startswith(b"data: {") for e in events[:-1])
    assert len({p["id"] for p in payloads}) == 1
    assert {p["object"] for p in payloads} == {"chat.completion.chunk"}
    deltas = [p["choices"][0]["delta"] for p in payloads if p["choices"]]
    assert [("role" in d) for d in deltas] == [True] + [False] * (len(deltas) - 1)
    assert payloads[-1]["choices"] == [] and payloads[-1]["usage"]["completion_tokens"] == 3
    finishes = [p["choices"][0]["finish_reason"] for p in payloads if p["choices"]]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}


async def test_native_n(client: openai.AsyncOpenAI) -> None:
    reply = await client.chat.completions.create(model="sandbox-chat", messages=user("two please"), n=2)
    assert [c.index for c in reply.choices] == [0, 1]
    assert reply.choices[0].message.content != reply.choices[1].message.content


async def test_stream_n_indexes(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="sandbox-chat", messages=user("three [sandbox tokens=4]"), n=3, stream=True
    )
    chunks = [chunk async for chunk in stream]
    by_index: dict[int, list[str]] = {}
    roles: dict[int, int] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            by_index.setdefault(choice.index, []).append(choice.delta.content or "")
            roles[choice.index] = roles.get(choice.index, 0) + (choice.delta.role is not None)
    assert sorted(by_index) == [0, 1, 2]
    assert roles == {0: 1, 1: 1, 2: 1}
    assert all(len("".join(parts).split()) == 4 for parts in by_index.values())


TOOLS: list[ChatCompletionToolParam] = [
    {"type": "function", "function": {"name": "lookup", "description": "find things",
                                      "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]


async def test_tool_calls_non_stream_and_tool_message_round_trip(client: openai.AsyncOpenAI) -> None:
    reply = await client.chat.completions.create(
        model="sandbox-chat", messages=user("weather in Oslo [sandbox tool=lookup]"), tools=TOOLS,
        tool_choice="auto", parallel_tool_calls=False,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    assert call.function.name == "lookup"
    assert orjson.loads(call.function.arguments)["q"]
    follow_up = await client.chat.completions.create(
        model="sandbox-chat", tools=TOOLS,
        messages=[
            *user("weather in Oslo"),
            {"role": "assistant", "content": None,
             "tool_calls": [cast(ChatCompletionMessageFunctionToolCallParam, call.model_dump())]},
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
            {"role": "user", "content": [{"type": "text", "text": "thanks"}]},
        ],
    )
    assert follow_up.choices[0].finish_reason == "stop"
    assert follow_up.choices[0].message.content


async def test_tool_calls_stream(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="sandbox-chat", messages=user("search [sandbox tool=lookup]"), tools=TOOLS, stream=True
    )
    arguments = ""
    name = None
    finish = None
    async for chunk in stream:
        for choice in chunk.choices:
            for fragment in choice.delta.tool_calls or []:
                assert fragment.function is not None
                name = fragment.function.name or name
                arguments += fragment.function.arguments or ""
            finish = choice.finish_reason or finish
    assert name == "lookup" and finish == "tool_calls"
    assert "q" in orjson.loads(arguments)


async def test_request_id_travels_to_the_worker(stack: Stack, wiretap: Wiretap) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(
            stack.base_url + "/chat/completions",
            json={"model": "sandbox-chat", "messages": user("trace me")},
            headers={"authorization": f"Bearer {AUTH_KEY}", "x-request-id": "trace-42.a"},
        )
        bad = await http.post(
            stack.base_url + "/chat/completions",
            json={"model": "sandbox-chat", "messages": user("trace me")},
            headers={"authorization": f"Bearer {AUTH_KEY}", "x-request-id": "not ok!"},
        )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "trace-42.a"
    assert wiretap.find("switchyard.v1.job", request_id="trace-42.a")
    assert bad.headers["x-request-id"] != "not ok!" and len(bad.headers["x-request-id"]) == 32


async def test_unknown_fields_are_tolerated(stack: Stack) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(
            stack.base_url + "/chat/completions",
            json={"model": "sandbox-chat", "messages": user("hi"), "some_future_field": {"x": 1}},
            headers={"authorization": f"Bearer {AUTH_KEY}"},
        )
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"]


async def test_large_body_goes_through_the_object_store(client: openai.AsyncOpenAI, wiretap: Wiretap) -> None:
    words = 420_000  # "word " * 420k ≈ 2.1 MB of prompt, over NATS's 1 MiB default payload limit
    big = "word " * words
    reply = await client.chat.completions.create(
        model="sandbox-chat", messages=[{"role": "system", "content": big}, *user("sum it up [sandbox mark=big]")],
    )
    assert reply.choices[0].message.content
    # the sandbox counted every word: the whole body arrived
    assert reply.usage is not None and reply.usage.prompt_tokens >= words
    jobs = [m for m in wiretap.find("switchyard.v1.job") if "body_ref" in m]
    assert jobs and jobs[-1]["body_ref"]["size"] > 1_000_000


async def test_streams_on_one_keep_alive_connection_keep_their_own_headers(stack: Stack) -> None:
    """Each response carries exactly one request id, however many came before it on the connection."""
    body = {"model": "sandbox-chat", "messages": user("again [sandbox tokens=2]"), "stream": True}
    limits = httpx.Limits(max_connections=1)
    async with httpx.AsyncClient(limits=limits, headers={"authorization": f"Bearer {AUTH_KEY}",
                                                         "origin": "https://app.example"}) as http:
        for _ in range(5):
            async with http.stream("POST", stack.base_url + "/chat/completions", json=body) as response:
                assert response.status_code == 200
                assert len(response.headers.get_list("x-request-id")) == 1
                assert len(response.headers.get_list("content-type")) == 1
                await response.aread()


async def test_browser_requests_get_cors_headers_sdk_requests_take_the_hot_path(stack: Stack) -> None:
    body = {"model": "sandbox-chat", "messages": user("cors")}
    headers = {"authorization": f"Bearer {AUTH_KEY}"}
    async with httpx.AsyncClient() as http:
        browser = await http.post(stack.base_url + "/chat/completions", json=body,
                                  headers={**headers, "origin": "https://app.example"})
        sdk = await http.post(stack.base_url + "/chat/completions", json=body, headers=headers)
        unauthorised = await http.post(stack.base_url + "/chat/completions", json=body)
    assert browser.status_code == sdk.status_code == 200
    assert browser.headers["access-control-allow-origin"] in ("*", "https://app.example")
    assert "access-control-allow-origin" not in sdk.headers
    assert browser.json()["choices"][0]["message"] == sdk.json()["choices"][0]["message"]
    assert unauthorised.status_code == 401 and "x-request-id" in unauthorised.headers


async def test_an_answer_larger_than_the_bus_max_payload_arrives_whole(
    stack: Stack, client: openai.AsyncOpenAI, wiretap: Wiretap
) -> None:
    """A whole answer of about 2 MB travels as `fragment` replies (NATS carries 1 MB per message):
    the client gets exactly what the upstream said, the worker's connection survives, and the
    wiretap checks the joined payload against proto/ too."""
    prompt = user("a long one [sandbox tokens=300000]")
    fragmented_before = wiretap.seen["fragmented"]
    reply = await client.chat.completions.create(model="sandbox-chat", messages=prompt, max_tokens=400000)
    async with httpx.AsyncClient(timeout=30) as plain:
        direct = (await plain.post(f"{stack.sandbox_url}/v1/chat/completions", json={
            "model": "sandbox-chat", "messages": prompt, "max_tokens": 400000,
        }, headers={"authorization": f"Bearer {SANDBOX_KEY}"})).json()
    content = reply.choices[0].message.content
    assert content is not None and len(content.encode()) > 1_500_000
    assert content == direct["choices"][0]["message"]["content"]
    assert reply.usage is not None and reply.usage.completion_tokens == 300000
    assert wiretap.seen["fragmented"] > fragmented_before
    after = await client.chat.completions.create(model="sandbox-chat", messages=user("still there [sandbox tokens=3]"))
    assert after.choices[0].message.content
