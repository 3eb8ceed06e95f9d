"""SydneyQt's web API (seed 000) on the edge: Bing Chat turns, image uploads and image creation.

    POST /chat/stream    JSON ChatStreamRequest -> SSE `event: <type>` / `data: <JSON string>`
    POST /image/upload   multipart/form-data file (+ cookies) -> text/plain, the image's Bing URL
    POST /image/create   JSON {image: {text, url}, cookies?} -> application/json GenerateImageResult

Each call is one job: a `sydney` job for a sydney-worker (body `{op: "chat", ...}` or `{op:
"upload", ...}`), a `bing_image` job for image-worker's Bing backend. A caller's own `cookies`
travel in the job's `cookies` field, never in its body, and are never logged or echoed. A turn's
native events `{type, text}` become SydneyQt's SSE events as they arrive; the head waits for the
first one (or the first keep-alive), so a failure before it is a real HTTP error with its own
status (429 accounts_busy, 502 upstream_error, 503 no_worker, ...); a failure after it is one
last `event: error`. Failures of the gateway's own are the edge's usual OpenAI-style errors.
"""

from __future__ import annotations

import base64
import re
from typing import Any

import orjson
from starlette.types import Receive, Scope, Send

from libs import sse
from libs.errors import InvalidRequest, ModelNotFound, NoWorker, SwitchyardError, UpstreamProtocolError
from libs.tokens import estimate_tokens
from services.edge.asgi_io import parse_json_object, read_body, send_bytes
from services.edge.dispatch import Exchange, KeepAlive
from services.edge.multipart_form import read_form
from services.edge.replies import Emitted, Produced
from services.edge.routes.job_route import Answering, DisconnectWatch, JobRoute, answer_exchange, failure_reason
from services.edge.state import EdgeState
from services.edge.validation_sydney import (
    caller_cookies,
    canonical_style,
    is_bing_image_result,
    is_sydney_result,
    sniff_image,
    validate_sydney_body,
)

KIND = "sydney"
IMAGE_KIND = "bing_image"
IMAGE_MODEL = "bing-image-creator"
Body = dict[str, Any]

_STREAM_HEAD = [
    (b"content-type", b"text/event-stream; charset=UTF-8"),  # SydneyQt's own spelling
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx and friends must not buffer the stream
]
_TEXT = [(b"content-type", b"text/plain; charset=UTF-8")]
_JSON = [(b"content-type", b"application/json; charset=UTF-8")]
_EVENT_TYPE = re.compile(r"[a-z_]+")
_UPLOAD_PARTS = frozenset({"file", "cookies"})


def _no_sydney_worker() -> NoWorker:
    return NoWorker("No sydney-worker is running: SydneyQt's routes /chat/stream and /image/upload need one "
                    "connected to this gateway's NATS.")


def _no_image_worker() -> NoWorker:
    return NoWorker(f"No image-worker with its Bing backend is running: /image/create needs one serving "
                    f"'{IMAGE_MODEL}' connected to this gateway's NATS.")


def sse_event(event: Any) -> bytes:
    """A native event `{type, text}` as SydneyQt wrote it: `data` is always a JSON string literal."""
    kind, text = event.get("type"), event.get("text")
    if type(kind) is not str or _EVENT_TYPE.fullmatch(kind) is None or type(text) is not str:
        raise UpstreamProtocolError("the worker sent a chat event without a lower-case `type` and a string `text`")
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(text) + b"\n\n"


def error_event(message: str) -> bytes:
    return b"event: error\ndata: " + orjson.dumps(message) + b"\n\n"


