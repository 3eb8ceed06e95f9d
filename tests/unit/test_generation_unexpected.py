"""A bug inside the edge still answers with an OpenAI-shaped 500 and a request id to find it by."""

from __future__ import annotations

import orjson
from prometheus_client import CollectorRegistry
from starlette.types import Message

from services.edge.metrics import EdgeMetrics
from services.edge.middleware import REQUEST_ID_KEY
from services.edge.routes.generation import GenerationRoute
from services.edge.routing import Route, RoutingTable
from services.edge.settings import EdgeSettings
from services.edge.state import EdgeState


class BrokenRouting(RoutingTable):
    def resolve(self, requested: str, kind: str = "chat") -> Route:
        raise RuntimeError("a bug")


async def test_unexpected_exception_is_an_openai_500() -> None:
    settings = EdgeSettings.from_env({})
    state = EdgeState(settings, BrokenRouting(settings.routing), EdgeMetrics(CollectorRegistry()))
    body = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": [],
             REQUEST_ID_KEY: "req-bug-1"}
    await GenerationRoute(state, "chat")(scope, receive, send)
    assert sent[0]["status"] == 500
    error = orjson.loads(sent[1]["body"])["error"]
    assert error["code"] == "internal_error" and "req-bug-1" in error["message"]
    assert set(error) == {"message", "type", "param", "code"}
