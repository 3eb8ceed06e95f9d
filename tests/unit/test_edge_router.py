"""The edge's router finds plain routes by a dict lookup, with the same outcome as Starlette's."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from services.edge.app import create_app
from services.edge.router import EdgeApp, ExactPathRouter
from services.edge.settings import EdgeSettings


class Endpoint:
    """Answers with what routing left in the scope."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        seen = f"{self.name} {scope['route'].path} {scope['endpoint'] is self} {scope['path_params']}"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": seen.encode()})


def routes() -> list[Route]:
    return [
        Route("/a", Endpoint("a"), methods=["POST"]),
        Route("/a", Endpoint("a-again"), methods=["POST"]),  # never reached: the first one wins
        Route("/b", Endpoint("b"), methods=["GET"]),
        Route("/m/{name:path}", Endpoint("m"), methods=["GET"]),
        Route("/c", Endpoint("c"), methods=["GET"]),  # after a pattern: Starlette's matching decides
    ]


async def answers(app: Any) -> list[tuple[int, str]]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://edge") as client:
        replies = [await client.post("/a"), await client.get("/b"), await client.head("/b"), await client.get("/a"),
                   await client.get("/m/x/y"), await client.get("/c"), await client.get("/nowhere")]
    return [(r.status_code, r.text) for r in replies]


async def test_the_same_answers_as_starlettes_router() -> None:
    assert await answers(EdgeApp(routes=routes())) == await answers(Starlette(routes=routes()))


def test_only_the_plain_routes_ahead_of_a_pattern_are_looked_up() -> None:
    router = ExactPathRouter(routes())
    assert sorted(router._exact) == [("/a", "POST"), ("/b", "GET"), ("/b", "HEAD")]
    assert router._exact[("/a", "POST")].endpoint.name == "a"  # type: ignore[attr-defined]


async def test_the_generation_routes_are_found_without_matching_each_route(monkeypatch: pytest.MonkeyPatch) -> None:
    tried: list[str] = []
    matches = Route.matches

    def spy(self: Route, scope: Scope) -> Any:
        tried.append(self.path)
        return matches(self, scope)

    monkeypatch.setattr(Route, "matches", spy)
    app, _ = create_app(EdgeSettings.from_env({}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://edge") as client:
        for path in ("/v1/chat/completions", "/v1/completions"):
            reply = await client.post(path, content=b"{not json")  # answered before any bus is needed
            assert reply.status_code == 400 and reply.json()["error"]["code"] == "invalid_json"
        assert tried == []
        await client.get("/v1/models/x")  # a route with a pattern: matched route by route
    assert "/v1/models/{model:path}" in tried
