"""What a client may hold at the edge before its request is complete (libs/http_limits.py, enforced
by the fenced protocol in libs/fenced/uvicorn_internals.py): a real edge, raw sockets.

Time limits are the tests' scaled ones: SY_TIMEOUT_REQUEST_HEAD is 10 s x 0.1 = 1 s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
import pytest_asyncio

from libs.devproc import Proc
from tests.conftest import AUTH_KEY, TIME_SCALE, Stack, start_edge

HEAD_TIMEOUT = 10.0 * TIME_SCALE
CAP = 20
AUTH = {"authorization": f"Bearer {AUTH_KEY}"}
Connect = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]
CHAT = orjson.dumps({"model": "sandbox-chat", "messages": [{"role": "user", "content": "hi"}]})


@pytest.fixture(scope="module")
def edge(stack: Stack, nats_server: Proc, log_dir: Path) -> Iterator[Proc]:
    proc = start_edge(nats_server.url, log_dir, name="edge-guard", MAX_CONNECTIONS=str(CAP))
    yield proc
    proc.stop()


def address(proc: Proc) -> tuple[str, int]:
    parts = urlsplit(proc.url)
    return parts.hostname or "", parts.port or 80


@pytest_asyncio.fixture
async def connect(edge: Proc) -> AsyncIterator[Connect]:
    """Opens raw connections to the edge; closes them all at the end."""
    writers: list[asyncio.StreamWriter] = []

    async def open_one() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(*address(edge))
        writers.append(writer)
        return reader, writer

    yield open_one
    for writer in writers:
        writer.close()


async def read_to_close(reader: asyncio.StreamReader, within: float) -> bytes:
    """Everything the edge sends until it closes the connection (a reset counts as closed)."""
    data = b""
    async with asyncio.timeout(within):
        try:
            while chunk := await reader.read(65536):
                data += chunk
        except ConnectionResetError:
            pass
    return data


def error_of(response: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"connection: close" in head.lower()
    error = orjson.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return status, error


def request_head(*headers: bytes, length: int = len(CHAT)) -> bytes:
    return b"".join([b"POST /v1/chat/completions HTTP/1.1\r\nhost: edge\r\ncontent-type: application/json\r\n",
                     b"authorization: Bearer " + AUTH_KEY.encode() + b"\r\n",
                     f"content-length: {length}\r\n".encode(), *headers, b"\r\n"])


async def served(edge: Proc) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.post(edge.url + "/v1/chat/completions", content=CHAT,
                               headers={**AUTH, "content-type": "application/json"})


def assert_no_traceback(edge: Proc) -> None:
    assert "Traceback" not in edge.log()


async def test_an_8_mb_header_is_a_431_at_once_and_the_connection_closes(edge: Proc, connect: Connect) -> None:
    reader, writer = await connect()
    started = time.monotonic()
    writer.write(request_head(b"x-big: " + b"a" * (8 * 1024 * 1024) + b"\r\n"))
    response = await read_to_close(reader, within=5)
    status, error = error_of(response)
    assert status == 431 and error["code"] == "request_header_fields_too_large"
    assert "32768 bytes (MAX_HEADER_BYTES)" in str(error["message"])
    assert time.monotonic() - started < 3
    assert (await served(edge)).status_code == 200
    assert_no_traceback(edge)


async def test_ten_thousand_headers_are_a_431(edge: Proc, connect: Connect) -> None:
    reader, writer = await connect()
    writer.write(request_head(*(f"x-h{i}: v\r\n".encode() for i in range(10_000))) + CHAT)
    status, error = error_of(await read_to_close(reader, within=5))
    assert status == 431 and error["code"] == "request_header_fields_too_large"


async def test_more_header_fields_than_max_headers_is_a_431_though_the_head_is_small(
    edge: Proc, connect: Connect
) -> None:
    reader, writer = await connect()
    writer.write(request_head(*(f"x-h{i}: v\r\n".encode() for i in range(100))) + CHAT)  # 105 fields, ~1 KB
    status, error = error_of(await read_to_close(reader, within=5))
    assert status == 431 and "100 (MAX_HEADERS)" in str(error["message"])


async def test_a_head_near_the_limit_followed_by_its_body_in_the_same_write_is_served(
    edge: Proc, connect: Connect
) -> None:
    """The head limit counts the head's bytes only, not the body that arrives in the same read."""
    prompt = "word " * 100_000
    body = orjson.dumps({"model": "sandbox-chat", "messages": [{"role": "user", "content": prompt}]})
    reader, writer = await connect()
    writer.write(request_head(b"x-pad: " + b"p" * 30_000 + b"\r\n", b"connection: close\r\n", length=len(body)) + body)
    response = await read_to_close(reader, within=10)
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")


