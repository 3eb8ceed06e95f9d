"""RequestContext does per-request work only for what it uses: without access logs, no timing and
no wrapper around `receive` (one call layer per message the route reads)."""

from __future__ import annotations

import pytest
from starlette.types import Message, Receive, Scope, Send

from services.edge.middleware import REQUEST_ID_KEY, RequestContext


async def receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


@pytest.mark.parametrize("log_requests", [False, True])
async def test_the_route_reads_the_servers_own_receive_unless_access_is_logged(log_requests: bool) -> None:
    seen: list[Receive] = []
    sent: list[Message] = []

    async def route(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(receive)
        await receive()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}
    await RequestContext(route, log_requests=log_requests)(scope, receive, send)
    assert (seen[0] is receive) is (not log_requests)
    assert (b"x-request-id", scope[REQUEST_ID_KEY].encode()) in sent[0]["headers"]  # the id either way
