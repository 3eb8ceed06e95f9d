"""Both upstream clients (libs/http1.py and aiohttp, through UpstreamCall) against the same real
servers must give the same results: uvicorn with h11, uvicorn with httptools, and aiohttp's web
server, serving one app (an SSE stream, a whole JSON answer, error statuses); a raw asyncio server
for what ASGI cannot send (1xx interim responses) and for an IPv6 loopback listener.

The app answers with the request headers it got, so the requests are compared too (one
Accept-Encoding, one Host form).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest
import uvicorn
from aiohttp import web

from libs.errors import SwitchyardError
from libs.http1 import HTTP1Pool
from libs.openai_upstream.call import UpstreamCall
from libs.openai_upstream.config import Upstream

Scope = dict[str, Any]
EVENTS = [{"choices": [{"index": 0, "delta": {"content": f"w{i} "}, "finish_reason": None}]} for i in range(3)]
SEEN = ("host", "accept-encoding", "accept", "content-type", "content-length", "authorization")


def _answer(headers: dict[str, str], body: dict[str, Any]) -> tuple[int, dict[str, str], list[bytes]]:
    """What the app sends: (status, headers, body parts). The same for every server."""
    seen = {k: headers.get(k) for k in SEEN}
    kind = body.get("messages", [{}])[0].get("content")
    if kind == "error-503":
        error = orjson.dumps({"error": {"message": "overloaded", "type": "server_error"}})
        return 503, {"content-type": "application/json", "retry-after": "4"}, [error]
    if kind == "error-400":
        return 400, {"content-type": "application/json"}, [orjson.dumps({"error": {"message": "bad input"}})]
    if body.get("stream"):
        events = [*EVENTS, {"choices": [], "seen": seen}]
        parts = [b"data: " + orjson.dumps(e) + b"\n\n" for e in events]
        return 200, {"content-type": "text/event-stream"}, [*parts, b"data: [DONE]\n\n"]
    whole = {"object": "chat.completion", "choices": [{"index": 0, "message": {"content": "whole"}}], "seen": seen}
    return 200, {"content-type": "application/json"}, [orjson.dumps(whole)]


Receive = Callable[[], Awaitable[Scope]]
Send = Callable[[Scope], Awaitable[None]]


async def asgi_app(scope: Scope, receive: Receive, send: Send) -> None:
    assert scope["type"] == "http"
    raw = b""
    while True:
        message = await receive()
        raw += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    status, out, parts = _answer(headers, orjson.loads(raw))
    await send({"type": "http.response.start", "status": status,
                "headers": [(k.encode(), v.encode()) for k, v in out.items()]})
    for i, part in enumerate(parts):
        await send({"type": "http.response.body", "body": part, "more_body": i < len(parts) - 1})


async def aiohttp_handler(request: web.Request) -> web.StreamResponse:
    status, out, parts = _answer({k.lower(): v for k, v in request.headers.items()}, await request.json())
    response = web.StreamResponse(status=status, headers=out)
    await response.prepare(request)
    for part in parts:
        await response.write(part)
    await response.write_eof()
    return response


@contextlib.asynccontextmanager
async def uvicorn_server(http: str) -> AsyncIterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(asgi_app, http=http, lifespan="off", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.01)
        assert server.started
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@contextlib.asynccontextmanager
async def aiohttp_server() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", aiohttp_handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def raw_server(host: str, interim: bytes) -> AsyncIterator[str]:
    """Answers every request with `interim` responses first, then the app's answer."""

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
                body = orjson.loads(await reader.readexactly(int(headers["content-length"])))
                status, out, parts = _answer(headers, body)
                data = b"".join(parts)
                head_out = f"HTTP/1.1 {status} X\r\n" + "".join(f"{k}: {v}\r\n" for k, v in out.items())
                if interim:
                    # on its own: a server sends an interim response while the final one is not ready
                    writer.write(interim)
                    await writer.drain()
                    await asyncio.sleep(0.05)
                writer.write(head_out.encode() + b"content-length: %d\r\n\r\n" % len(data) + data)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(on_connection, host, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    finally:
        server.close()
        await server.wait_closed()


async def outcomes(base_url: str, client: str) -> list[Any]:
    """Every case through one client: streamed chunks, a whole answer, two error statuses."""
    upstream = Upstream(name="u", base_url=base_url + "/v1", api_key="k-0123456789", models=("m",))
    results: list[Any] = []
    async with contextlib.AsyncExitStack() as stack:
        pool: HTTP1Pool | None = None
        session: aiohttp.ClientSession | None = None
        if client == "http1":
            pool = HTTP1Pool()
            stack.push_async_callback(pool.aclose)
        else:
            session = await stack.enter_async_context(aiohttp.ClientSession())

        def call(content: str, stream: bool) -> UpstreamCall:
            body = {"model": "m", "stream": stream, "messages": [{"role": "user", "content": content}]}
            return UpstreamCall(session, pool, upstream, None, "/chat/completions", body)

        for _ in range(2):  # twice: the second time on a kept-alive connection
            # chunks as one list: how they were grouped into network reads is timing, not behaviour
            streamed = [(chunks, done) async for chunks, done in call("hi", True).chunks()]
            results.append(([c for chunks, _ in streamed for c in chunks], [done for _, done in streamed][-1]))
            results.append(await call("hi", False).answer())
            for case in ("error-503", "error-400"):
                try:
                    await call(case, False).answer()
                except SwitchyardError as err:
                    results.append((type(err).__name__, err.message, err.headers()))
    return results


def _without_host(value: Any) -> Any:
    """Results with the Host header left out (its port is each server's own)."""
    if isinstance(value, dict):
        return {k: _without_host(v) for k, v in value.items() if k != "host"}
    if isinstance(value, list | tuple):
        return [_without_host(v) for v in value]
    return value


@pytest.mark.parametrize("server", ["uvicorn-h11", "uvicorn-httptools", "aiohttp"])
async def test_both_clients_agree(server: str) -> None:
    serving = uvicorn_server(server.split("-")[1]) if server.startswith("uvicorn") else aiohttp_server()
    async with serving as url:
        plain = await outcomes(url, "http1")
        other = await outcomes(url, "aiohttp")
    assert plain == other
    chunks, done = plain[0]
    assert done and [c["choices"][0]["delta"]["content"] for c in chunks[:-1]] == ["w0 ", "w1 ", "w2 "]
    assert chunks[-1]["seen"]["accept-encoding"] == "identity"
    assert plain[2] == ("UpstreamError", "upstream u answered 503: overloaded",
                        {"retry-after": "4", "retry-after-ms": "4000"})


async def test_every_server_gives_the_same_results() -> None:
    results = []
    for serving in (uvicorn_server("h11"), uvicorn_server("httptools"), aiohttp_server()):
        async with serving as url:
            results.append(_without_host(await outcomes(url, "http1")))
    assert results[0] == results[1] == results[2]


@pytest.mark.parametrize("interim", [
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n",
    b"HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n",
])
async def test_interim_responses_are_skipped_by_both(interim: bytes) -> None:
    async with raw_server("127.0.0.1", interim) as url:
        plain = await outcomes(url, "http1")
        other = await outcomes(url, "aiohttp")
    assert plain == other
    assert plain[1]["choices"][0]["message"]["content"] == "whole"


def _ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback (::1) on this machine")
async def test_an_ipv6_host_is_bracketed_by_both() -> None:
    async with raw_server("::1", b"") as url:
        plain = await outcomes(url, "http1")
        other = await outcomes(url, "aiohttp")
    port = url.rsplit(":", 1)[1]
    assert plain == other
    assert plain[1]["seen"]["host"] == f"[::1]:{port}"