async def test_a_connection_that_sends_nothing_is_closed_after_the_head_timeout(
    edge: Proc, connect: Connect
) -> None:
    reader, _ = await connect()
    started = time.monotonic()
    assert await read_to_close(reader, within=HEAD_TIMEOUT + 3) == b""  # closed without a word
    assert HEAD_TIMEOUT * 0.9 <= time.monotonic() - started <= HEAD_TIMEOUT + 1.5


async def test_a_head_that_stops_halfway_is_a_408_after_the_head_timeout(edge: Proc, connect: Connect) -> None:
    reader, writer = await connect()
    started = time.monotonic()
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: edge\r\nx-slow: ")
    status, error = error_of(await read_to_close(reader, within=HEAD_TIMEOUT + 3))
    assert status == 408 and error["code"] == "request_timeout" and "SY_TIMEOUT_REQUEST_HEAD" in str(error["message"])
    assert HEAD_TIMEOUT * 0.9 <= time.monotonic() - started <= HEAD_TIMEOUT + 1.5


async def test_a_head_dribbled_a_byte_at_a_time_is_cut_at_the_head_timeout(edge: Proc, connect: Connect) -> None:
    """Slowloris: a byte now and then does not restart the head's time."""
    reader, writer = await connect()
    started = time.monotonic()

    async def dribble() -> None:
        for byte in request_head():
            writer.write(bytes([byte]))
            await asyncio.sleep(HEAD_TIMEOUT / 5)

    dribbler = asyncio.create_task(dribble())
    try:
        status, _ = error_of(await read_to_close(reader, within=HEAD_TIMEOUT + 3))
    finally:
        dribbler.cancel()
    assert status == 408 and time.monotonic() - started <= HEAD_TIMEOUT + 1.5


async def test_a_body_at_one_byte_a_second_is_cut_with_a_408(edge: Proc, connect: Connect) -> None:
    reader, writer = await connect()
    writer.write(request_head())
    started = time.monotonic()

    async def trickle() -> None:
        for byte in CHAT:
            writer.write(bytes([byte]))
            await asyncio.sleep(1.0)

    trickler = asyncio.create_task(trickle())
    try:
        status, error = error_of(await read_to_close(reader, within=HEAD_TIMEOUT + 4))
    finally:
        trickler.cancel()
    assert status == 408 and "MIN_BODY_RATE" in str(error["message"])
    assert time.monotonic() - started <= HEAD_TIMEOUT + 2.5  # the allowance, then the rate's deficit
    assert_no_traceback(edge)


async def test_idle_connections_beyond_the_cap_make_room_for_a_real_client(edge: Proc, connect: Connect) -> None:
    """Twice MAX_CONNECTIONS silent connections: the oldest are closed for the newest, and a real
    client is served at once, long before the head timeout would have freed anything."""
    silent = [await connect() for _ in range(2 * CAP)]
    started = time.monotonic()
    reply = await served(edge)
    assert reply.status_code == 200
    assert time.monotonic() - started < HEAD_TIMEOUT / 2
    closed = 0
    for reader, _ in silent[:CAP]:  # the oldest went first
        closed += await read_to_close(reader, within=2) == b""
    assert closed == CAP


async def test_a_connection_beyond_the_cap_of_busy_ones_gets_a_503_at_once(edge: Proc, connect: Connect) -> None:
    """MAX_CONNECTIONS connections each inside a request (a body on its way): nothing is idle to
    close, so a new connection is answered 503 and closed before it sends a byte."""
    busy = [await connect() for _ in range(CAP)]
    for _, writer in busy:
        writer.write(request_head() + CHAT[:1])
    # the edge reads the heads: nothing it does is visible from outside to await, so a moment
    await asyncio.sleep(0.2)
    reader, _ = await connect()
    started = time.monotonic()
    status, error = error_of(await read_to_close(reader, within=2))
    assert status == 503 and error["code"] == "too_many_connections"
    assert time.monotonic() - started < 0.5
    # the busy ones are cut by the body rate in time, and capacity comes back
    for busy_reader, _ in busy:
        status, _ = error_of(await read_to_close(busy_reader, within=HEAD_TIMEOUT + 3))
        assert status == 408
    assert (await served(edge)).status_code == 200


async def test_a_request_answered_before_its_body_came_gets_no_second_answer(edge: Proc, connect: Connect) -> None:
    """A 401 needs no body: if the body then stalls, the connection is closed without a 408 after the 401."""
    reader, writer = await connect()
    writer.write(request_head().replace(AUTH_KEY.encode(), b"wrong-key") + CHAT[:1])
    data = await read_to_close(reader, within=HEAD_TIMEOUT + 5)
    assert data.startswith(b"HTTP/1.1 401 ")
    assert data.count(b"HTTP/1.1 ") == 1, data
