"""POST /v1/embeddings, /v1/images/generations and /v1/moderations: one job, one result.

Each is answered alike: validate the body with the route's table (validation.py), route its model
and kind to a pool, publish one job, and answer with the `result` the worker sends, which is
OpenAI's response body for the route (proto/schemas/v1/<kind>_result.json). The edge only sets
`model` to the id the client asked for (an alias stays an alias) and turns an image the worker
stored into a URL this edge serves (routes/images.py). A unary job is never streamed to the
client: the total time limit bounds it, and the worker's heartbeats show it is alive meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.types import Receive, Scope, Send

from libs.errors import ModelNotFound, ReplyGap, UpstreamProtocolError
from libs.tokens import estimate_tokens
from services.edge.asgi_io import header, parse_json_object, read_body, send_json
from services.edge.dispatch import ClientGone
from services.edge.replies import Finished, Produced
from services.edge.routes.images import image_url
from services.edge.routes.job_route import Answering, DisconnectWatch, JobRoute
from services.edge.state import EdgeState
from services.edge.validation_sydney import header_cookies

Body = dict[str, Any]


@dataclass(frozen=True)
class UnarySpec:
    kind: str  # the job kind (proto.KINDS)
    route_name: str  # the metrics label
    validate: Callable[[Body], object]  # raises InvalidRequest
    # the model when the body names none (None: `model` is required, the validator says so)
    default_model: Callable[[EdgeState], str] | None = None
    # what to tell an operator when no worker serves the model
    not_found_hint: str = ""


def _finish(result: Body, body: Body, scope: Scope, state: EdgeState) -> Body:
    """The worker's result as the client gets it: its `model`, and URLs for stored images."""
    response = dict(result)
    if "model" in response or "object" in response:  # embeddings and moderations name the model
        response["model"] = body["model"]
    data = response.get("data")
    if isinstance(data, list) and any(_stored(item) for item in data):
        base = state.settings.public_base_url or _request_base(scope)
        response["data"] = [_with_url(item, base) for item in data]
    return response


def _stored(item: Any) -> bool:
    """An image the worker stored (an embedding's `object` is the string "embedding")."""
    return isinstance(item, dict) and isinstance(item.get("object"), dict)


def _with_url(item: Any, base: str) -> Any:
    if not _stored(item):
        return item
    shown = {k: v for k, v in item.items() if k != "object"}
    shown["url"] = image_url(base, str(item["object"]["name"]))
    return shown


def _request_base(scope: Scope) -> str:
    """scheme://host as the client reached us (its Host header), for URLs it can follow."""
    host = (header(scope, b"host") or b"").decode("latin-1").strip()
    if not host:
        server = scope.get("server") or ("127.0.0.1", 80)
        host = f"{server[0]}:{server[1]}"
    return f"{scope.get('scheme', 'http')}://{host}"


class UnaryRoute(JobRoute):
    def __init__(self, state: EdgeState, spec: UnarySpec) -> None:
        super().__init__(state, spec.route_name)
        self.spec = spec

    async def answer(self, scope: Scope, receive: Receive, send: Send, answering: Answering) -> int:
        state, spec = self.state, self.spec
        raw = await read_body(receive, state.settings.max_body_bytes)
        body = parse_json_object(raw)
        if spec.default_model is not None and body.get("model") is None:
            body["model"] = spec.default_model(state)
        if type(body.get("model")) is str:  # labelled before validation, so a 400 on another field carries it
            answering.model_label = state.model_label(body["model"])
        spec.validate(body)
        try:
            route = state.routing.resolve(body["model"], spec.kind)
        except ModelNotFound as err:
            err.message += spec.not_found_hint
            raise
        exchange = await self.open_exchange(scope, answering, streamed=False, model=body["model"], pool=route.pool,
                                            reserve_prompt=estimate_tokens(len(raw)), reserve_output=0)
        watch = DisconnectWatch(receive, exchange)
        try:
            await state.dispatcher.submit(exchange, kind=spec.kind, model=route.model, pool=route.pool, body=body,
                                          cookies=header_cookies(scope, route.features))
            result: Body | None = None
            usage: Body | None = None
            async for event in exchange.events():
                if isinstance(event, Produced):
                    result = event.body
                elif isinstance(event, Finished):
                    usage = event.usage
            if result is None:
                raise UpstreamProtocolError("the worker ended the job without a result")
            await send_json(send, 200, _finish(result, body, scope, state))
            self._count_tokens(usage, answering)
            return 200
        except ClientGone:
            return 499  # nginx's "client closed request"; nothing can be sent
        except asyncio.CancelledError:
            if not exchange.take_overflow():
                raise
            raise ReplyGap("the worker sent more replies than one request may buffer") from None
        finally:
            await watch.stop()
            await exchange.close()

    def _count_tokens(self, usage: Body | None, answering: Answering) -> None:
        if usage and isinstance(usage.get("prompt_tokens"), int):
            estimated = bool(usage.get("estimated"))
            self.state.metrics.tokens_by["prompt", "estimated" if estimated else "upstream"].inc(usage["prompt_tokens"])
            answering.prompt_tokens, answering.tokens_estimated = usage["prompt_tokens"], estimated
        else:  # an image or a moderation: no token figure from the upstream
            answering.prompt_tokens = answering.reserve_prompt
