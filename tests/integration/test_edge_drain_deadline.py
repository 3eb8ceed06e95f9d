"""The edge's drain time runs out with requests still open: each ends by the contract, never cut
mid-transfer. Streams that sent tokens get a `length` chunk, a `shutting_down` error event and
`[DONE]`; a request with nothing sent yet gets a JSON 503. No traceback reaches the edge's log."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from pathlib import Path

import httpx
import orjson

from libs.devproc import Proc, start_nats_server
from tests.conftest import AUTH_KEY, TIME_SCALE, Stack, start_edge, start_worker_proc, wait_for_models
from tests.integration.test_faults import sse_events

GRACE = 5 * TIME_SCALE  # SY_TIMEOUT_READINESS_GRACE=5
DRAIN = 10 * TIME_SCALE  # SY_TIMEOUT_DRAIN=10 (uvicorn takes whole seconds: keep it one)
SLOW = "x [sandbox tokens=100 token_delay_ms=300]"  # 30 s: far longer than grace and drain


async def test_streams_open_at_the_drain_deadline_end_by_the_contract(
    stack: Stack, nats_server: Proc, log_dir: Path
) -> None:
    edge = start_edge(nats_server.url, log_dir, name="edge-drain-deadline",
                      SY_TIMEOUT_READINESS_GRACE="5", SY_TIMEOUT_DRAIN="10")
    try:
        await wait_for_models(Stack(stack.nats_url, edge.url, stack.sandbox_url, log_dir), {"sandbox-chat"})
        headers = {"authorization": f"Bearer {AUTH_KEY}"}
        async with httpx.AsyncClient(base_url=edge.url + "/v1", headers=headers, timeout=60) as http:
            first_tokens = [asyncio.Event() for _ in range(3)]

            async def stream(seen: asyncio.Event) -> tuple[int, bytes, float]:
                body = {"model": "sandbox-chat", "stream": True, "messages": [{"role": "user", "content": SLOW}]}
                raw = b""
                async with http.stream("POST", "/chat/completions", json=body) as response:
                    async for part in response.aiter_raw():
                        raw += part
                        if b'"content"' in raw:
                            seen.set()
                return response.status_code, raw, time.monotonic()

            async def whole() -> tuple[httpx.Response, float]:
                response = await http.post("/chat/completions", json={
                    "model": "sandbox-chat", "messages": [{"role": "user", "content": SLOW}]})
                return response, time.monotonic()

            streams = [asyncio.create_task(stream(seen)) for seen in first_tokens]
            waiting = asyncio.create_task(whole())
            await asyncio.wait_for(asyncio.gather(*(seen.wait() for seen in first_tokens)), timeout=10)
            edge.signal(signal.SIGTERM)
            signalled = time.monotonic()
            ends = await asyncio.wait_for(asyncio.gather(*streams), timeout=15)
            response, answered = await asyncio.wait_for(waiting, timeout=15)
        limit = signalled + GRACE + DRAIN + 0.5  # uvicorn's own polling and settling
        for status, raw, ended in ends:
            assert status == 200
            events = sse_events(raw)
            assert events[-1] == b"[DONE]", raw[-300:]
            assert orjson.loads(events[-2])["error"]["code"] == "shutting_down"
            assert orjson.loads(events[-3])["choices"][0]["finish_reason"] == "length"
            assert ended < limit, ended - signalled
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "shutting_down"
        assert response.headers["retry-after"] == "1"
        assert answered < limit
        print("streams ended after the SIGTERM (s):", [round(e - signalled, 2) for _, _, e in ends],
              "non-stream:", round(answered - signalled, 2))
        edge.popen.wait(timeout=10)
        assert edge.popen.returncode in (0, -signal.SIGTERM)
        assert "Traceback" not in edge.log(), edge.log()[-3000:]
    finally:
        edge.stop()


async def test_a_client_that_stopped_reading_is_cut_at_the_deadline_without_a_traceback(
    sandbox: Proc, log_dir: Path
) -> None:
    # A reply buffer that cannot overflow first, and a grace long enough (5 s) for the stream (n=8:
    # about 1.5 MB/s here) to fill the socket buffers (about 1.5 MB on loopback with this client's
    # small window) and uvicorn's: the edge's task must be blocked in `send` at the deadline.
    # A bus of its own: the session's wiretap would check every one of those messages.
    grace = 50 * TIME_SCALE
    run_dir = log_dir / "drain-stalled"
    nats = start_nats_server(log_dir=run_dir, store_dir=run_dir / "js")
    procs = [nats]
    writer = None
    try:
        edge = start_edge(nats.url, run_dir, name="edge-drain-stalled",
                          SY_TIMEOUT_READINESS_GRACE="50", SY_TIMEOUT_DRAIN="10", REPLY_BUFFER="1000000")
        procs.append(edge)
        procs.append(start_worker_proc(nats.url, sandbox.url, run_dir, name="stalled-worker", pool="openai",
                                       models="sandbox-chat"))
        await wait_for_models(Stack(nats.url, edge.url, sandbox.url, run_dir), {"sandbox-chat"})
        port = int(edge.url.rsplit(":", 1)[1])
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock)
        body = orjson.dumps({"model": "sandbox-chat", "stream": True, "n": 8, "messages": [
            {"role": "user", "content": "x [sandbox tokens=30000]"}]})
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: edge\r\ncontent-type: application/json\r\n"
                     b"authorization: Bearer " + AUTH_KEY.encode() + b"\r\n"
                     b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        assert head.startswith(b"HTTP/1.1 200"), head
        # read nothing more: the edge fills the socket buffers, then blocks in `send`
        edge.signal(signal.SIGTERM)
        signalled = time.monotonic()
        edge.popen.wait(timeout=grace + DRAIN + 5)
        exited = time.monotonic() - signalled
        log = edge.log()
        assert "Traceback" not in log, log[-3000:]
        # the request was still blocked when aborted requests should have ended: it was cut
        assert "cut 1 request(s) whose clients stopped reading" in log
        assert exited < grace + DRAIN + 0.5, exited
        print(f"edge exited {exited:.2f} s after the SIGTERM")
    finally:
        if writer is not None:
            writer.close()
        for proc in reversed(procs):
            proc.stop()
