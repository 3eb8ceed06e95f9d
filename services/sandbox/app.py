"""The sandbox as a raw ASGI callable: path routing, /v1/models, and the /_sandbox control endpoints."""

from __future__ import annotations

import os
import time
from urllib.parse import parse_qs

import orjson

from . import bing, directives, embeddings, images, moderations, payloads
from .asgi import TEXT, ClientGone, Receive, Scope, Send, header, read_body, respond
from .chatgpt import ChatGPT
from .completions import handle
from .config import Settings
from .directives import DirectiveError, Directives
from .front import send_refusal, serve
from .parse import model_not_found
from .state import State

# names the process that answered, as the gateway's services do (libs/probes.py; the sandbox
# shares no code with the gateway), so whoever started it knows it reached this process
_PID = [(b"x-switchyard-pid", str(os.getpid()).encode())]
_CHATGPT_PREFIXES = ("/backend-api/", "/_sandbox/chatgpt/")


class Sandbox:
    def __init__(self, settings: Settings) -> None:
        self.state = State(settings)
        self.started = int(time.time())
        self.models = settings.listed_models()
        self._served = frozenset(self.models)
        # the one-shot routes: path -> (validate the body, build the answer)
        self._embedding_job = embeddings.job_parser(settings)
        self._image_job = images.job_parser(settings)
        self._moderation_job = moderations.job_parser(settings)
        self.chatgpt = ChatGPT(settings.chatgpt_models, settings.chatgpt_token_ttl)  # the ChatGPT web fake
        self.bing = bing.Bing(settings.bing_conversation_ttl)  # the Bing Chat (Sydney) fake

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":  # only the Bing fake's ChatHub speaks websocket
            await self.bing(scope, receive, send)
        elif kind == "lifespan":  # normally off; answered anyway so any ASGI server can host us
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        if path == "/v1/chat/completions" or path == "/v1/completions":
            if method == "POST":
                await handle(self.state, scope, receive, send, chat=path == "/v1/chat/completions")
            else:
                await _not_allowed(send)
        elif path == "/v1/embeddings":
            if method == "POST":
                await serve(self.state, scope, receive, send, self._embedding_job, embeddings.answer)
            else:
                await _not_allowed(send)
        elif path == "/v1/images/generations":
            if method == "POST":
                state = self.state

                def image_answer(job: images.ImageJob, d: Directives) -> bytes:
                    return images.answer(state, scope, job, d)

                await serve(state, scope, receive, send, self._image_job, image_answer)
            else:
                await _not_allowed(send)
        elif path == "/v1/moderations":
            if method == "POST":
                state = self.state

                def moderation_answer(job: moderations.ModerationJob, d: Directives) -> bytes:
                    return moderations.answer(state, job, d)

                await serve(state, scope, receive, send, self._moderation_job, moderation_answer)
            else:
                await _not_allowed(send)
        elif path.startswith(images.URL_PREFIX):
            await self._image(send, method, path)
        elif path.startswith("/v1/models"):
            await self._models(scope, send, method, path)
        elif path == "/" or path == "/healthz":
            await respond(send, 200, b"OK", TEXT, _PID)
        elif path == "/_sandbox/config":
            await self._config(send, receive, method)
        elif path == "/_sandbox/events":
            await self._events(scope, send, method)
        elif path.startswith(_CHATGPT_PREFIXES) or path in ("/api/auth/session", "/auth/login"):
            await self.chatgpt(scope, receive, send)
        elif bing.handles(path):
            await self.bing(scope, receive, send)
        else:
            body = payloads.error_body(f"Unknown path {path} (sandbox)", "invalid_request_error", "unknown_url")
            await respond(send, 404, body)

    async def _models(self, scope: Scope, send: Send, method: str, path: str) -> None:
        if method != "GET":
            await _not_allowed(send)
        elif not self.state.authorized(header(scope, b"authorization")):
            await respond(send, 401, payloads.status_error(401))
        elif path in ("/v1/models", "/v1/models/"):
            await respond(send, 200, payloads.models_list(self.models, self.started))
        else:
            model = path.removeprefix("/v1/models/")
            if model in self._served:
                await respond(send, 200, orjson.dumps(payloads.model_object(model, self.started)))
            else:
                await send_refusal(send, model_not_found(model), None)

    async def _image(self, send: Send, method: str, path: str) -> None:
        """A stored PNG of a `url` answer. No API key, like a provider's signed CDN link: the id is the secret."""
        if method != "GET":
            await _not_allowed(send)
            return
        image_id = images.stored_id(path)
        image = self.state.images.get(image_id) if image_id is not None else None
        if image is None:
            body = payloads.error_body("No such image, or it has expired (sandbox).", "invalid_request_error",
                                       "not_found")
            await respond(send, 404, body)
        else:
            await respond(send, 200, image, b"image/png")

    async def _config(self, send: Send, receive: Receive, method: str) -> None:
        """GET shows the defaults; POST replaces them ({} resets). Per-request directives still win."""
        if method == "POST":
            try:
                self.state.defaults = directives.from_config(orjson.loads(await read_body(receive)))
            except ClientGone:
                return
            except (orjson.JSONDecodeError, DirectiveError) as exc:
                await respond(send, 400, payloads.error_body(str(exc), "invalid_request_error"))
                return
        elif method != "GET":
            await _not_allowed(send)
            return
        await respond(send, 200, orjson.dumps(self.state.defaults))

    async def _events(self, scope: Scope, send: Send, method: str) -> None:
        if method == "GET":
            marks = parse_qs(scope["query_string"].decode("latin-1")).get("mark")
            events = self.state.events.query(marks[0] if marks else None)
            await respond(send, 200, orjson.dumps({"events": events}))
        elif method == "DELETE":
            self.state.events.clear()
            self.state.fails.clear()  # fail_times counts restart with the log
            await respond(send, 200, b'{"events":[]}')
        else:
            await _not_allowed(send)


async def _not_allowed(send: Send) -> None:
    await respond(send, 405, payloads.error_body("Method not allowed (sandbox)", "invalid_request_error"))
