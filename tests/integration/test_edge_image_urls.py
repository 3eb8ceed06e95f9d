"""GET /images/{name}: images an image worker stored are served by the edge, without a key, until
their URL expires; anything else is an OpenAI-shaped 404."""

from __future__ import annotations

import asyncio
import secrets

import httpx
import nats
import pytest

import proto
from libs.devproc import Proc
from tests.conftest import Stack, start_edge

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64  # the bytes are served as stored; the type comes from the name


async def _store(nats_url: str, name: str, data: bytes) -> None:
    nc = await nats.connect(nats_url)
    try:
        store = await nc.jetstream().object_store(proto.IMAGE_STORE)
        await store.put(name, data)
    finally:
        await nc.close()


def _name(extension: str = "png") -> str:
    return f"{secrets.token_urlsafe(24)}.{extension}"


async def test_a_stored_image_is_served_without_a_key(stack: Stack) -> None:
    name = _name()
    await _store(stack.nats_url, name, PNG)
    async with httpx.AsyncClient() as client:  # no Authorization header, though the edge requires one
        response = await client.get(f"{stack.edge_url}/images/{name}")
        head = await client.head(f"{stack.edge_url}/images/{name}")
    assert response.status_code == 200
    assert response.content == PNG
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-content-type-options"] == "nosniff"
    max_age = int(response.headers["cache-control"].split("max-age=")[1])
    assert 3500 < max_age <= 3600  # IMAGE_URL_TTL's default, less the moment since it was stored
    assert "expires" in response.headers
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(PNG))


@pytest.mark.parametrize(
    "path",
    [
        "/images/" + "A" * 32 + ".png",  # well-formed, never stored
        "/images/short.png",  # not a name a worker makes
        "/images/" + "A" * 32 + ".exe",
        "/images/" + "A" * 32,
    ],
)
async def test_unknown_or_malformed_names_are_openai_shaped_404s(stack: Stack, path: str) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(stack.edge_url + path)
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] in ("image_not_found", "not_found")
    assert set(error) == {"message", "type", "param", "code"}


async def _raw_get(url: str, path: str) -> bytes:
    """A GET of `path` exactly as written (HTTP clients would resolve its `..` themselves)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    return status_line


@pytest.mark.parametrize("path", ["/images/../v1/models", "/images/%2e%2e/v1/models", "/images//v1/models"])
async def test_the_images_path_opens_nothing_else_without_a_key(stack: Stack, path: str) -> None:
    status_line = await _raw_get(stack.edge_url, path)
    assert status_line.split()[1] == b"404", status_line


async def test_an_expired_image_is_gone(stack: Stack, nats_server: Proc) -> None:
    # IMAGE_URL_TTL is the image store's TTL; the store belongs to the edge that made it first,
    # so this runs on a bus of its own edge's making
    from libs.devproc import start_nats_server

    own = start_nats_server(log_dir=stack.log_dir / "image-ttl", store_dir=stack.log_dir / "image-ttl" / "js")
    edge = start_edge(own.url, stack.log_dir, name="edge-image-ttl", IMAGE_URL_TTL="1")
    try:
        name = _name("webp")
        await _store(own.url, name, b"RIFF....WEBP")
        async with httpx.AsyncClient() as client:
            first = await client.get(f"{edge.url}/images/{name}")
            assert first.status_code == 200 and first.headers["content-type"] == "image/webp"
            assert int(first.headers["cache-control"].split("max-age=")[1]) <= 1
            for _ in range(40):  # JetStream removes it once its age passes the TTL
                await asyncio.sleep(0.1)
                gone = await client.get(f"{edge.url}/images/{name}")
                if gone.status_code == 404:
                    break
            assert gone.status_code == 404
    finally:
        edge.stop()
        own.stop()
