"""A lean HTTP/1.1 client for plain-HTTP upstreams: keep-alive pool, streamed response bodies.

Why not aiohttp everywhere: on the openai-worker's hot path, aiohttp spent 0.17-0.18 ms of CPU
per streamed call at concurrency 1 and 0.08-0.09 ms at 64; this client (httptools, the parser
uvicorn uses, under an asyncio Protocol) spends 0.06-0.08 and 0.03-0.04 ms (README, Performance).
It covers only what that path needs: POST with a body (the only method it sends), a plain TCP
connection (in-cluster model servers such as vLLM or Ollama), a response streamed as it arrives.
TLS and proxies stay with aiohttp, which does them well.

A connection goes back to the pool only after a complete response the server will keep alive;
anything else (an error, a cancelled task, a body left unread) closes it, which is how an
upstream learns that its caller has gone.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncGenerator, Coroutine, Mapping
from typing import Any

import httptools

# What both upstream clients (this one and aiohttp) ask for. Not gzip: SSE must not be buffered
# into compression blocks, in-cluster servers answer uncompressed anyway, and decoding would
# cost CPU on every call; a server that compresses regardless is refused (ProtocolError).
ACCEPT_ENCODING = "identity"
_HIGH_WATER = 256 * 1024  # stop reading from the socket while this much body is unread
_MAX_IDLE_SECONDS = 30.0  # servers close idle connections (uvicorn after 5 s); don't reuse old ones
_MAX_IDLE_PER_ORIGIN = 256


class ProtocolError(Exception):
    """The server broke HTTP: unparseable bytes, or the connection ended inside a response."""


class InvalidHeader(ValueError):
    """A header name or value that would break the request (a line break, say)."""


class ResponseTooLarge(Exception):
    """`read_all`: the body is longer than the caller's limit (the rest is not read)."""