class SydneyRoute(JobRoute):
    """What the three routes share: the pool of their kind, and one job answered by one result."""

    def _resolve(self, model: str, kind: str) -> tuple[str, str]:
        routing = self.state.routing
        try:
            route = routing.resolve(model, kind)
        except ModelNotFound as err:
            if routing.pool_for_kind(kind) is None:
                raise (_no_sydney_worker() if kind == KIND else _no_image_worker()) from None
            err.message += f" The workers of {kind} serve: {', '.join(routing.models_for(kind))}."
            raise
        return route.model, route.pool

    async def _one_job(self, scope: Scope, receive: Receive, send: Send, answering: Answering, *, kind: str,
                       model: str, pool: str, body: Body, cookies: str | None, answer: Any) -> int:
        """Publish the job, wait for its one result, and answer with `answer(send, result)`."""
        state = self.state
        exchange = await self.open_exchange(scope, answering, streamed=False, model=model, pool=pool)
        watch = DisconnectWatch(receive, exchange)

        async def respond(tracked_send: Send) -> int:
            await state.dispatcher.submit(exchange, kind=kind, model=model, pool=pool, body=body, cookies=cookies)
            result: Body | None = None
            async for event in exchange.events():
                if isinstance(event, Produced):
                    result = event.body
                elif isinstance(event, Emitted):
                    raise UpstreamProtocolError(f"the worker answered a {kind} call with stream events")
            if result is None:
                raise UpstreamProtocolError("the worker ended the job without a result")
            status: int = await answer(tracked_send, result)
            return status

        return await answer_exchange(state, send, exchange, watch, respond)


class ChatStream(SydneyRoute):
    """POST /chat/stream: one Bing Chat turn, its events relayed as SydneyQt's SSE."""

    def __init__(self, state: EdgeState) -> None:
        super().__init__(state, "sydney.chat.stream")

    async def answer(self, scope: Scope, receive: Receive, send: Send, answering: Answering) -> int:
        state = self.state
        body = validate_sydney_body(
            "SydneyChatStreamRequest", parse_json_object(await read_body(receive, state.settings.max_body_bytes)))
        style = canonical_style(body.get("conversationStyle"))
        model = f"sydney-{style.lower()}"
        answering.model_label = state.model_label(model)
        job_model, pool = self._resolve(model, KIND)
        job: Body = {"op": "chat", "prompt": body["prompt"], "context": body.get("context") or ""}
        if body.get("imageUrl"):
            job["imageUrl"] = body["imageUrl"]
        job.update(noSearch=bool(body.get("noSearch")), conversationStyle=style,
                   gpt4turbo=bool(body.get("gpt4turbo")), classic=bool(body.get("classic")),
                   plugins=body.get("plugins") or [])
        if body.get("conversation") is not None:
            job["conversation"] = body["conversation"]
        cookies = caller_cookies(body.get("cookies"), "'cookies'", "cookies")
        answering.prompt_tokens = estimate_tokens(len(job["prompt"]) + len(job["context"]))
        exchange = await self.open_exchange(scope, answering, streamed=True, model=model, pool=pool,
                                            reserve_prompt=answering.prompt_tokens)
        watch = DisconnectWatch(receive, exchange)

        async def respond(tracked_send: Send) -> int:
            await state.dispatcher.submit(exchange, kind=KIND, model=job_model, pool=pool, body=job, cookies=cookies)
            return await self._relay(tracked_send, exchange, answering)

        return await answer_exchange(state, send, exchange, watch, respond)

    async def _relay(self, send: Send, exchange: Exchange, answering: Answering) -> int:
        started = False
        delivered = 0
        try:
            async for event in exchange.events(keepalive=self.state.settings.timeouts.keepalive):
                if isinstance(event, Emitted):
                    chunk = sse_event(event.event)
                    if event.event.get("type") == "message":  # the answer's text, delta by delta
                        delivered += len(str(event.event.get("text") or ""))
                        answering.completion_tokens = estimate_tokens(delivered)
                    if not started:
                        await send({"type": "http.response.start", "status": 200, "headers": list(_STREAM_HEAD)})
                        started = True
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                elif isinstance(event, Produced):
                    raise UpstreamProtocolError("the worker answered a chat turn with a result")
                elif isinstance(event, KeepAlive):
                    # a proxy between would close a silent connection: the head goes out with the first
                    # keep-alive, and a failure after it is told in-band
                    if not started:
                        await send({"type": "http.response.start", "status": 200, "headers": list(_STREAM_HEAD)})
                        started = True
                    await send({"type": "http.response.body", "body": sse.KEEPALIVE, "more_body": True})
        except SwitchyardError as err:
            if not started:
                raise
            # the head is out: SydneyQt's last event, `error`
            self.state.metrics.errors.labels(code=err.code).inc()
            answering.end_reason = failure_reason(err)
            await send({"type": "http.response.body", "body": error_event(err.message), "more_body": False})
            return err.status
        if not started:  # a turn without a single event: an empty stream, as SydneyQt's was
            await send({"type": "http.response.start", "status": 200, "headers": list(_STREAM_HEAD)})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return 200


