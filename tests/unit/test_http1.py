"""libs/http1.py against a scripted HTTP server on a loopback socket (asyncio.start_server).

Each test's server reads requests and writes exactly the bytes the test scripts, so keep-alive,
chunked bodies, early closes and half-read responses are exercised on real sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from libs.http1 import HTTP1Pool, InvalidHeader, ProtocolError, ResponseTooLarge

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


@dataclass
class Server:
    port: int
    connections: int = 0


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
        0,
    )
    return head + await reader.readexactly(length)


@contextlib.asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[Server]:
    state = Server(port=0)

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        try:
            await handler(reader, writer, state.connections)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        await server.wait_closed()


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


OK_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


async def body_of(
    pool: HTTP1Pool, port: int, payload: bytes = b"{}", headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    headers = headers or {"content-type": "application/json"}
    async with pool.post("127.0.0.1", port, "/v1/x", headers, payload) as r:
        return r.status, b"".join([chunk async for chunk in r.body()])


async def test_chunked_body_streams_as_it_arrives_and_the_connection_is_reused() -> None:
    release = asyncio.Event()
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while True:
            seen.append(await read_request(reader))
            writer.write(OK_HEAD + b"6\r\nfirst\n\r\n")
            await writer.drain()
            await release.wait()
            writer.write(b"7\r\nsecond\n\r\n0\r\n\r\n")
            await writer.drain()
            release.clear()

    async with serve(handler) as server:
        pool = HTTP1Pool()
        async with pool.post("127.0.0.1", server.port, "/v1/chat", {"authorization": "Bearer k"},
                                b'{"a": 1}') as response:
            assert response.status == 200
            assert response.headers["content-type"] == "text/event-stream"
            chunks = response.body()
            assert await anext(chunks) == b"first\n"  # before the server has written the rest
            release.set()
            assert [c async for c in chunks] == [b"second\n"]
        release.set()
        assert await body_of(pool, server.port) == (200, b"first\nsecond\n")
        assert server.connections == 1  # kept alive and reused
        await pool.aclose()
    first = seen[0]
    assert first.startswith(b"POST /v1/chat HTTP/1.1\r\n")
    assert f"host: 127.0.0.1:{server.port}\r\n".encode() in first
    assert b"authorization: Bearer k\r\n" in first and b"content-length: 8\r\n" in first
    assert first.endswith(b'\r\n\r\n{"a": 1}')


async def test_content_length_body_and_connection_close_are_honoured() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 429 Too Many\r\nretry-after: 7\r\ncontent-length: 5\r\nconnection: close\r\n\r\nslow!")
        await writer.drain()

    async with serve(handler) as server:
        pool = HTTP1Pool()
        async with pool.post("127.0.0.1", server.port, "/", {}, b"") as response:
            assert (response.status, response.headers["retry-after"]) == (429, "7")
            assert await response.read(1024) == b"slow!"
        assert await body_of(pool, server.port) == (429, b"slow!")
        assert server.connections == 2  # the server said close: no reuse
        await pool.aclose()


async def test_a_half_read_body_closes_the_connection_instead_of_reusing_it() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 500 Oops\r\ncontent-length: 10000\r\n\r\n" + b"x" * 5000)
            await writer.drain()
            await asyncio.sleep(0.1)  # the rest comes later: the client has stopped reading by then
            writer.write(b"x" * 5000)
            await writer.drain()

    async with serve(handler) as server:
        pool = HTTP1Pool()
        for _ in range(2):
            async with pool.post("127.0.0.1", server.port, "/", {}, b"") as response:
                assert len(await response.read(16)) == 16
        assert server.connections == 2
        await pool.aclose()


async def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(OK_HEAD + chunked(b"conn%d" % n))
        await writer.drain()
        if n == 1:
            await asyncio.sleep(0.1)  # then the server closes it, as uvicorn does after 5 idle seconds

    async with serve(handler) as server:
        pool = HTTP1Pool()
        assert await body_of(pool, server.port) == (200, b"conn1")
        await asyncio.sleep(0.4)
        assert await body_of(pool, server.port) == (200, b"conn2")
        await pool.aclose()
    assert server.connections == 2


async def test_an_unanswered_reused_connection_is_retried_once_on_a_new_one() -> None:
    answered: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(OK_HEAD + chunked(b"first"))
        await writer.drain()
        if n == 1:
            await read_request(reader)  # the second request on this connection: no answer, close
            return
        answered.append(n)

    async with serve(handler) as server:
        pool = HTTP1Pool()
        assert await body_of(pool, server.port) == (200, b"first")
        assert await body_of(pool, server.port) == (200, b"first")
        await pool.aclose()
    assert server.connections == 2 and answered == [2]


async def test_a_stream_cut_inside_the_body_is_a_protocol_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(OK_HEAD + b"5\r\nhello\r\n")  # and never the terminating chunk
        await writer.drain()

    async with serve(handler) as server:
        pool = HTTP1Pool()
        received: list[bytes] = []
        with pytest.raises(ProtocolError, match="inside a response"):
            async with pool.post("127.0.0.1", server.port, "/", {}, b"") as response:
                async for chunk in response.body():
                    received.append(chunk)
        assert received == [b"hello"]  # what arrived before the cut is still delivered
        await pool.aclose()


async def test_a_connection_closed_before_any_answer_fails_cleanly() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)

    async with serve(handler) as server:
        pool = HTTP1Pool()
        with pytest.raises(ProtocolError):
            await body_of(pool, server.port)
        await pool.aclose()


async def test_cancelling_the_reader_closes_the_connection() -> None:
    caller_gone = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(OK_HEAD + b"5\r\nhello\r\n")
        await writer.drain()
        # a slow upstream, still generating, notices its caller leave (EOF)
        if await asyncio.wait_for(reader.read(1), 5) == b"":
            caller_gone.set()

    async with serve(handler) as server:
        pool = HTTP1Pool()
        got_first = asyncio.Event()

        async def consume() -> None:
            async with pool.post("127.0.0.1", server.port, "/", {}, b"") as response:
                async for _ in response.body():
                    got_first.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(got_first.wait(), 2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # the server's next read sees EOF: the upstream learns its caller has gone
        await asyncio.wait_for(caller_gone.wait(), 1.0)
        await pool.aclose()


async def write_blob(writer: asyncio.StreamWriter, blob: bytes) -> None:
    """A 200 answer with a content-length body, written in 64 KiB pieces."""
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(blob))
    for i in range(0, len(blob), 65536):
        writer.write(blob[i:i + 65536])
        await writer.drain()


async def test_a_large_body_read_slowly_arrives_whole() -> None:
    blob = bytes(range(256)) * 4096  # 1 MiB, above the pause threshold

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        await write_blob(writer, blob)

    async with serve(handler) as server:
        pool = HTTP1Pool()
        parts = []
        async with pool.post("127.0.0.1", server.port, "/", {}, b"") as response:
            async for chunk in response.body():
                parts.append(chunk)
                await asyncio.sleep(0.001)
        assert b"".join(parts) == blob
        await pool.aclose()


async def test_read_all_returns_the_whole_body_past_the_pause_threshold_and_reuses_the_connection() -> None:
    blob = bytes(range(256)) * 4096  # 1 MiB: reading pauses at 256 KiB buffered and must resume

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        for _ in range(2):
            await read_request(reader)
            await write_blob(writer, blob)

    async with serve(handler) as server:
        pool = HTTP1Pool()
        for _ in range(2):
            async with pool.post("127.0.0.1", server.port, "/", {}, b"") as response:
                assert await asyncio.wait_for(response.read_all(len(blob)), 5) == blob
        assert server.connections == 1  # complete and keep-alive: the one connection went back
        await pool.aclose()


async def test_read_all_refuses_a_body_over_its_limit_and_closes_the_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while True:
            await read_request(reader)
            writer.write(OK_HEAD + chunked(b"x" * 600, b"y" * 600))
            await writer.drain()

    async with serve(handler) as server:
        pool = HTTP1Pool()
        with pytest.raises(ResponseTooLarge):
            async with pool.post("127.0.0.1", server.port, "/", {}, b"") as response:
                await response.read_all(1000)
        async with pool.post("127.0.0.1", server.port, "/", {}, b"") as response:
            assert await response.read_all(1200) == b"x" * 600 + b"y" * 600
        assert server.connections == 2  # the refused answer's connection was not reused
        await pool.aclose()


async def test_read_all_raises_when_the_server_cuts_the_body() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part")

    async with serve(handler) as server:
        pool = HTTP1Pool()
        with pytest.raises(ProtocolError, match="inside a response"):
            async with pool.post("127.0.0.1", server.port, "/", {}, b"") as response:
                await response.read_all(1000)
        await pool.aclose()


@pytest.mark.parametrize(
    "headers", [{"authorization": "Bearer k\r\nx-injected: 1"}, {"bad\nname": "v"}, {"a:b": "v"}]
)
async def test_header_injection_is_refused_before_anything_is_sent(headers: dict[str, str]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)

    async with serve(handler) as server:
        pool = HTTP1Pool()
        with pytest.raises(InvalidHeader) as caught:
            await body_of(pool, server.port, headers=headers)
        assert "Bearer" not in str(caught.value)  # the value (a key, perhaps) is never echoed
        await pool.aclose()
    assert server.connections == 0


async def test_nothing_listening_is_an_os_error() -> None:
    async with serve(lambda r, w, n: asyncio.sleep(0)) as server:
        port = server.port
    with pytest.raises(OSError):
        await body_of(HTTP1Pool(), port)


async def test_a_body_delimited_by_the_connection_closing_is_complete() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n")
        writer.write(b"data: one\n\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"data: [DONE]\n\n")
        await writer.drain()  # then the handler returns and the server closes: that ends the body

    async with serve(handler) as server:
        pool = HTTP1Pool()
        assert await body_of(pool, server.port) == (200, b"data: one\n\ndata: [DONE]\n\n")
        await pool.aclose()


async def test_interim_responses_in_the_same_read_are_skipped_and_the_connection_reused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n"
                         b"HTTP/1.1 200 OK\r\nx-final: yes\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()

    async with serve(handler) as server:
        pool = HTTP1Pool()
        for _ in range(2):
            async with pool.post("127.0.0.1", server.port, "/", {}, b"") as response:
                assert response.status == 200
                assert response.headers == {"x-final": "yes", "content-length": "2"}  # not the interim ones'
                assert await response.read_all(1024) == b"ok"
        assert server.connections == 1
        await pool.aclose()


async def test_a_compressed_body_is_refused_not_passed_on_as_text() -> None:
    """Both clients ask for identity; a body compressed anyway would reach the SSE parser as bytes."""
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        seen.append(await read_request(reader))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: 3\r\n\r\n\x1f\x8b\x08")
        await writer.drain()

    async with serve(handler) as server:
        pool = HTTP1Pool()
        with pytest.raises(ProtocolError, match="content-encoding 'gzip'"):
            async with pool.post("127.0.0.1", server.port, "/", {"accept-encoding": "identity"}, b""):
                pass
        await pool.aclose()
    assert b"accept-encoding: identity\r\n" in seen[0]


async def test_a_connect_limit_of_the_call_overrides_the_pool_one() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()

    async with serve(handler) as server:
        pool = HTTP1Pool(connect_timeout=30)
        with pytest.raises(TimeoutError):  # a limit already spent: the call's, not the pool's 30 s
            async with pool.post("127.0.0.1", server.port, "/", {}, b"", connect_timeout=0):
                pass
        async with pool.post("127.0.0.1", server.port, "/", {}, b"", connect_timeout=5) as response:
            assert response.status == 200
        await pool.aclose()


async def test_a_head_limit_bounds_the_wait_for_the_head_only() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        request = await read_request(reader)
        if b"/hang" in request.split(b"\r\n", 1)[0]:
            await reader.read()  # accepted, never answered: until the client goes
            return
        writer.write(OK_HEAD + b"3\r\nab\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.3)  # the body takes longer than the head limit: not cut
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async with serve(handler) as server:
        pool = HTTP1Pool()
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TimeoutError):
            async with pool.post("127.0.0.1", server.port, "/hang", {}, b"", head_timeout=0.1):
                pass
        assert loop.time() - started < 2
        async with pool.post("127.0.0.1", server.port, "/slow-body", {}, b"", head_timeout=0.1) as response:
            assert b"".join([c async for c in response.body()]) == b"ab\n"
        await pool.aclose()


async def test_a_call_without_a_head_limit_is_entered_without_a_timer_or_a_wrapping_coroutine() -> None:
    # `async with` awaits what __aenter__ returns: without a limit, the entering coroutine itself
    pool = HTTP1Pool()
    plain = pool.post("127.0.0.1", 9, "/", {}, b"").__aenter__()
    limited = pool.post("127.0.0.1", 9, "/", {}, b"", head_timeout=1.0).__aenter__()
    try:
        assert plain.cr_code.co_name == "_enter"  # type: ignore[attr-defined]
        assert limited.cr_code.co_name == "_enter_limited"  # type: ignore[attr-defined]
    finally:
        plain.close()
        limited.close()
