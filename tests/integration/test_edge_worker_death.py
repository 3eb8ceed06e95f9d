"""A worker killed mid-stream: the edge notices from the announcements it stops sending, within
5 s, and ends the stream by the contract (`length` chunk, `worker_lost` event, `[DONE]`).

Edge and worker run at SY_TIME_SCALE=1 on a bus of their own: scaled, the edge's silence limit
(2 × 3 heartbeats) would end the stream within 3 s anyway and prove nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import nats as nats_py
import orjson
from nats.aio.msg import Msg

import proto
from libs.devproc import Proc, start_nats_server
from tests.conftest import AUTH_KEY, Stack, start_edge, start_worker_proc, wait_for_models
from tests.integration.test_faults import sse_events

DETECTION_LIMIT = 5.0  # seconds from the kill to the stream's end


@contextlib.asynccontextmanager
async def own_bus(sandbox: Proc, run_dir: Path, model: str) -> AsyncIterator[tuple[Proc, Proc, Proc]]:
    """(nats-server, edge, worker of pool `fragile` serving `model`), all at SY_TIME_SCALE=1."""
    nats = start_nats_server(log_dir=run_dir, store_dir=run_dir / "js")
    procs = [nats]
    try:
        edge = start_edge(nats.url, run_dir, name=f"edge-{model}", SY_TIME_SCALE="1")
        procs.append(edge)
        worker = start_worker_proc(nats.url, sandbox.url, run_dir, name=f"worker-{model}", pool="fragile",
                                   models=model, SY_TIME_SCALE="1")
        procs.append(worker)
        await wait_for_models(Stack(nats.url, edge.url, sandbox.url, run_dir), {model})
        yield nats, edge, worker
    finally:
        for proc in reversed(procs):
            proc.stop()


async def test_worker_killed_mid_stream_ends_the_stream_within_5s(sandbox: Proc, log_dir: Path) -> None:
    async with own_bus(sandbox, log_dir / "worker-death", "fragile-model") as (_, edge, worker):
        body = {"model": "fragile-model", "stream": True,
                "messages": [{"role": "user", "content": "x [sandbox tokens=200 token_delay_ms=100]"}]}
        killed_at = 0.0
        raw = b""
        async with (httpx.AsyncClient(headers={"authorization": f"Bearer {AUTH_KEY}"}, timeout=60) as http,
                    http.stream("POST", edge.url + "/v1/chat/completions", json=body) as response):
            assert response.status_code == 200
            async for part in response.aiter_raw():
                raw += part
                if not killed_at and raw.count(b'"content"') >= 5:
                    worker.signal(signal.SIGKILL)
                    killed_at = time.monotonic()
        ended_after = time.monotonic() - killed_at
        print(f"stream ended {ended_after:.2f} s after the worker was killed")
        assert killed_at, "the stream ended before the worker could be killed"
        events = sse_events(raw)
        assert events[-1] == b"[DONE]"
        assert orjson.loads(events[-2])["error"]["code"] == "worker_lost"
        assert orjson.loads(events[-3])["choices"][0]["finish_reason"] == "length"
        assert ended_after < DETECTION_LIMIT


async def test_worker_killed_on_the_last_delivery_ends_the_request_within_5s(sandbox: Proc, log_dir: Path) -> None:
    """Before the first token JetStream redelivers a dead worker's job, but not after its last
    delivery: then the holder's silence ends the request, as it does mid-stream."""
    async with own_bus(sandbox, log_dir / "last-delivery", "fragile-last") as (nats, edge, worker):
        tap = await nats_py.connect(nats.url)
        last_started = asyncio.get_running_loop().create_future()

        async def on_reply(msg: Msg) -> None:
            replies = orjson.loads(msg.data)
            for reply in replies if isinstance(replies, list) else [replies]:
                last = reply.get("type") == "start" and reply.get("attempt") == proto.MAX_DELIVER
                if last and not last_started.done():
                    last_started.set_result(None)

        await tap.subscribe("sy.v1.reply.>", cb=on_reply)
        # two retryable failures use up the first deliveries; the last one waits long for its first token
        prompt = "x [sandbox mark=last-delivery fail_times=2 status=500 first_token_ms=30000]"
        body = {"model": "fragile-last", "stream": True, "messages": [{"role": "user", "content": prompt}]}
        async with httpx.AsyncClient(headers={"authorization": f"Bearer {AUTH_KEY}"}, timeout=60) as http:
            request = asyncio.ensure_future(http.post(edge.url + "/v1/chat/completions", json=body))
            await asyncio.wait_for(last_started, 20)
            worker.signal(signal.SIGKILL)
            killed_at = time.monotonic()
            response = await request
        ended_after = time.monotonic() - killed_at
        await tap.close()
        print(f"request ended {ended_after:.2f} s after the worker holding its last delivery was killed")
        assert response.status_code == 502, response.text
        assert response.json()["error"]["code"] == "worker_lost"
        assert ended_after < DETECTION_LIMIT
