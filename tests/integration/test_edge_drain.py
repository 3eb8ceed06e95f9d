"""SIGTERM on the edge: not ready at once, keeps serving through the grace, finishes open streams."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx

from libs.devproc import Proc
from tests.conftest import AUTH_KEY, Stack, start_edge, wait_for_models


async def test_edge_drains_on_sigterm(stack: Stack, nats_server: Proc, log_dir: Path) -> None:
    # grace 20 s x SY_TIME_SCALE (0.1 in tests) = 2 s; drain 30 s x 0.1 = 3 s
    edge = start_edge(nats_server.url, log_dir, name="edge-drain", SY_TIMEOUT_READINESS_GRACE="20")
    try:
        own = Stack(stack.nats_url, edge.url, stack.sandbox_url, log_dir)
        await wait_for_models(own, {"sandbox-chat"})
        body = {"model": "sandbox-chat", "stream": True,
                "messages": [{"role": "user", "content": "x [sandbox tokens=25 token_delay_ms=100]"}]}
        headers = {"authorization": f"Bearer {AUTH_KEY}"}
        async with httpx.AsyncClient(timeout=30) as http:
            async with http.stream("POST", own.base_url + "/chat/completions", json=body, headers=headers) as response:
                raw = b""
                signalled = False
                async for part in response.aiter_raw():
                    raw += part
                    if not signalled:
                        edge.signal(signal.SIGTERM)
                        signalled = True
                        await asyncio.sleep(0.2)
                        async with httpx.AsyncClient() as probe:  # a new connection, still accepted
                            ready = await probe.get(edge.url + "/readyz")
                        assert ready.status_code == 503
            assert raw.endswith(b"data: [DONE]\n\n") and b'"error"' not in raw
            # after the grace the edge stops accepting, then exits
            for _ in range(100):
                if not edge.alive():
                    break
                await asyncio.sleep(0.1)
            assert not edge.alive()
            assert edge.popen.returncode in (0, -signal.SIGTERM)
    finally:
        edge.stop()
