"""The stack survives a NATS restart: the edge recreates its memory stream and object store, the
worker its consumer and pull requests, and requests are answered again without restarting either."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx

from libs.devproc import Proc, free_port, start_nats_server
from tests.conftest import AUTH_KEY, Stack, start_edge, start_worker_proc, wait_for_models


async def test_requests_are_answered_again_after_nats_restarts(sandbox: Proc, log_dir: Path) -> None:
    port = free_port()
    run_dir = log_dir / "restart"
    nats = start_nats_server(log_dir=run_dir, store_dir=run_dir / "js", port=port)
    edge = start_edge(nats.url, run_dir, name="edge-restart")
    worker = start_worker_proc(nats.url, sandbox.url, run_dir, name="restart-worker", pool="restart",
                               models="restart-model")
    try:
        stack = Stack(nats.url, edge.url, sandbox.url, run_dir)
        await wait_for_models(stack, {"restart-model"})
        body = {"model": "restart-model", "messages": [{"role": "user", "content": "hello again"}]}
        async with httpx.AsyncClient(base_url=stack.base_url, headers={"authorization": f"Bearer {AUTH_KEY}"},
                                     timeout=30) as http:
            assert (await http.post("/chat/completions", json=body)).status_code == 200
            nats.signal(signal.SIGKILL)  # memory streams and consumers are gone with it
            nats.popen.wait(timeout=5)
            down = await http.post("/chat/completions", json=body)
            assert down.status_code in (502, 503)  # a clear error while the bus is away, never a hang
            nats = start_nats_server(log_dir=run_dir, store_dir=run_dir / "js2", port=port)
            statuses = []
            for _ in range(100):  # bounded: about 10 s
                response = await http.post("/chat/completions", json=body)
                statuses.append(response.status_code)
                if response.status_code == 200:
                    break
                await asyncio.sleep(0.1)
            assert statuses[-1] == 200, statuses
            assert response.json()["choices"][0]["message"]["content"]
            ready = await http.get(edge.url + "/readyz")
            assert ready.status_code == 200
    finally:
        worker.stop()
        edge.stop()
        nats.stop()
