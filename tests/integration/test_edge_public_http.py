"""The edge with SY_PRIVATE_APIS=0: stock uvicorn h11, no uvicorn internals (libs/fenced off).

Chat, streamed and not, works as on the fenced path; of the pre-request limits, the public path
has the head-size bound (h11's, answered with its 400) and the connection cap (uvicorn's
limit_concurrency, a 503 once a head is complete); see services/edge/__main__.py for what it lacks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import openai
import pytest
import pytest_asyncio

from libs.devproc import Proc
from tests.conftest import AUTH_KEY, Stack, start_edge

CAP = 6


@pytest.fixture(scope="module")
def edge(stack: Stack, nats_server: Proc, log_dir: Path) -> Iterator[Proc]:
    proc = start_edge(nats_server.url, log_dir, name="edge-public", SY_PRIVATE_APIS="0", MAX_CONNECTIONS=str(CAP))
    yield proc
    proc.stop()


@pytest_asyncio.fixture
async def client(edge: Proc) -> AsyncIterator[openai.AsyncOpenAI]:
    sdk = openai.AsyncOpenAI(base_url=edge.url + "/v1", api_key=AUTH_KEY, max_retries=0, timeout=30)
    yield sdk
    await sdk.close()


async def test_chat_non_stream(client: openai.AsyncOpenAI) -> None:
    reply = await client.chat.completions.create(
        model="sandbox-chat", messages=[{"role": "user", "content": "hello [sandbox tokens=5]"}])
    assert reply.choices[0].message.content and reply.choices[0].finish_reason == "stop"


async def test_chat_stream(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="sandbox-chat", messages=[{"role": "user", "content": "hello [sandbox tokens=5]"}], stream=True)
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert any(c.choices and c.choices[0].finish_reason == "stop" for c in chunks)


async def test_the_public_path_runs_h11_and_bounds_the_head(edge: Proc) -> None:
    """An 8 MB header: h11 stops at MAX_HEADER_BYTES and answers its own 400 (the fenced path's is
    a 431), at once, and closes."""
    parts = urlsplit(edge.url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    big = b"x-big: " + b"a" * (8 * 1024 * 1024) + b"\r\n"
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: edge\r\n" + big + b"\r\n")
    data = b""
    async with asyncio.timeout(5):
        try:
            while chunk := await reader.read(65536):
                data += chunk
        except ConnectionResetError:
            pass
    writer.close()
    assert data.startswith(b"HTTP/1.1 400 ")
    assert "Traceback" not in edge.log()


async def test_deep_json_is_a_400_on_the_public_path_too(edge: Proc) -> None:
    body = b'{"model":"sandbox-chat","messages":[{"role":"user","content":"hi","x":' + b"[" * 300 + b"]" * 300 + b"}]}"
    async with httpx.AsyncClient(timeout=30) as http:
        reply = await http.post(edge.url + "/v1/chat/completions", content=body,
                                headers={"authorization": f"Bearer {AUTH_KEY}", "content-type": "application/json"})
    assert reply.status_code == 400 and reply.json()["error"]["code"] == "nesting_too_deep"


async def test_max_connections_caps_the_public_path(edge: Proc) -> None:
    """MAX_CONNECTIONS open connections: the next request is a 503 (uvicorn's limit_concurrency)."""
    parts = urlsplit(edge.url)
    held = [await asyncio.open_connection(parts.hostname, parts.port) for _ in range(CAP)]
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            reply = await http.get(edge.url + "/healthz")
        assert reply.status_code == 503
    finally:
        for _, writer in held:
            writer.close()
