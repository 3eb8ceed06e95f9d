"""libs.fenced.uvicorn_internals (HeadWithBody): a response's head goes out with its body, and never waits longer
than one loop step for it (real sockets, and a real uvicorn server with the edge's protocol)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest_asyncio
import uvicorn

from libs.devproc import free_port
from libs.fenced.uvicorn_internals import EdgeHttpProtocol, HeadWithBody

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"


class Counted:
    """A real transport, with its writes counted."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        self.transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


@pytest_asyncio.fixture
async def connection() -> AsyncIterator[tuple[HeadWithBody, Counted, socket.socket]]:
    """(HeadWithBody over a counted real transport, that transport, the server's end of the socket)."""
    listener = socket.create_server(("127.0.0.1", 0))
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(asyncio.Protocol, *listener.getsockname())
    peer, _ = listener.accept()
    peer.settimeout(5)
    counted = Counted(transport)
    yield HeadWithBody(counted, loop), counted, peer  # type: ignore[arg-type]
    transport.close()
    peer.close()
    listener.close()


def read_exactly(peer: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:  # bounded by the socket's timeout
        data += peer.recv(size - len(data))
    return data


async def test_a_head_and_the_body_sent_right_after_it_are_one_write(
    connection: tuple[HeadWithBody, Counted, socket.socket],
) -> None:
    wrapped, counted, peer = connection
    wrapped.write(HEAD)
    wrapped.write(b"hello")
    wrapped.write(b"more")
    assert counted.writes == [HEAD + b"hello", b"more"]
    assert read_exactly(peer, len(HEAD) + 9) == HEAD + b"hellomore"
    await asyncio.sleep(0)
    assert len(counted.writes) == 2  # the scheduled flush found nothing left to send


async def test_a_head_without_a_body_in_the_same_step_goes_out_at_the_next(
    connection: tuple[HeadWithBody, Counted, socket.socket],
) -> None:
    wrapped, counted, peer = connection
    wrapped.write(HEAD)
    assert counted.writes == []
    await asyncio.sleep(0)
    assert counted.writes == [HEAD]
    assert read_exactly(peer, len(HEAD)) == HEAD


async def test_closing_sends_a_held_head_first(connection: tuple[HeadWithBody, Counted, socket.socket]) -> None:
    wrapped, counted, peer = connection
    wrapped.write(HEAD)
    wrapped.close()
    assert counted.writes == [HEAD]
    assert read_exactly(peer, len(HEAD)) == HEAD


@contextlib.asynccontextmanager
async def serving(app: Any) -> AsyncIterator[int]:
    """A real uvicorn server with the edge's protocol on a free loopback port."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, http=EdgeHttpProtocol, lifespan="off",
                                          log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(100):  # bounded: uvicorn binds within milliseconds
            if server.started:
                break
            await asyncio.sleep(0.02)
        yield port
    finally:
        server.should_exit = True
        await task


async def test_a_served_head_is_not_held_back_while_the_body_is_slow() -> None:
    """An app that sends its head, then its body 0.5 s later: the client has the head long before."""
    body_sent = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4")]})
        await asyncio.sleep(0.5)
        body_sent.set()
        await send({"type": "http.response.body", "body": b"late"})

    async with serving(app) as port, httpx.AsyncClient(timeout=5) as client, client.stream(
        "GET", f"http://127.0.0.1:{port}/"
    ) as response:
        assert response.status_code == 200
        assert not body_sent.is_set()  # the head arrived on its own
        assert await response.aread() == b"late"


async def test_expect_100_continue_is_answered_before_the_body_is_sent() -> None:
    """uvicorn's `100 Continue` looks like a response head: it must not wait for a body that the
    client only sends once it has it."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = (await receive())["body"]
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async with serving(app) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\nexpect: 100-continue\r\n\r\n")
        continue_line = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
        assert continue_line == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"hello")
        response = await asyncio.wait_for(reader.readuntil(b"hello"), 2)
        assert response.startswith(b"HTTP/1.1 200 OK\r\n")
        writer.close()
