"""The edge's access log line for a client that went away before any response: status 499 and
`disconnected: true` (nginx's convention), never status 0."""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson
import pytest

from tests.conftest import AUTH_KEY, Stack


async def _access_entry(stack: Stack, request_id: str, within: float = 15.0) -> dict[str, object]:
    log_path = stack.log_dir / "edge.log"
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for line in log_path.read_text().splitlines():
            if request_id in line and '"switchyard.edge.access"' in line:
                entry: dict[str, object] = orjson.loads(line)
                return entry
        await asyncio.sleep(0.05)
    raise AssertionError(f"no access line for {request_id}")


@pytest.mark.parametrize("stream", [False, True])
async def test_a_client_gone_before_the_response_is_logged_as_disconnected(stack: Stack, stream: bool) -> None:
    request_id = f"gone-early-{stream}-{time.monotonic_ns()}"
    mark = request_id
    body = orjson.dumps({"model": "sandbox-chat", "stream": stream,
                         "messages": [{"role": "user", "content": f"[sandbox hang=1 mark={mark}] hi"}]})
    host, port = stack.edge_url.removeprefix("http://").split(":")
    _, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                 b"authorization: Bearer %s\r\nx-request-id: %s\r\ncontent-length: %d\r\n\r\n%s"
                 % (AUTH_KEY.encode(), request_id.encode(), len(body), body))
    await writer.drain()
    # the request reached the upstream (which never answers): now the client goes away
    async with httpx.AsyncClient(base_url=stack.sandbox_url, timeout=5) as sandbox:
        deadline = time.monotonic() + 15
        while not (await sandbox.get("/_sandbox/events", params={"mark": mark})).json()["events"]:
            assert time.monotonic() < deadline, "the request never reached the sandbox"
            await asyncio.sleep(0.02)
    writer.close()
    await writer.wait_closed()
    entry = await _access_entry(stack, request_id)
    assert entry["status"] == 499 and entry["disconnected"] is True, entry
    assert "client_disconnected" in str(entry["msg"])


async def test_a_finished_request_is_not_marked_disconnected(stack: Stack) -> None:
    request_id = f"finished-{time.monotonic_ns()}"
    async with httpx.AsyncClient(timeout=30) as http:
        reply = await http.post(stack.base_url + "/chat/completions", headers={
            "authorization": f"Bearer {AUTH_KEY}", "x-request-id": request_id,
        }, json={"model": "sandbox-chat", "messages": [{"role": "user", "content": "hi"}]})
    assert reply.status_code == 200
    entry = await _access_entry(stack, request_id)
    assert entry["status"] == 200 and "disconnected" not in entry
