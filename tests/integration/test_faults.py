"""Failures, limits and cancellation through the real stack."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import openai
import orjson
import pytest
import pytest_asyncio
from openai.types.chat import ChatCompletionMessageParam

from libs.devproc import Proc
from tests.conftest import AUTH_KEY, SANDBOX_KEY, SLASHED_MODEL, TIME_SCALE, Stack, start_edge, wait_for_models
from tests.wiretap import Wiretap

AUTH = {"authorization": f"Bearer {AUTH_KEY}"}


@pytest_asyncio.fixture
async def client(stack: Stack) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=stack.base_url, api_key=AUTH_KEY, max_retries=0, timeout=30) as sdk:
        yield sdk


@pytest_asyncio.fixture
async def http(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.base_url, headers=AUTH, timeout=30) as session:
        yield session


def chat(model: str, text: str, **extra: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def sdk_user(text: str) -> list[ChatCompletionMessageParam]:
    """The `messages` of `chat(...)`, typed for the SDK's keyword arguments."""
    return [{"role": "user", "content": text}]


async def sandbox_events(stack: Stack, mark: str) -> list[dict[str, object]]:
    async with httpx.AsyncClient() as plain:
        return (await plain.get(f"{stack.sandbox_url}/_sandbox/events", params={"mark": mark})).json()["events"]


async def wait_until(predicate: Callable[[], object], within: float, step: float = 0.01) -> None:
    deadline = time.monotonic() + within
    while not await predicate() if asyncio.iscoroutinefunction(predicate) else not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(step)


def sse_events(raw: bytes) -> list[bytes]:
    return [e.removeprefix(b"data: ") for e in raw.split(b"\n\n") if e.startswith(b"data: ")]


# ---- errors ----------------------------------------------------------------------------------


async def test_unknown_model_is_404(http: httpx.AsyncClient) -> None:
    response = await http.post("/chat/completions", json=chat("no-such-model", "hi"))
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert set(error) == {"message", "type", "param", "code"}


async def test_alias_to_dead_model_is_404(http: httpx.AsyncClient) -> None:
    response = await http.post("/chat/completions", json=chat("ghostly", "hi"))
    assert response.status_code == 404


async def test_static_route_without_replica_is_queued_then_503(http: httpx.AsyncClient) -> None:
    started = time.monotonic()
    response = await http.post("/chat/completions", json=chat("unserved-model", "hi"))
    waited = time.monotonic() - started
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "no_capacity"
    assert int(response.headers["retry-after"]) >= 1
    assert waited >= 10 * TIME_SCALE * 0.9  # it waited the queue wait for a worker to scale up


