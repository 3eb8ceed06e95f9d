"""ChatGPT-API-server's routes (seed 002): POST /api/ask and GET /api/connections.

/api/ask answers in the seed's shape, `{id, response_id, conversation_id, content, error}`, and
fails with its bodies, `{"error": "<text>"}` at its statuses (agent-protocol.md §4.5). It is one
`agent` job for the agent-bridges' pool when any bridge announces a connected agent; else one
ChatGPT web turn (a `chatgpt_web` job, as POST /conversation sends) whose last event becomes the
answer; else 503 "No available clients". The body is read as JSON whatever its Content-Type (the
seed's README uses curl -d); `conversation_id` and `parent_id` come together or not at all.

/api/connections lists every bridge's agents (a request on sy.v1.agents.connections answered by
each bridge), behind ADMIN_KEY: the seed left it open, but it tells who is connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from typing import Any
from urllib.parse import parse_qs

import orjson
from starlette.types import Receive, Scope, Send

import proto
from libs.agents.handshake import new_id
from libs.errors import SwitchyardError
from libs.tokens import estimate_tokens
from services.edge.asgi_io import header, read_body, send_json
from services.edge.dispatch import Exchange
from services.edge.replies import Emitted, Produced
from services.edge.routes.job_route import Answering, DisconnectWatch, JobRoute, answer_exchange, failure_reason
from services.edge.state import EdgeState

Body = dict[str, Any]

AGENT_KIND = "agent"
WEB_KIND = "chatgpt_web"
_FIELDS = ("content", "conversation_id", "parent_id", "message_id")
_INVALID = {"error": "Invalid request"}
_NO_CLIENTS = {"error": "No available clients"}
_GATHER_WAIT = 0.5  # /api/connections: how long the bridges have to answer (they answer from memory)

# the bus's codes as the seed's /api/ask said them (status, body)
_SEED_ERRORS: dict[str, tuple[int, str]] = {
    "agent_conversation_not_found": (500, "Conversation doesn't exists"),
    "agent_gone": (500, "Connection no longer exists"),
    "agent_ping_failed": (503, "Ping failed"),
    "agent_error": (500, "Failed to convert response to ChatGptResponse"),
    "agent_lost": (500, "Failed to read response from the client"),
    "agent_timeout": (500, "Failed to read response from the client"),
    "no_capacity": (503, "No available clients"),
    "accounts_busy": (503, "No available clients"),
    "no_worker": (503, "No available clients"),
}


def seed_error(err: SwitchyardError) -> tuple[int, Body]:
    status, text = _SEED_ERRORS.get(err.code, (err.status, err.message))
    body: Body = {"error": text}
    if err.code in ("agent_lost", "agent_timeout"):
        body["err"] = err.message  # the seed adds its read error here
    return status, body


def _ask(raw: bytes) -> Body | None:
    """The ask's fields (strings; a JSON null reads as "", as Go did), or None for the seed's 400."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, dict):
        return None
    ask: Body = {}
    for name in _FIELDS:
        field = value.get(name)
        if field is None:
            continue
        if not isinstance(field, str):
            return None
        if field:
            ask[name] = field
    if ("conversation_id" in ask) != ("parent_id" in ask):
        return None  # README: "If you want to use either of these, you need to specify both"
    ask.setdefault("content", "")
    return ask


def _web_turn(ask: Body, model: str) -> Body:
    """The ask as one ChatGPT web turn (the backend-api call POST /conversation sends)."""
    json: Body = {
        "action": "next",
        "messages": [{"id": ask.get("message_id") or new_id(), "author": {"role": "user"},
                      "content": {"content_type": "text", "parts": [ask["content"]]}}],
        "parent_message_id": ask.get("parent_id") or new_id(),
        "model": model,
    }
    if ask.get("conversation_id"):
        json["conversation_id"] = ask["conversation_id"]
    return {"method": "POST", "path": "/conversation", "json": json}


def _from_events(last: Body) -> Body:
    message: Body = last["message"] if isinstance(last.get("message"), dict) else {}
    content: Body = message["content"] if isinstance(message.get("content"), dict) else {}
    parts: list[Any] = content["parts"] if isinstance(content.get("parts"), list) else []
    return {"id": "", "response_id": str(message.get("id") or ""),
            "conversation_id": str(last.get("conversation_id") or ""),
            "content": parts[0] if parts and isinstance(parts[0], str) else "", "error": ""}


