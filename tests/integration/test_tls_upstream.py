"""HTTPS upstreams: certificates are verified, a trusted CA works, and HTTPS_PROXY tunnels (CONNECT).

The sandbox serves HTTPS with a certificate from a throwaway CA (trustme). Workers trust that CA
through SSL_CERT_FILE, as an operator would point them at a private CA; a worker that does not
trust it must refuse the upstream rather than send it the key. The proxy is a minimal CONNECT
tunnel in the test process that records what it was asked to reach.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import pytest
import pytest_asyncio
import trustme

from libs.devproc import Proc, free_port, spawn
from tests.conftest import AUTH_KEY, SANDBOX_KEY, Stack, wait_for_models

AUTH = {"authorization": f"Bearer {AUTH_KEY}"}


@dataclass
class TLSSandbox:
    url: str
    ca_path: str


@pytest.fixture(scope="module")
def tls_sandbox(log_dir: Path) -> Iterator[TLSSandbox]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    tls_dir = log_dir / "tls"
    tls_dir.mkdir(exist_ok=True)
    ca.cert_pem.write_to_path(str(tls_dir / "ca.pem"))
    cert.private_key_pem.write_to_path(str(tls_dir / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tls_dir / "cert.pem"))
    port = free_port()
    env = {"PORT": str(port), "SANDBOX_API_KEY": SANDBOX_KEY, "SANDBOX_TLS_CERT": str(tls_dir / "cert.pem"),
           "SANDBOX_TLS_KEY": str(tls_dir / "key.pem")}
    proc: Proc = spawn("sandbox-tls", [sys.executable, "-m", "services.sandbox"], env=env, log_dir=log_dir)
    url = f"https://127.0.0.1:{port}"
    trusting = ssl.create_default_context(cafile=str(tls_dir / "ca.pem"))
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.alive(), proc.log()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/healthz", verify=trusting, timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, proc.log()
            time.sleep(0.05)
        yield TLSSandbox(url, str(tls_dir / "ca.pem"))
    finally:
        proc.stop()


@dataclass
class ConnectProxy:
    port: int
    targets: list[str] = field(default_factory=list)


@pytest_asyncio.fixture
async def connect_proxy() -> AsyncIterator[ConnectProxy]:
    proxy = ConnectProxy(port=0)

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def tunnel(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
        if method != "CONNECT":
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
            writer.close()
            return
        proxy.targets.append(target)
        host, port = target.rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(tunnel, "127.0.0.1", 0)
    proxy.port = server.sockets[0].getsockname()[1]
    yield proxy
    server.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(server.wait_closed(), 2)


async def ask(stack: Stack, model: str, *, stream: bool = False) -> httpx.Response:
    body = {"model": model, "stream": stream,
            "messages": [{"role": "user", "content": "hello over TLS [sandbox tokens=3]"}]}
    async with httpx.AsyncClient(base_url=stack.base_url, headers=AUTH, timeout=30) as http:
        return await http.post("/chat/completions", json=body)


async def test_a_trusted_https_upstream_answers_and_an_untrusted_one_is_refused(
    stack: Stack, tls_sandbox: TLSSandbox, start_worker: Callable[..., Proc]
) -> None:
    base = {"OPENAI_BASE_URL": tls_sandbox.url + "/v1", "OPENAI_API_KEY": SANDBOX_KEY}
    start_worker(name="tls-trusting", pool="tls", models="tls-model", SSL_CERT_FILE=tls_sandbox.ca_path, **base)
    start_worker(name="tls-untrusting", pool="tls-untrusted", models="tls-untrusted-model", **base)
    await wait_for_models(stack, {"tls-model", "tls-untrusted-model"})

    response = await ask(stack, "tls-model")  # a whole answer
    assert response.status_code == 200, response.text
    words = response.json()["choices"][0]["message"]["content"]
    assert words.strip()
    streamed = await ask(stack, "tls-model", stream=True)  # and the same answer streamed
    assert streamed.status_code == 200, streamed.text
    chunks = [orjson.loads(line[6:]) for line in streamed.text.split("\n\n") if line.startswith("data: {")]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == words

    refused = await ask(stack, "tls-untrusted-model")
    assert refused.status_code == 502, refused.text
    error = refused.json()["error"]
    assert error["code"] == "upstream_error"
    assert "cannot reach upstream" in error["message"] and "Certificate" in error["message"], error
    assert SANDBOX_KEY not in refused.text


async def test_https_proxy_tunnels_to_a_tls_upstream(
    stack: Stack, tls_sandbox: TLSSandbox, start_worker: Callable[..., Proc], connect_proxy: ConnectProxy
) -> None:
    start_worker(
        name="tls-proxied", pool="tls-proxied", models="tls-proxied-model",
        OPENAI_BASE_URL=tls_sandbox.url + "/v1", OPENAI_API_KEY=SANDBOX_KEY, SSL_CERT_FILE=tls_sandbox.ca_path,
        HTTPS_PROXY=f"http://127.0.0.1:{connect_proxy.port}",
    )
    await wait_for_models(stack, {"tls-proxied-model"})
    response = await ask(stack, "tls-proxied-model")
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"].strip()
    sandbox_port = tls_sandbox.url.rsplit(":", 1)[1]
    assert connect_proxy.targets == [f"127.0.0.1:{sandbox_port}"]  # one tunnel, then kept alive