async def test_invalid_json_and_non_object(http: httpx.AsyncClient) -> None:
    bad = await http.post("/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
    nan = await http.post("/chat/completions", content=b'{"model":"sandbox-chat","messages":[],"temperature":NaN}')
    assert nan.status_code == 400
    array = await http.post("/chat/completions", content=b"[1,2]")
    assert array.status_code == 400


@pytest.mark.parametrize(
    ("patch", "param"),
    [
        ({"temperature": "hot"}, "temperature"),
        ({"top_p": [1]}, "top_p"),
        ({"n": 0}, "n"),
        ({"n": True}, "n"),
        ({"max_tokens": True}, "max_tokens"),
        ({"stop": ["a", 5]}, "stop[1]"),
        ({"reasoning_effort": 1}, "reasoning_effort"),
        ({"tools": [{"type": "custom"}, "f"]}, "tools[1]"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": 5, "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": 5}]}, "messages[1].content"),
    ],
)
async def test_validation_names_the_param(http: httpx.AsyncClient, patch: dict[str, object], param: str) -> None:
    response = await http.post("/chat/completions", json={**chat("sandbox-chat", "hi"), **patch})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


async def test_body_too_large_is_413(http: httpx.AsyncClient) -> None:
    response = await http.post("/chat/completions", content=b"x" * (26 * 1024 * 1024))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


async def test_auth(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.edge_url) as plain:
        missing = await plain.post("/v1/chat/completions", json=chat("sandbox-chat", "hi"))
        wrong = await plain.get("/v1/models", headers={"authorization": "Bearer nope"})
        health = await plain.get("/")
        ready = await plain.get("/readyz")
        metrics = await plain.get("/metrics")
        preflight = await plain.options(
            "/v1/chat/completions",
            headers={"origin": "https://app.example", "access-control-request-method": "POST",
                     "access-control-request-headers": "authorization,content-type"},
        )
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "invalid_api_key"
    assert wrong.status_code == 401
    assert health.status_code == 200 and health.text == "OK" and health.headers["content-type"].startswith("text/plain")
    assert ready.status_code == 200
    assert metrics.status_code == 200 and "switchyard_edge_requests_total" in metrics.text
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] in ("*", "https://app.example")


async def test_unknown_route_is_json_404(http: httpx.AsyncClient) -> None:
    response = await http.get("/nope")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


async def test_upstream_401_is_502_and_key_never_leaks(http: httpx.AsyncClient, stack: Stack) -> None:
    response = await http.post("/chat/completions", json=chat("sandbox-chat", "x [sandbox status=401 echo_key=1]"))
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_auth_error"
    assert SANDBOX_KEY not in response.text and SANDBOX_KEY[:12] not in response.text
    for proc in stack.procs:
        assert SANDBOX_KEY not in proc.log() and AUTH_KEY not in proc.log()


async def test_upstream_429_keeps_retry_after(http: httpx.AsyncClient) -> None:
    response = await http.post("/chat/completions", json=chat("sandbox-chat", "x [sandbox status=429 retry_after=7]"))
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"


async def test_upstream_500_is_retried_then_502(http: httpx.AsyncClient, stack: Stack, wiretap: Wiretap) -> None:
    response = await http.post("/chat/completions", json=chat("sandbox-chat", "x [sandbox status=500 mark=always-500]"),
                               headers={"x-request-id": "always-500"})
    assert response.status_code == 502
    assert len(await sandbox_events(stack, "always-500")) == 3  # max_deliver deliveries reached the upstream
    job_ids = {j["job_id"] for j in wiretap.find("switchyard.v1.job", request_id="always-500")}
    # quick failures hand the job back before their deferred `start`: only the last attempt speaks
    attempts = [m["attempt"] for m in wiretap.find("switchyard.v1.reply") if m["job_id"] in job_ids]
    assert set(attempts) == {3}


async def test_transient_500_recovers_on_redelivery(client: openai.AsyncOpenAI) -> None:
    reply = await client.chat.completions.create(
        model="sandbox-chat", messages=sdk_user("x [sandbox status=500 fail_times=1 mark=flaky-once]")
    )
    assert reply.choices[0].finish_reason == "stop"


# ---- failure after the first token ------------------------------------------------------------


async def test_failure_after_first_token_raw_sse(http: httpx.AsyncClient) -> None:
    async with http.stream("POST", "/chat/completions",
                           json=chat("sandbox-chat", "x [sandbox tokens=10 fail_after=3]", stream=True)) as response:
        assert response.status_code == 200
        raw = b"".join([part async for part in response.aiter_raw()])
    events = sse_events(raw)
    assert events[-1] == b"[DONE]"
    error = orjson.loads(events[-2])
    assert error["error"]["code"] == "upstream_protocol_error"
    closing = orjson.loads(events[-3])
    assert closing["choices"][0]["finish_reason"] == "length"
    content = [orjson.loads(e)["choices"][0]["delta"].get("content") for e in events[:-3]]
    assert "".join(c or "" for c in content).strip()  # the tokens before the failure arrived


async def test_failure_after_first_token_sdk(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="sandbox-chat", messages=sdk_user("x [sandbox tokens=10 fail_after=3]"), stream=True
    )
    seen = []
    with pytest.raises(openai.APIError):
        async for chunk in stream:
            seen.append(chunk)
    assert seen and seen[-1].choices[0].finish_reason == "length"


async def test_failure_after_first_token_non_stream_is_error(http: httpx.AsyncClient) -> None:
    response = await http.post("/chat/completions", json=chat("sandbox-chat", "x [sandbox tokens=10 fail_after=3]"))
    assert response.status_code == 502


async def test_idle_timeout_mid_stream(http: httpx.AsyncClient) -> None:
    async with http.stream("POST", "/chat/completions",
                           json=chat("sandbox-chat", "x [sandbox tokens=10 hang_after=2]", stream=True)) as response:
        raw = b"".join([part async for part in response.aiter_raw()])
    events = sse_events(raw)
    assert events[-1] == b"[DONE]"
    assert orjson.loads(events[-2])["error"]["code"] == "upstream_timeout"


async def test_first_token_timeout_before_any_token_is_504(stack: Stack, nats_server: Proc, log_dir: Path) -> None:
    # A streamed upstream call is held to the first-token limit: 0.3 s on this edge.
    edge = start_edge(nats_server.url, log_dir, name="edge-first-token",
                      SY_TIMEOUT_FIRST_TOKEN=str(0.3 / TIME_SCALE), SY_TIMEOUT_KEEPALIVE=str(30 / TIME_SCALE))
    try:
        async with httpx.AsyncClient(base_url=edge.url + "/v1", headers=AUTH, timeout=30) as session:
            await wait_for_models(Stack(stack.nats_url, edge.url, stack.sandbox_url, log_dir), {"sandbox-chat"})
            slow = "slow [sandbox tokens=3 first_token_ms=1500]"
            started = time.monotonic()
            streamed = await session.post("/chat/completions", json=chat("sandbox-chat", slow, stream=True))
            took = time.monotonic() - started
            # ... but a whole (non-streamed) answer takes as long as the generation: not held to it,
            # neither by the worker nor by the edge's own backstop (first token + worker silence
            # + ack_wait = 2.3 s after the start here)
            marked = "slow [sandbox tokens=3 first_token_ms=4000 mark=whole-slow]"
            whole = await session.post("/chat/completions", json=chat("sandbox-chat", marked))
    finally:
        edge.stop()
    assert streamed.status_code == 504 and streamed.json()["error"]["code"] == "upstream_timeout"
    assert took < 1.5  # it did not wait for the slow first token
    assert whole.status_code == 200 and whole.json()["choices"][0]["message"]["content"]
    # longer than ack_wait, yet asked once: in-progress acks kept the job from being redelivered
    assert [e["outcome"] for e in await sandbox_events(stack, "whole-slow")] == ["completed"]


async def test_non_stream_requests_go_upstream_whole(stack: Stack, http: httpx.AsyncClient) -> None:
    whole = await http.post("/chat/completions", json=chat("sandbox-chat", "same [sandbox tokens=5 mark=go-whole]"))
    body = chat("sandbox-chat", "same [sandbox tokens=5 mark=go-streamed]", stream=True)
    async with http.stream("POST", "/chat/completions", json=body) as response:
        raw = b"".join([part async for part in response.aiter_raw()])
    assert [e["stream"] for e in await sandbox_events(stack, "go-whole")] == [False]
    assert [e["stream"] for e in await sandbox_events(stack, "go-streamed")] == [True]
    streamed = "".join(orjson.loads(e)["choices"][0]["delta"].get("content") or "" for e in sse_events(raw)[:-1])
    assert whole.json()["choices"][0]["message"]["content"] == streamed  # the same answer either way
    assert whole.json()["usage"]["completion_tokens"] == 5  # the upstream's own count
    legacy = await http.post("/completions", json={"model": "sandbox-chat",
                                                   "prompt": "same [sandbox tokens=5 mark=go-whole-legacy]"})
    assert legacy.status_code == 200 and legacy.json()["choices"][0]["text"] == streamed
    assert [e["stream"] for e in await sandbox_events(stack, "go-whole-legacy")] == [False]


async def test_a_failure_mid_generation_of_a_whole_answer_is_retried(stack: Stack, http: httpx.AsyncClient) -> None:
    # Nothing reached the client yet, so every delivery tries again (a stream's would not).
    text = "x [sandbox tokens=6 fail_after=3 mark=whole-retry]"
    response = await http.post("/chat/completions", json=chat("sandbox-chat", text))
    assert response.status_code == 502
    assert [e["outcome"] for e in await sandbox_events(stack, "whole-retry")] == ["aborted"] * 3  # max_deliver


# ---- cancellation -----------------------------------------------------------------------------


async def _assert_upstream_cancelled(stack: Stack, mark: str, closed_at: float) -> None:
    async def disconnected() -> bool:
        events = await sandbox_events(stack, mark)
        return bool(events) and events[-1].get("disconnected_at") is not None

    await wait_until(disconnected, within=2.0)
    event = (await sandbox_events(stack, mark))[-1]
    assert event["disconnected_at"] - closed_at < 0.2  # type: ignore[operator]


async def test_cancel_on_disconnect_streaming(stack: Stack, http: httpx.AsyncClient) -> None:
    body = chat("sandbox-chat", "x [sandbox tokens=500 token_delay_ms=20 mark=cancel-stream]", stream=True)
    async with http.stream("POST", "/chat/completions", json=body) as response:
        chunks = 0
        async for _ in response.aiter_raw():
            chunks += 1
            if chunks >= 3:
                break
        closed_at = time.time()
    await _assert_upstream_cancelled(stack, "cancel-stream", closed_at)


async def test_cancel_on_disconnect_non_streaming(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, headers=AUTH) as session:
        with pytest.raises(httpx.ReadTimeout):
            await session.post("/chat/completions", timeout=1.0,
                               json=chat("sandbox-chat", "x [sandbox tokens=50 token_delay_ms=200 mark=cancel-plain]"))
        closed_at = time.time()
    await _assert_upstream_cancelled(stack, "cancel-plain", closed_at)


# ---- capacity, redelivery, fan-out ------------------------------------------------------------


async def test_capacity_exhaustion_is_503(start_worker: Callable[..., Proc], stack: Stack) -> None:
    start_worker(name="tight-1", pool="tight", models="tight-model", capacity=1)
    await wait_for_models(stack, {"tight-model"})
    async with httpx.AsyncClient(base_url=stack.base_url, headers=AUTH, timeout=30) as session:
        busy = asyncio.create_task(session.post(
            "/chat/completions", json=chat("tight-model", "x [sandbox tokens=3 first_token_ms=3000]")))
        await asyncio.sleep(0.3)
        refused = await session.post("/chat/completions", json=chat("tight-model", "second"))
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "no_capacity"
        assert "retry-after" in refused.headers
        assert (await busy).status_code == 200


async def test_no_job_waits_behind_a_busy_worker(start_worker: Callable[..., Proc], stack: Stack) -> None:
    for i in range(2):
        start_worker(name=f"tight-pair-{i}", pool="tight", models="tight-pair", capacity=1)
    await wait_for_models(stack, {"tight-pair"})
    async with httpx.AsyncClient(base_url=stack.base_url, headers=AUTH, timeout=30) as session:
        started = time.monotonic()
        replies = await asyncio.gather(*(
            session.post("/chat/completions", json=chat("tight-pair", f"job {i} [sandbox tokens=2 latency_ms=800]"))
            for i in range(2)
        ))
        elapsed = time.monotonic() - started
    assert [r.status_code for r in replies] == [200, 200]
    assert elapsed < 1.5  # side by side on two replicas, not one after the other (≥ 1.6 s)


async def test_sigkill_before_first_token_is_retried_elsewhere(
    start_worker: Callable[..., Proc], stack: Stack, wiretap: Wiretap
) -> None:
    workers = {name: start_worker(name=name, pool="fragile", models="fragile-model", capacity=2)
               for name in ("fragile-a", "fragile-b")}
    await wait_for_models(stack, {"fragile-model"})
    async with httpx.AsyncClient(base_url=stack.base_url, headers=AUTH, timeout=30) as session:
        answer = asyncio.create_task(session.post(
            "/chat/completions", headers={"x-request-id": "kill-me"},
            json=chat("fragile-model", "x [sandbox tokens=4 latency_ms=1500]")))

        def first_start() -> list[dict[str, object]]:
            jobs = {j["job_id"] for j in wiretap.find("switchyard.v1.job", request_id="kill-me")}
            return [m for m in wiretap.find("switchyard.v1.reply", type="start") if m["job_id"] in jobs]

        await wait_until(first_start, within=5)
        victim = str(first_start()[0]["worker_id"])
        workers[victim].signal(signal.SIGKILL)
        response = await answer
    assert response.status_code == 200
    assert response.json()["choices"][0]["finish_reason"] == "stop"
    starts = first_start()
    assert [s["attempt"] for s in starts] == [1, 2]
    assert starts[1]["worker_id"] != victim


async def test_fan_out_n_and_completions_mapped_onto_chat(
    start_worker: Callable[..., Proc], stack: Stack, tmp_path: object
) -> None:
    from pathlib import Path

    config = Path(str(tmp_path)) / "upstreams.toml"
    config.write_text(
        "[[upstreams]]\nname = 'chat-only'\n"
        f"base_url = '{stack.sandbox_url}/v1'\napi_key = '{SANDBOX_KEY}'\n"
        "models = ['fanout-model']\nnative_n = false\ncompletions = false\n"
    )
    start_worker(name="fanout-1", pool="fanout", models="unused", capacity=8,
                 OPENAI_BASE_URL="", OPENAI_WORKER_CONFIG=str(config))
    await wait_for_models(stack, {"fanout-model"})
    async with openai.AsyncOpenAI(base_url=stack.base_url, api_key=AUTH_KEY, max_retries=0) as sdk:
        reply = await sdk.chat.completions.create(model="fanout-model", n=3, messages=[
            {"role": "user", "content": "fan [sandbox tokens=3]"}])
        assert [c.index for c in reply.choices] == [0, 1, 2]
        assert reply.usage is not None and reply.usage.completion_tokens == 9
        completion = await sdk.completions.create(model="fanout-model", prompt=["one", "two"], n=2)
        assert completion.object == "text_completion"
        assert sorted(c.index for c in completion.choices) == [0, 1, 2, 3]
        assert all(c.text for c in completion.choices)
        chat_stream = await sdk.chat.completions.create(
            model="fanout-model", n=2, stream=True, messages=[{"role": "user", "content": "fan [sandbox tokens=3]"}])
        parts: dict[int, str] = {}
        roles: dict[int, int] = {}
        async for chunk in chat_stream:
            for choice in chunk.choices:
                parts[choice.index] = parts.get(choice.index, "") + (choice.delta.content or "")
                roles[choice.index] = roles.get(choice.index, 0) + (choice.delta.role is not None)
        assert sorted(parts) == [0, 1] and roles == {0: 1, 1: 1}  # fanned out, indexed, role once each
        assert all(len(text.split()) == 3 for text in parts.values())
        stream = await sdk.completions.create(model="fanout-model", prompt="streamed [sandbox tokens=4]", stream=True)
        texts = [c.choices[0].text async for c in stream if c.choices]
        assert len("".join(texts).split()) == 4


async def test_native_completions(client: openai.AsyncOpenAI) -> None:
    reply = await client.completions.create(model="sandbox-chat", prompt=["a b", "c d"], max_tokens=3)
    assert reply.id.startswith("cmpl-") and reply.object == "text_completion"
    assert sorted(c.index for c in reply.choices) == [0, 1]
    assert all(c.finish_reason == "length" for c in reply.choices)
    stream = await client.completions.create(model="sandbox-chat", prompt="go [sandbox tokens=5]", stream=True,
                                             stream_options={"include_usage": True})
    chunks = [c async for c in stream]
    assert len("".join(c.choices[0].text for c in chunks if c.choices).split()) == 5
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5


async def test_models_list_and_get(http: httpx.AsyncClient) -> None:
    listing = (await http.get("/models")).json()
    assert listing["object"] == "list"
    ids = {m["id"] for m in listing["data"]}
    assert {"sandbox-chat", "sandbox-fast", "fast"} <= ids
    assert "ghostly" not in ids  # alias of a model nobody serves
    model = (await http.get("/models/sandbox-chat")).json()
    assert model["object"] == "model" and model["id"] == "sandbox-chat"
    slashed = await http.get(f"/models/{SLASHED_MODEL}")
    assert slashed.status_code == 200 and slashed.json()["id"] == SLASHED_MODEL
    answer = await http.post("/chat/completions", json=chat(SLASHED_MODEL, "hi"))
    assert answer.status_code == 200 and answer.json()["model"] == SLASHED_MODEL
    missing = await http.get("/models/mistralai/Not-A-Served-Model")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


async def test_worker_drains_in_flight_stream_on_sigterm(start_worker: Callable[..., Proc], stack: Stack) -> None:
    worker = start_worker(name="tight-drain", pool="tight", models="tight-drain", capacity=2)
    await wait_for_models(stack, {"tight-drain"})
    async with httpx.AsyncClient(base_url=stack.base_url, headers=AUTH, timeout=30) as session, session.stream(
        "POST", "/chat/completions",
        json=chat("tight-drain", "x [sandbox tokens=20 token_delay_ms=50]", stream=True),
    ) as response:
        first = True
        raw = b""
        async for part in response.aiter_raw():
            raw += part
            if first:
                worker.signal(signal.SIGTERM)
                first = False
                await asyncio.sleep(0.1)
                ready = await session.get(worker.url + "/readyz")
                assert ready.status_code == 503  # draining: not ready, still serving its stream
    assert raw.endswith(b"data: [DONE]\n\n") and b'"error"' not in raw
    assert worker.popen.wait(timeout=10) == 0


async def test_worker_metrics(start_worker: Callable[..., Proc], stack: Stack) -> None:
    worker = start_worker(name="tight-metrics", pool="tight", models="tight-metrics", capacity=3)
    await wait_for_models(stack, {"tight-metrics"})
    async with httpx.AsyncClient(base_url=stack.base_url, headers=AUTH) as session:
        assert (await session.post("/chat/completions", json=chat("tight-metrics", "count me"))).status_code == 200
        text = (await session.get(worker.url + "/metrics")).text
    assert "switchyard_worker_capacity 3.0" in text
    assert 'switchyard_worker_jobs_total{outcome="ok"} 1.0' in text
    assert SANDBOX_KEY not in text
