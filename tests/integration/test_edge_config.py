"""Edge behaviour that depends on its configuration or on time: open mode, NO_LOG, keep-alives,
usage accounting, expired jobs, upstream failover."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson

from libs.devproc import Proc
from tests.conftest import AUTH_KEY, SANDBOX_KEY, Stack, metric, start_edge, wait_for_models
from tests.wiretap import Wiretap

AUTH = {"authorization": f"Bearer {AUTH_KEY}"}


def chat(model: str, text: str, **extra: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


async def test_open_mode_warns_and_no_log_silences_request_logs(
    stack: Stack, nats_server: Proc, log_dir: Path
) -> None:
    open_edge = start_edge(nats_server.url, log_dir, name="edge-open", AUTH_TOKEN="")
    quiet_edge = start_edge(nats_server.url, log_dir, name="edge-quiet", NO_LOG="1")
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            await wait_for_models(Stack(stack.nats_url, open_edge.url, stack.sandbox_url, log_dir), {"sandbox-chat"})
            keyless = await http.post(open_edge.url + "/v1/chat/completions", json=chat("sandbox-chat", "hi"),
                                      headers={"x-request-id": "open-mode-1"})
            quiet = await http.post(quiet_edge.url + "/v1/chat/completions", json=chat("sandbox-chat", "hi"),
                                    headers={**AUTH, "x-request-id": "quiet-mode-1"})
        assert keyless.status_code == 200
        assert quiet.status_code == 200
        open_log, quiet_log = open_edge.log(), quiet_edge.log()
        assert "AUTH_TOKEN is not set" in open_log
        access = [orjson.loads(line) for line in open_log.splitlines() if '"switchyard.edge.access"' in line]
        assert any(e.get("request_id") == "open-mode-1" and e.get("status") == 200 for e in access)
        assert "quiet-mode-1" not in quiet_log
    finally:
        open_edge.stop()
        quiet_edge.stop()


async def test_keep_alive_comments_while_the_first_token_is_slow(stack: Stack) -> None:
    # keep-alive is 15 s x 0.1 = 1.5 s; the first token comes after 2.5 s (first-token limit: 6 s)
    body = chat("sandbox-chat", "x [sandbox tokens=2 first_token_ms=2500]", stream=True)
    async with httpx.AsyncClient(headers=AUTH, timeout=30) as http, http.stream(
        "POST", stack.base_url + "/chat/completions", json=body
    ) as response:
        assert response.status_code == 200
        raw = b"".join([part async for part in response.aiter_raw()])
    assert raw.startswith(b": keep-alive\n\n")
    assert raw.endswith(b"data: [DONE]\n\n") and b'"error"' not in raw



async def test_usage_is_recorded_from_the_upstream_or_estimated_and_marked(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.edge_url, headers=AUTH, timeout=30) as http:
        before = (await http.get("/metrics")).text
        reply = await http.post("/v1/chat/completions", json=chat("sandbox-chat", "count [sandbox tokens=7]"))
        assert reply.status_code == 200
        middle = (await http.get("/metrics")).text
        # a stream the client abandons: no upstream usage ever arrives, so it is estimated
        body = chat("sandbox-chat", "x [sandbox tokens=400 token_delay_ms=10]", stream=True)
        async with http.stream("POST", "/v1/chat/completions", json=body) as response:
            async for _ in response.aiter_raw():
                break
        await asyncio.sleep(0.3)
        after = (await http.get("/metrics")).text
    name = "switchyard_edge_tokens_total"
    assert metric(middle, name, kind="completion", source="upstream") - metric(
        before, name, kind="completion", source="upstream") == 7
    assert metric(after, name, kind="completion", source="estimated") > metric(
        middle, name, kind="completion", source="estimated")


async def test_a_job_past_its_start_by_is_dropped_unstarted(stack: Stack, wiretap: Wiretap) -> None:
    import nats

    nc = await nats.connect(stack.nats_url)
    try:
        now = time.time()
        job = {
            "type": "job", "job_id": "expired0job0", "request_id": "expired-job", "kind": "chat",
            "model": "sandbox-chat", "pool": "openai", "reply": "sy.v1.reply.nobody.expired0job0",
            "index_offset": 0, "created": now - 30, "start_by": now - 20, "deadline": now + 60,
            "timeouts": {"first_token": 6.0, "idle": 3.0, "heartbeat": 0.5},
            "body": chat("sandbox-chat", "too late [sandbox mark=late]"),
        }
        await nc.jetstream().publish("sy.v1.jobs.openai", orjson.dumps(job))
        await asyncio.sleep(1.0)
    finally:
        await nc.drain()
    assert wiretap.find("switchyard.v1.job", job_id="expired0job0")
    replies = wiretap.find("switchyard.v1.reply", job_id="expired0job0")
    assert [r["type"] for r in replies] == ["start", "error"]  # the edge is told, never left waiting
    assert replies[1]["error"]["code"] == "no_capacity"
    async with httpx.AsyncClient() as plain:
        events = (await plain.get(f"{stack.sandbox_url}/_sandbox/events", params={"mark": "late"})).json()["events"]
    assert events == []  # no upstream quota spent on it


def start_from_config(start_worker: Callable[..., Proc], config: Path, model: str, toml: str) -> None:
    """A worker of the `tight` pool for `model`, its upstreams from this OPENAI_WORKER_CONFIG text."""
    config.write_text(toml)
    start_worker(name=model, pool="tight", models="unused", OPENAI_BASE_URL="", OPENAI_WORKER_CONFIG=str(config))


async def test_upstream_failover_before_the_first_token(
    start_worker: Callable[..., Proc], stack: Stack, tmp_path: Path
) -> None:
    start_from_config(
        start_worker, tmp_path / "upstreams.toml", "tight-failover",
        "[[upstreams]]\nname = 'down'\nbase_url = 'http://127.0.0.1:9/v1'\napi_key = 'sk-down-000000'\n"
        "models = ['tight-failover']\n\n"
        "[[upstreams]]\nname = 'refusing'\n"
        f"base_url = '{stack.sandbox_url}/v1'\napi_key = 'sk-wrong-key-111111'\nmodels = ['tight-failover']\n\n"
        "[[upstreams]]\nname = 'up'\n"
        f"base_url = '{stack.sandbox_url}/v1'\napi_key = '{SANDBOX_KEY}'\nmodels = ['tight-failover']\n",
    )
    await wait_for_models(stack, {"tight-failover"})
    async with httpx.AsyncClient(base_url=stack.base_url, headers=AUTH, timeout=30) as http:
        # every request succeeds whichever upstream the rotation tries first
        replies = [await http.post("/chat/completions", json=chat("tight-failover", f"try {i}")) for i in range(3)]
    assert [r.status_code for r in replies] == [200, 200, 200]
    assert all(r.json()["choices"][0]["message"]["content"] for r in replies)


async def test_whole_answers_false_streams_non_stream_requests_upstream(
    start_worker: Callable[..., Proc], stack: Stack, tmp_path: Path
) -> None:
    start_from_config(
        start_worker, tmp_path / "upstreams.toml", "tight-streamed",
        "[[upstreams]]\nname = 'always-streamed'\n"
        f"base_url = '{stack.sandbox_url}/v1'\napi_key = '{SANDBOX_KEY}'\nmodels = ['tight-streamed']\n"
        "whole_answers = false\n",
    )
    await wait_for_models(stack, {"tight-streamed"})
    async with httpx.AsyncClient(base_url=stack.base_url, headers=AUTH, timeout=30) as http:
        reply = await http.post("/chat/completions", json=chat("tight-streamed", "hi [sandbox mark=always-streamed]"))
        events = (await http.get(f"{stack.sandbox_url}/_sandbox/events", params={"mark": "always-streamed"})).json()
    assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"]
    assert [e["stream"] for e in events["events"]] == [True]


async def test_max_n_bounds_choices_and_fan_out(stack: Stack, nats_server: Proc, log_dir: Path) -> None:
    edge = start_edge(nats_server.url, log_dir, name="edge-maxn", MAX_N="4")
    try:
        async with httpx.AsyncClient(base_url=edge.url + "/v1", headers=AUTH, timeout=30) as http:
            await wait_for_models(Stack(stack.nats_url, edge.url, stack.sandbox_url, log_dir), {"sandbox-chat"})
            many = await http.post("/chat/completions", json=chat("sandbox-chat", "hi", n=5))
            prompts = await http.post("/completions", json={"model": "sandbox-chat", "prompt": ["a", "b", "c"], "n": 2})
            fine = await http.post("/chat/completions", json=chat("sandbox-chat", "hi", n=4))
        assert many.status_code == 400 and many.json()["error"]["param"] == "n"
        assert prompts.status_code == 400 and prompts.json()["error"]["param"] == "prompt"
        assert fine.status_code == 200 and len(fine.json()["choices"]) == 4
    finally:
        edge.stop()


async def test_allowed_origins(stack: Stack, nats_server: Proc, log_dir: Path) -> None:
    edge = start_edge(nats_server.url, log_dir, name="edge-cors", ALLOWED_ORIGINS="https://good.example")
    try:
        preflight = {"access-control-request-method": "POST", "access-control-request-headers": "authorization"}
        async with httpx.AsyncClient(base_url=edge.url) as http:
            good = await http.options("/v1/chat/completions", headers={**preflight, "origin": "https://good.example"})
            bad = await http.options("/v1/chat/completions", headers={**preflight, "origin": "https://evil.example"})
        assert good.status_code == 200 and good.headers["access-control-allow-origin"] == "https://good.example"
        assert bad.status_code == 400 and "access-control-allow-origin" not in bad.headers
        async with httpx.AsyncClient(base_url=edge.url) as http:
            # seed 002's routes and the admin API: preflights need no key either (browsers send none)
            for path in ("/api/ask", "/admin/keys", "/admin/users/add"):
                allowed = await http.options(path, headers={**preflight, "origin": "https://good.example"})
                assert allowed.status_code == 200, path
                assert allowed.headers["access-control-allow-origin"] == "https://good.example"
            # a browser reads a key's rate-limit headers only when CORS exposes them
            answer = await http.get("/v1/models", headers={**AUTH, "origin": "https://good.example"})
        exposed = answer.headers["access-control-expose-headers"].lower()
        assert "x-ratelimit-remaining-requests" in exposed and "retry-after" in exposed
    finally:
        edge.stop()


async def test_an_inline_limit_above_the_bus_max_payload_still_sends_large_bodies_by_reference(
    stack: Stack, nats_server: Proc, log_dir: Path, wiretap: Wiretap
) -> None:
    """INLINE_BODY_BYTES set past what one NATS message carries: a 1.5 MB body still travels
    through the object store instead of failing the publish."""
    edge = start_edge(nats_server.url, log_dir, name="edge-inline", INLINE_BODY_BYTES=str(8 * 1024 * 1024))
    try:
        await wait_for_models(Stack(stack.nats_url, edge.url, stack.sandbox_url, log_dir), {"sandbox-chat"})
        words = 300_000
        body = {"model": "sandbox-chat", "messages": [{"role": "system", "content": "word " * words},
                                                       {"role": "user", "content": "sum it up"}]}
        async with httpx.AsyncClient(timeout=30) as http:
            response = await http.post(edge.url + "/v1/chat/completions", json=body, headers=AUTH)
        assert response.status_code == 200, response.text
        assert response.json()["usage"]["prompt_tokens"] >= words
        jobs = [m for m in wiretap.find("switchyard.v1.job") if "body_ref" in m]
        assert jobs and jobs[-1]["body_ref"]["size"] > 1_400_000
    finally:
        edge.stop()
