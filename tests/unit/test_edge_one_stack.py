"""Every route of the edge goes through one Starlette middleware stack: a middleware added to the
app sees the generation routes' SDK traffic too (no bypass that a later middleware would miss)."""

from __future__ import annotations

from typing import ClassVar

import httpx
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from services.edge.app import create_app
from services.edge.settings import EdgeSettings

KEY = "sk-one-stack-test"


class Spy:
    """A middleware added after the fact, as the next person would add one."""

    seen: ClassVar[list[tuple[str, str]]] = []

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            Spy.seen.append((scope["method"], scope["path"]))
        await self.app(scope, receive, send)


async def test_a_middleware_added_later_sees_sdk_posts_to_the_generation_routes() -> None:
    app, _ = create_app(EdgeSettings.from_env({"AUTH_TOKEN": KEY}))
    assert isinstance(app, Starlette)  # the app uvicorn runs is the one stack, not a wrapper around it
    app.add_middleware(Spy)
    Spy.seen.clear()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://edge") as client:
        # no Origin header: an SDK's request. Invalid JSON is answered before any bus is needed.
        for path in ("/v1/chat/completions", "/v1/completions"):
            reply = await client.post(path, content=b"{not json", headers={"authorization": f"Bearer {KEY}"})
            assert reply.status_code == 400 and reply.json()["error"]["code"] == "invalid_json"
            assert "x-request-id" in reply.headers  # RequestContext ran
        unauthorised = await client.post("/v1/chat/completions", content=b"{}")
        assert unauthorised.status_code == 401  # BearerAuth ran
        browser = await client.post("/v1/chat/completions", content=b"{not json",
                                    headers={"authorization": f"Bearer {KEY}", "origin": "https://app.example"})
        assert browser.headers["access-control-allow-origin"] == "*"  # CORS ran where it has work
    assert Spy.seen == [("POST", "/v1/chat/completions"), ("POST", "/v1/completions"),
                        ("POST", "/v1/chat/completions"), ("POST", "/v1/chat/completions")]
