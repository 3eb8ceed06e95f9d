"""go-chatgpt-api's routes (seed 003), each one `chatgpt_web` job for a chatgpt-web-worker.

    GET   /conversations?offset=0&limit=20     POST /conversation (a turn, streamed as SSE)
    GET   /conversation/{id}                   POST /conversation/gen_title/{id}
    PATCH /conversation/{id} (also POST)       PATCH /conversations (also POST)
    POST  /conversation/message_feedback       POST /auth/login

The edge validates the call (validation_chatgpt.py), publishes one job whose body is the
backend-api call itself, `{method, path, query?, json?}`, with the caller's own ChatGPT access
token as the job's `access_token` when it sent one (middleware.chatgpt_credentials), and relays
the worker's answer as go-chatgpt-api did: a `result` `{status, body}` becomes that status and
body (the upstream's status kept: its users read both); a turn's `event`s become `data: <event>`
lines in order, then `data: [DONE]`. Failures of the gateway's own (validation, no worker, bus,
time limits) are the edge's usual OpenAI-style errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import Receive, Scope, Send

from libs import sse
from libs.errors import (
    ModelNotFound,
    NoWorker,
    SwitchyardError,
    UpstreamProtocolError,
)
from libs.tokens import estimate_tokens
from services.edge.asgi_io import parse_json_object, read_body, send_json
from services.edge.dispatch import Exchange, KeepAlive
from services.edge.middleware import chatgpt_credentials
from services.edge.replies import Emitted, Produced
from services.edge.routes.job_route import Answering, DisconnectWatch, JobRoute, answer_exchange, failure_reason
from services.edge.state import EdgeState
from services.edge.validation_chatgpt import MAX_LIMIT, check_id, query_integer, validate_chatgpt_body

KIND = "chatgpt_web"
Body = dict[str, Any]


def _no_worker() -> NoWorker:
    return NoWorker(
        "No chatgpt-web-worker is running: go-chatgpt-api's routes (/conversation, /conversations, /auth/login) "
        "need one connected to this gateway's NATS."
    )


@dataclass(frozen=True)
class Call:
    """One of go-chatgpt-api's routes: how its request becomes a backend-api call."""

    name: str  # the metrics route label
    method: str  # the upstream's method (a POST on a PATCH route is sent as PATCH)
    path: str  # the upstream path, relative to backend-api; `{id}` is the route's checked id
    body: str | None = None  # validation_chatgpt.CHATGPT_BODIES key; None: no body is read
    listing: bool = False  # GET /conversations: offset and limit
    turn: bool = False  # POST /conversation: native events, streamed


CALLS = {
    "list": Call("chatgpt.conversations", "GET", "/conversations", listing=True),
    "get": Call("chatgpt.conversation", "GET", "/conversation/{id}"),
    "turn": Call("chatgpt.conversation.create", "POST", "/conversation", body="ChatGPTConversationRequest",
                 turn=True),
    "gen_title": Call("chatgpt.gen_title", "POST", "/conversation/gen_title/{id}", body="ChatGPTGenTitleRequest"),
    "update": Call("chatgpt.conversation.update", "PATCH", "/conversation/{id}",
                   body="ChatGPTUpdateConversationRequest"),
    "hide_all": Call("chatgpt.conversations.update", "PATCH", "/conversations",
                     body="ChatGPTHideConversationsRequest"),
    "feedback": Call("chatgpt.message_feedback", "POST", "/conversation/message_feedback",
                     body="ChatGPTFeedbackRequest"),
    "login": Call("chatgpt.login", "POST", "/auth/login", body="ChatGPTLoginRequest"),
}


def _query(scope: Scope) -> dict[str, str]:
    """The query string, each name once (the last value wins, as go-chatgpt-api's Gin did)."""
    raw = scope.get("query_string", b"").decode("latin-1")
    return dict(parse_qsl(raw, keep_blank_values=True))


def _listing_query(scope: Scope) -> dict[str, str]:
    query = _query(scope)
    query["offset"] = str(query_integer(query, "offset", 0, 0, None))
    query["limit"] = str(query_integer(query, "limit", 20, 1, MAX_LIMIT))
    return query


def _result(body: Body) -> tuple[int, Any]:
    """A chatgpt_web result's (status, body), as proto/schemas/v1/chatgpt_web_result.json says."""
    status = body.get("status")
    if type(status) is not int or not 100 <= status <= 599 or "body" not in body:
        raise UpstreamProtocolError("the worker's result holds no upstream status and body")
    return status, body["body"]