class ImageUpload(SydneyRoute):
    """POST /image/upload: an image for a later turn's `imageUrl`, uploaded to Bing by a sydney-worker."""

    def __init__(self, state: EdgeState) -> None:
        super().__init__(state, "sydney.image.upload")

    async def answer(self, scope: Scope, receive: Receive, send: Send, answering: Answering) -> int:
        state = self.state
        form = await read_form(scope, receive, state.settings.sydney_upload_max_bytes, _UPLOAD_PARTS, "file")
        image = form.parts.get("file")
        if image is None:
            raise InvalidRequest("Missing required parameter: 'file' (a multipart/form-data file part).",
                                 param="file", code="missing_required_parameter")
        if not image:
            raise InvalidRequest("'file' is empty.", param="file", code="invalid_value")
        content_type = sniff_image(image)
        if content_type is None:
            raise InvalidRequest("'file' must be a PNG, JPEG, GIF or WEBP image.", param="file",
                                 code="invalid_image_format")
        try:
            raw_cookies = form.parts.get("cookies", b"").decode()
        except UnicodeDecodeError:
            raise InvalidRequest("'cookies' must be UTF-8 text.", param="cookies", code="invalid_value") from None
        cookies = caller_cookies(raw_cookies, "'cookies'", "cookies")
        found = state.routing.pool_for_kind(KIND)
        if found is None:
            raise _no_sydney_worker()
        model, pool = found
        answering.model_label = state.model_label(model)
        body = {"op": "upload", "image": base64.b64encode(image).decode(), "content_type": content_type}

        async def answer(send: Send, result: Body) -> int:
            if not is_sydney_result(result):
                raise UpstreamProtocolError("the worker's upload result is not {url}")
            await send_bytes(send, 200, result["url"].encode(), _TEXT)
            return 200

        return await self._one_job(scope, receive, send, answering, kind=KIND, model=model, pool=pool, body=body,
                                   cookies=cookies, answer=answer)


class ImageCreate(SydneyRoute):
    """POST /image/create: Bing Image Creator's images for a GenerativeImage a turn produced."""

    def __init__(self, state: EdgeState) -> None:
        super().__init__(state, "sydney.image.create")

    async def answer(self, scope: Scope, receive: Receive, send: Send, answering: Answering) -> int:
        state = self.state
        body = validate_sydney_body(
            "SydneyImageCreateRequest", parse_json_object(await read_body(receive, state.settings.max_body_bytes)))
        answering.model_label = state.model_label(IMAGE_MODEL)
        model, pool = self._resolve(IMAGE_MODEL, IMAGE_KIND)
        image = body["image"]
        job = {"image": {"text": image["text"], "url": image["url"]}}
        cookies = caller_cookies(body.get("cookies"), "'cookies'", "cookies")

        async def answer(send: Send, result: Body) -> int:
            if not is_bing_image_result(result):
                raise UpstreamProtocolError("the worker's image creation result is not a GenerateImageResult")
            await send_bytes(send, 200, orjson.dumps(result), _JSON)
            return 200

        return await self._one_job(scope, receive, send, answering, kind=IMAGE_KIND, model=model, pool=pool,
                                   body=job, cookies=cookies, answer=answer)
