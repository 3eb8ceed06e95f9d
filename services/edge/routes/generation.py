"""POST /v1/chat/completions and POST /v1/completions, stream and non-stream.

Both are answered the same way: validate, route the model to a pool, publish one job per choice
group (`plan.py`), then stream the worker's deltas (SSE) or assemble them (JSON). Internally
every answer is streamed, so heartbeats, cancel and retry behave alike.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.types import Receive, Scope, Send

from libs import sse
from libs.errors import InvalidRequest, SwitchyardError
from libs.tokens import estimate_tokens
from services.edge.asgi_io import parse_json_object, read_body, send_json
from services.edge.dispatch import Exchange, KeepAlive
from services.edge.middleware import REQUEST_ID_KEY
from services.edge.openai_format import Kind, ResponseBuilder
from services.edge.plan import JobPlan, plan_jobs
from services.edge.replies import Deltas, Described, Finished
from services.edge.routes.job_route import Answering, DisconnectWatch, JobRoute, answer_exchange, failure_reason
from services.edge.state import EdgeState
from services.edge.validation import validate_chat_request, validate_completion_request
from services.edge.validation_sydney import header_cookies

log = logging.getLogger("switchyard.edge.generation")

_VALIDATORS = {"chat": validate_chat_request, "completion": validate_completion_request}


def _stream_start(extra: dict[str, str]) -> dict[str, Any]:
    # a fresh message per response: middleware add headers to it
    headers = list(sse.HEADERS)
    headers.extend((k.encode(), v.encode()) for k, v in extra.items())
    return {"type": "http.response.start", "status": 200, "headers": headers}


def _describe(builder: ResponseBuilder, extra: dict[str, str], described: Described) -> None:
    """The model the upstream says it used becomes the response's `model` (no silent downgrade:
    a web account may answer with another model than asked); the worker's headers go out too."""
    if described.model:
        builder.model = described.model
    extra.update(described.headers)