class ApiAsk(JobRoute):
    def __init__(self, state: EdgeState) -> None:
        super().__init__(state, "api.ask")

    def _agents(self) -> tuple[str, str] | None:
        """(model, pool) of the agent-bridges when any of them holds a connected agent."""
        found = self.state.routing.pool_for_kind(AGENT_KIND)
        if found is None or self.state.routing.live_accounts(found[1])[1] == 0:
            return None
        return found

    async def answer(self, scope: Scope, receive: Receive, send: Send, answering: Answering) -> int:
        try:
            raw = await read_body(receive, self.state.settings.max_body_bytes)
        except SwitchyardError:
            raw = b""
        ask = _ask(raw)
        if ask is None:
            await send_json(send, 400, _INVALID)
            return 400
        try:
            agents = self._agents()
            if agents is not None:
                return await self._run(scope, receive, send, answering, ask, raw, agents, AGENT_KIND)
            web = self.state.routing.pool_for_kind(WEB_KIND)
            if web is not None:
                return await self._run(scope, receive, send, answering, ask, raw, web, WEB_KIND)
        except SwitchyardError as err:
            self.state.metrics.errors.labels(code=err.code).inc()
            answering.end_reason = failure_reason(err)
            status, body = seed_error(err)
            await send_json(send, status, body, err.headers())  # a key's 429 keeps its Retry-After
            return status
        await send_json(send, 503, _NO_CLIENTS)
        return 503

    async def _run(self, scope: Scope, receive: Receive, send: Send, answering: Answering, ask: Body, raw: bytes,
                   route: tuple[str, str], kind: str) -> int:
        model, pool = route
        answering.model_label = self.state.model_label(model)
        answering.prompt_tokens = estimate_tokens(len(raw))
        exchange = await self.open_exchange(scope, answering, streamed=kind == WEB_KIND, model=model, pool=pool,
                                            reserve_prompt=answering.prompt_tokens)
        watch = DisconnectWatch(receive, exchange)
        job_body = ask if kind == AGENT_KIND else _web_turn(ask, model)

        async def respond(tracked_send: Send) -> int:
            await self.state.dispatcher.submit(exchange, kind=kind, model=model, pool=pool, body=job_body)
            status, body = await self._collect(exchange, kind)
            if status == 200:
                answering.completion_tokens = estimate_tokens(len(body["content"]))
            await send_json(tracked_send, status, body)
            return status

        return await answer_exchange(self.state, send, exchange, watch, respond)

    @staticmethod
    async def _collect(exchange: Exchange, kind: str) -> tuple[int, Body]:
        result: Body | None = None
        last: Body | None = None
        async for event in exchange.events():
            if isinstance(event, Produced):
                result = event.body
            elif isinstance(event, Emitted) and isinstance(event.event, dict) and "message" in event.event:
                last = event.event
        if kind == AGENT_KIND:
            if result is None:
                return 500, {"error": "Failed to read response from the client"}
            return 200, result
        if last is not None:
            return 200, _from_events(last)
        # the web turn failed before its first event: its upstream status, the seed's body shape
        status = result.get("status") if result is not None else None
        upstream = result.get("body") if result is not None else None
        detail = upstream.get("detail") if isinstance(upstream, dict) else None
        return (status if isinstance(status, int) and status >= 400 else 502,
                {"error": detail if isinstance(detail, str) else "Failed to read response from the client"})


class ApiConnections:
    """GET /api/connections: `{"connections": [...]}` (`null` with none), behind ADMIN_KEY."""

    def __init__(self, state: EdgeState, admin_key: str) -> None:
        self.state = state
        self._admin_key = admin_key.encode()

    def _given(self, scope: Scope) -> str | None:
        raw = (header(scope, b"authorization") or b"").decode("latin-1")
        scheme, _, token = raw.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        return query.get("admin_key", [None])[0]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._admin_key:  # as the admin routes: no ADMIN_KEY, no such route
            await send_json(send, 404, {"error": {
                "message": f"Unknown request URL: {scope['method']} {scope['path']}.",
                "type": "invalid_request_error", "param": None, "code": "not_found"}})
            return
        given = self._given(scope)
        if given is None or not hmac.compare_digest(given.encode(), self._admin_key):
            await send_json(send, 401, {"error": "Invalid admin key"})
            return
        connections = await self._gather()
        await send_json(send, 200, {"connections": connections or None})

    async def _gather(self) -> list[Body]:
        """Every live bridge's agents: a request each bridge answers, gathered until all have."""
        routing = self.state.routing
        found = routing.pool_for_kind(AGENT_KIND)
        if found is None:
            return []
        expected = routing.live_accounts(found[1])[0]
        nc = self.state.dispatcher.nc
        inbox = nc.new_inbox()
        replies: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_reply(msg: Any) -> None:
            await replies.put(msg.data)

        sub = await nc.subscribe(inbox, cb=on_reply)
        connections: list[Body] = []
        try:
            await nc.publish(proto.AGENT_CONNECTIONS_SUBJECT, orjson.dumps({"type": "connections"}), reply=inbox)
            loop = asyncio.get_running_loop()
            until = loop.time() + _GATHER_WAIT
            for _ in range(expected):
                try:
                    data = await asyncio.wait_for(replies.get(), max(0.0, until - loop.time()))
                except TimeoutError:
                    break
                with contextlib.suppress(orjson.JSONDecodeError, TypeError):
                    listed = orjson.loads(data).get("connections")
                    if isinstance(listed, list):
                        connections.extend(c for c in listed if isinstance(c, dict))
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        return connections