class Response(asyncio.Protocol):
    """One connection, and the response currently being received on it (httptools callbacks)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.status = 0
        self.headers: dict[str, str] = {}
        self.idle_since = 0.0
        self.received_any = False  # any byte of the current response
        self._parser = httptools.HttpResponseParser(self)
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._headers_done = False
        self._interim = False  # inside a 1xx response, which is skipped
        self._complete = False
        self._keep_alive = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    # ---- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ProtocolError(f"invalid HTTP from the server: {exc}"))
            self._close()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self._complete and exc is None and self._ends_at_eof():
            self._complete = True  # a body without a length or chunks ends where the connection does
            self._wake()
        if not self._complete:
            reason = f": {exc}" if exc else ""
            self._fail(ProtocolError(f"the server closed the connection inside a response{reason}"))

    def _ends_at_eof(self) -> bool:
        return (
            self._headers_done
            and "content-length" not in self.headers
            and "chunked" not in self.headers.get("transfer-encoding", "").lower()
        )

    # ---- httptools callbacks ---------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            # An interim response (100 Continue, 102 Processing, 103 Early Hints): the final one
            # follows on the same connection. The parser reports each as a message of its own.
            self._interim = True
            self.headers = {}
            return
        encoding = self.headers.get("content-encoding")
        if encoding is not None and (encoding := encoding.strip().lower()) != "identity":
            # We ask for identity (ACCEPT_ENCODING); a server that compresses anyway would
            # otherwise hand compressed bytes to the SSE and JSON parsers as if they were text.
            self._fail(ProtocolError(f"the server sent a body in content-encoding {encoding!r}"))
            self._close()
            return
        self.status = status
        self._headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self._complete = True
        self._keep_alive = self._parser.should_keep_alive()
        self._wake()

    # ---- the caller's side -----------------------------------------------------------------

    def send(self, request: bytes) -> None:
        """Start a request on this (idle) connection."""
        self._parser = httptools.HttpResponseParser(self)
        self.status, self.headers = 0, {}
        self._headers_done = self._complete = self._keep_alive = self.received_any = self._interim = False
        self._error = None
        assert self.transport is not None
        self.transport.write(request)

    async def wait_headers(self) -> None:
        while not self._headers_done:
            await self._wait()

    async def body(self) -> AsyncGenerator[bytes, None]:
        """The body as it arrives (de-chunked), until the response is complete."""
        while True:
            if self._chunks:
                yield self._pop()
            elif self._complete:
                return
            else:
                await self._wait()

    async def read_all(self, limit: int) -> bytes:
        """The whole body once complete; ResponseTooLarge past `limit` bytes."""
        data, over = await self._collect(limit)
        if over:
            raise ResponseTooLarge(f"the body is longer than {limit} bytes")
        return data

    async def read(self, limit: int) -> bytes:
        """Up to `limit` bytes of the body (an error body, say); the rest is not read."""
        return (await self._collect(limit))[0][:limit]

    async def _collect(self, limit: int) -> tuple[bytes, bool]:
        """The body until it is complete or has gone past `limit` bytes (then True). A plain
        coroutine: no async generator to register, step through and close per call."""
        parts: list[bytes] = []
        size = 0
        while True:
            while self._chunks:
                chunk = self._pop()
                parts.append(chunk)
                size += len(chunk)
                if size > limit:
                    return b"".join(parts), True
            if self._complete:
                return b"".join(parts), False
            await self._wait()

    def _pop(self) -> bytes:
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._paused and self._buffered <= _HIGH_WATER // 4 and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return chunk

    @property
    def reusable(self) -> bool:
        return self._complete and self._keep_alive and not self.closed and not self._chunks

    async def _wait(self) -> None:
        if self._error is not None:
            raise self._error
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
        if self._error is not None and not self._chunks and not self._complete:
            raise self._error

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        self._wake()

    def _close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def host_header(host: str, port: int) -> str:
    """The `Host` value: an IPv6 literal in brackets (RFC 9110 7.2), the port unless it is 80."""
    name = f"[{host}]" if ":" in host else host
    return name if port == 80 else f"{name}:{port}"


def _request_bytes(target: str, host: str, headers: Mapping[str, str], body: bytes) -> bytes:
    """A POST: the only method the upstream path needs, so the only one this client speaks."""
    lines = [f"POST {target} HTTP/1.1", f"host: {host}"]
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
            raise InvalidHeader(f"header {name!r} contains a line break or a colon")  # never echo the value
        lines.append(f"{name}: {value}")
    lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _Call:
    """One request on a pooled connection, as an async context manager (a class, not a generator:
    this runs for every upstream call). Entering sends the request and returns the response once
    its headers are in; leaving gives a complete, keep-alive connection back, or closes it."""

    __slots__ = ("_conn", "_connect_timeout", "_head_timeout", "_key", "_pool", "_request")

    def __init__(
        self, pool: HTTP1Pool, key: tuple[str, int], request: bytes, connect_timeout: float | None,
        head_timeout: float | None,
    ) -> None:
        self._pool = pool
        self._key = key
        self._request = request
        self._connect_timeout = connect_timeout
        self._head_timeout = head_timeout
        self._conn: Response | None = None

    def __aenter__(self) -> Coroutine[Any, Any, Response]:
        # without a limit, `_enter` itself is what `async with` awaits: no timer and no coroutine
        # layer around it (this runs for every upstream call)
        if self._head_timeout is None:
            return self._enter()
        return self._enter_limited(self._head_timeout)

    async def _enter_limited(self, limit: float) -> Response:
        async with asyncio.timeout(limit):
            return await self._enter()

    async def _enter(self) -> Response:
        conn = self._pool._take(self._key)
        try:
            if conn is not None:
                try:
                    conn.send(self._request)
                    await conn.wait_headers()
                except ProtocolError:
                    if conn.received_any:
                        raise
                    # The server closed this idle connection as we reused it, before answering
                    # anything (keep-alive timeouts race like this): once more, on a new one.
                    conn._close()
                    conn = None
            if conn is None:
                conn = await self._pool._connect(*self._key, self._connect_timeout)
                conn.send(self._request)
                await conn.wait_headers()
        except BaseException:
            if conn is not None:
                conn._close()
            raise
        self._conn = conn
        return conn

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        conn = self._conn
        assert conn is not None
        if exc is None and conn.reusable:
            self._pool._give_back(self._key, conn)
        else:
            conn._close()  # an error, a cancelled task, a body left unread, or the server said close


class HTTP1Pool:
    """Keep-alive connections per (host, port); `request` is an async context manager."""

    def __init__(self, *, connect_timeout: float = 10.0) -> None:
        self.connect_timeout = connect_timeout
        self._idle: dict[tuple[str, int], list[Response]] = {}

    def _take(self, key: tuple[str, int]) -> Response | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < _MAX_IDLE_SECONDS:
                return conn
            conn._close()
        return None

    def _give_back(self, key: tuple[str, int], conn: Response) -> None:
        idle = self._idle.setdefault(key, [])
        if len(idle) >= _MAX_IDLE_PER_ORIGIN:
            conn._close()
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)

    async def _connect(self, host: str, port: int, limit: float | None) -> Response:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.connect_timeout if limit is None else limit):
            _, conn = await loop.create_connection(Response, host, port)
        return conn

    def post(
        self, host: str, port: int, target: str, headers: Mapping[str, str], body: bytes, *,
        connect_timeout: float | None = None, head_timeout: float | None = None,
    ) -> _Call:
        """`async with pool.post(...) as response`: read the response's body inside the block.
        `connect_timeout` overrides the pool's for this call (an upstream's own limit);
        `head_timeout` bounds everything until the response head is in (TimeoutError)."""
        return _Call(self, (host, port), _request_bytes(target, host_header(host, port), headers, body),
                     connect_timeout, head_timeout)

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn._close()
        self._idle.clear()