class GenerationRoute(JobRoute):
    def __init__(self, state: EdgeState, kind: Kind) -> None:
        super().__init__(state, "chat.completions" if kind == "chat" else "completions")
        self.kind = kind

    async def answer(self, scope: Scope, receive: Receive, send: Send, answering: Answering) -> int:
        state = self.state
        raw = await read_body(receive, state.settings.max_body_bytes)
        body = parse_json_object(raw)
        model = body.get("model")
        if type(model) is str:  # labelled before validation, so a 400 on another field carries it
            answering.model_label = state.model_label(model)
        unknown = _VALIDATORS[self.kind](body, max_n=state.settings.max_n)
        if unknown and log.isEnabledFor(logging.DEBUG):
            log.debug("forwarding unknown fields %s", unknown[:10], extra={"request_id": scope[REQUEST_ID_KEY]})
        route = state.routing.resolve(body["model"], self.kind)
        plan = plan_jobs(self.kind, body, route)
        if plan.choices > state.settings.max_n:
            param = "n" if self.kind == "chat" else "prompt"
            raise InvalidRequest(
                f"This request asks for {plan.choices} choices; this gateway allows at most "
                f"{state.settings.max_n} per request (MAX_N).", param=param,
            )
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        exchange = await self.open_exchange(
            scope, answering, streamed=bool(body.get("stream")), model=body["model"], pool=plan.pool,
            reserve_prompt=estimate_tokens(len(raw)),
            reserve_output=limit * plan.choices if type(limit) is int else None,
        )
        return await self._answer(receive, send, answering, exchange, body, plan,
                                  header_cookies(scope, route.features))

    async def _answer(
        self, receive: Receive, send: Send, answering: Answering, exchange: Exchange, body: dict[str, Any],
        plan: JobPlan, cookies: str | None,
    ) -> int:
        watch = DisconnectWatch(receive, exchange)
        builder = ResponseBuilder(self.kind, body["model"], plan.choices)

        async def respond(tracked_send: Send) -> int:
            for job in plan.jobs:
                await self.state.dispatcher.submit(
                    exchange, kind=job.kind, model=plan.model, pool=plan.pool, body=job.body,
                    index_offset=job.index_offset, cookies=cookies,
                )
            if body.get("stream"):
                return await self._stream(tracked_send, exchange, builder, plan, body, answering)
            return await self._respond(tracked_send, exchange, builder, plan)

        status = 0
        try:
            status = await answer_exchange(self.state, send, exchange, watch, respond)
            return status
        finally:
            # a whole (non-streamed) answer reached the client only if it was sent: an error or a
            # client gone got none of what the jobs produced
            delivered = bool(body.get("stream")) or status == 200
            self._count_tokens(builder, len(plan.jobs), answering, delivered)

    async def _respond(self, send: Send, exchange: Exchange, builder: ResponseBuilder, plan: JobPlan) -> int:
        extra: dict[str, str] = {}
        async for event in exchange.events():
            if isinstance(event, Deltas):
                builder.absorb(plan.convert(event.choices))
            elif isinstance(event, Finished):
                builder.add_usage(event.usage)
                builder.system_fingerprint = event.system_fingerprint or builder.system_fingerprint
            elif isinstance(event, Described):
                _describe(builder, extra, event)
        await send_json(send, 200, builder.response(), extra)
        return 200

    async def _stream(
        self, send: Send, exchange: Exchange, builder: ResponseBuilder, plan: JobPlan, body: dict[str, Any],
        answering: Answering,
    ) -> int:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        started = False
        extra: dict[str, str] = {}
        try:
            async for event in exchange.events(keepalive=self.state.settings.timeouts.keepalive):
                if isinstance(event, Deltas):
                    chunk = builder.chunk(plan.convert(event.choices))
                    if include_usage:
                        chunk["usage"] = None  # OpenAI marks every chunk but the last this way
                    if not started:
                        # Headers wait for the first token, so errors before it keep their status code.
                        await send(_stream_start(extra))
                        started = True
                    await send({"type": "http.response.body", "body": sse.data_event(chunk), "more_body": True})
                elif isinstance(event, Described):
                    if not started:  # what arrives once the head is out cannot change it
                        _describe(builder, extra, event)
                elif isinstance(event, Finished):
                    builder.add_usage(event.usage)
                elif isinstance(event, KeepAlive):
                    if not started:
                        await send(_stream_start(extra))
                        started = True
                    await send({"type": "http.response.body", "body": sse.KEEPALIVE, "more_body": True})
        except SwitchyardError as err:
            if not started:
                raise
            # After the first token there is no retry: finish every choice with "length", say why in-band.
            self.state.metrics.errors.labels(code=err.code).inc()
            answering.end_reason = failure_reason(err)
            tail = b""
            closing = builder.closing_chunk("length")
            if closing is not None:
                tail += sse.data_event(closing)
            tail += sse.data_event(err.body()) + sse.DONE
            await send({"type": "http.response.body", "body": tail, "more_body": False})
            return err.status
        if not started:
            await send(_stream_start(extra))
        tail = sse.data_event(builder.usage_chunk()) if include_usage else b""
        await send({"type": "http.response.body", "body": tail + sse.DONE, "more_body": False})
        return 200

    def _count_tokens(self, builder: ResponseBuilder, jobs: int, answering: Answering, delivered: bool) -> None:
        """Record the usage actually delivered: the upstream's where every job reported it; else
        (estimated upstream usage, or an answer cut short by a disconnect or failure) an estimate
        from what reached the client, marked as such. `delivered`: whether what the jobs produced
        reached the client (a non-streamed answer that failed sent none of it)."""
        tokens = self.state.metrics.tokens_by
        if "length" in builder.finished.values() and answering.end_reason is None:
            answering.end_reason = "length"
        prompt = builder.usage["prompt_tokens"]
        if not delivered:
            answering.prompt_tokens, answering.completion_tokens = prompt or answering.reserve_prompt, 0
            tokens["prompt", "estimated"].inc(builder.usage["prompt_tokens"])
            return
        if builder.usage_reports == jobs and not builder.usage_estimated:
            completion = builder.usage["completion_tokens"]
            tokens["prompt", "upstream"].inc(prompt)
            tokens["completion", "upstream"].inc(completion)
            answering.tokens_estimated = False
        else:
            completion = max(builder.usage["completion_tokens"], estimate_tokens(builder.delivered_chars))
            prompt = prompt or answering.reserve_prompt  # no usage arrived: the body's estimate
            tokens["prompt", "estimated"].inc(builder.usage["prompt_tokens"])
            tokens["completion", "estimated"].inc(completion)
        answering.prompt_tokens, answering.completion_tokens = prompt, completion