class ChatGPTWebRoute(JobRoute):
    def __init__(self, state: EdgeState, call: Call) -> None:
        super().__init__(state, call.name)
        self.call = call

    def _pool(self, model: Any) -> tuple[str, str]:
        """(model, pool) of the job: the body's model when it names one, else any live one."""
        routing = self.state.routing
        if type(model) is str:
            try:
                route = routing.resolve(model, KIND)
            except ModelNotFound as err:
                if routing.pool_for_kind(KIND) is None:
                    raise _no_worker() from None
                err.message += f" The chatgpt-web-workers serve: {', '.join(routing.models_for(KIND))}."
                raise
            return route.model, route.pool
        found = routing.pool_for_kind(KIND)
        if found is None:
            raise _no_worker()
        return found

    async def answer(self, scope: Scope, receive: Receive, send: Send, answering: Answering) -> int:
        call, state = self.call, self.state
        job_body: Body = {"method": call.method, "path": call.path}
        if "{id}" in call.path:
            job_body["path"] = call.path.replace("{id}", check_id(scope["path_params"]["id"], "conversation_id"))
        if call.listing:
            job_body["query"] = _listing_query(scope)
        model: Any = None
        size = 0
        if call.body is not None:
            raw = await read_body(receive, state.settings.max_body_bytes)
            size = len(raw)
            body = parse_json_object(raw)
            model = body.get("model") if call.turn else None
            if type(model) is str:  # labelled before validation, so a 400 on another field carries it
                answering.model_label = state.model_label(model)
            validate_chatgpt_body(call.body, body)
            job_body["json"] = body
        job_model, pool = self._pool(model)
        answering.prompt_tokens = estimate_tokens(size)
        access_token = chatgpt_credentials(scope)[0]
        exchange = await self.open_exchange(scope, answering, streamed=call.turn, model=job_model, pool=pool,
                                            reserve_prompt=estimate_tokens(size))
        watch = DisconnectWatch(receive, exchange)

        async def respond(tracked_send: Send) -> int:
            await state.dispatcher.submit(exchange, kind=KIND, model=job_model, pool=pool, body=job_body,
                                          access_token=access_token)
            if call.turn:
                return await self._relay_events(tracked_send, exchange, answering)
            return await self._relay_result(tracked_send, exchange)

        return await answer_exchange(state, send, exchange, watch, respond)

    async def _relay_result(self, send: Send, exchange: Exchange) -> int:
        result: Body | None = None
        async for event in exchange.events():
            if isinstance(event, Produced):
                result = event.body
            elif isinstance(event, Emitted):
                raise UpstreamProtocolError("the worker answered a backend-api call with stream events")
        if result is None:
            raise UpstreamProtocolError("the worker ended the job without a result")
        status, body = _result(result)
        await send_json(send, status, body)
        return status

    async def _relay_events(self, send: Send, exchange: Exchange, answering: Answering) -> int:
        """A turn's events as go-chatgpt-api relayed them: `data: <event>` each, then `[DONE]`.
        The head waits for the first event, so a failure before it keeps its status."""
        started = False
        result: Body | None = None
        try:
            async for event in exchange.events(keepalive=self.state.settings.timeouts.keepalive):
                if isinstance(event, Emitted):
                    if result is not None:
                        raise UpstreamProtocolError("the worker sent stream events after its result")
                    if not started:
                        await send({"type": "http.response.start", "status": 200, "headers": list(sse.HEADERS)})
                        started = True
                    data = sse.data_event(event.event)
                    # events carry the whole answer so far: the last one's size bounds the answer's
                    answering.completion_tokens = estimate_tokens(len(data))
                    await send({"type": "http.response.body", "body": data, "more_body": True})
                elif isinstance(event, Produced):
                    if started:
                        raise UpstreamProtocolError("the worker sent a result after its stream events")
                    result = event.body  # the turn failed before its first event: its status and body
                elif isinstance(event, KeepAlive) and started:
                    await send({"type": "http.response.body", "body": sse.KEEPALIVE, "more_body": True})
        except SwitchyardError as err:
            if not started:
                raise
            # the head is out: the failure is told in-band, as the generation routes do
            self.state.metrics.errors.labels(code=err.code).inc()
            answering.end_reason = failure_reason(err)
            await send({"type": "http.response.body", "body": sse.data_event(err.body()) + sse.DONE,
                        "more_body": False})
            return err.status
        if not started:
            if result is None:
                raise UpstreamProtocolError("the worker ended the conversation turn without an event or a result")
            status, body = _result(result)
            await send_json(send, status, body)
            return status
        await send({"type": "http.response.body", "body": sse.DONE, "more_body": False})
        return 200
