"""Routes the Bing fake's paths (HTTP and the ChatHub websocket) to their handlers."""

from __future__ import annotations

from ..asgi import TEXT, Receive, Scope, Send, respond
from . import control, cookies, create, hub, kblob
from .conversations import Conversations
from .creator import RESULTS_PREFIX, THUMB_PREFIX
from .http import request_cookies
from .state import BingState

CREATE_PATHS = frozenset({"/edgesvc/turing/conversation/create", "/turing/conversation/create"})
CHATHUB = "/sydney/ChatHub"
KBLOB = "/images/kblob"
BLOB = "/images/blob"
CREATOR = "/images/create"
_PREFIXES = (control.PREFIX, RESULTS_PREFIX, THUMB_PREFIX)
_EXACT = CREATE_PATHS | {CHATHUB, KBLOB, BLOB, CREATOR}


def handles(path: str) -> bool:
    return path in _EXACT or path.startswith(_PREFIXES)


class Bing:
    def __init__(self, conversation_ttl: float) -> None:
        self.state = BingState(Conversations(conversation_ttl))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if scope["type"] == "websocket":
            if path == CHATHUB:
                await hub.serve(self.state, scope, receive, send)
            else:
                await send({"type": "websocket.close", "code": 1008})  # refused upgrade: 403
            return
        if path.startswith(control.PREFIX):
            await control.handle(self.state, scope, receive, send)
        elif path in CREATE_PATHS:
            await create.create(self.state, scope, send)
        elif path == CHATHUB:
            await respond(send, 400, b"A websocket upgrade is required (sandbox)\n", TEXT)
        else:
            await self._images(scope, receive, send, path)

    async def _images(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        state = self.state
        jar = request_cookies(scope)
        account, known = cookies.account_of(jar)
        record = state.observer.record("", path, account, list(jar))
        method = scope["method"]
        if path == KBLOB and method == "POST":
            record["kind"] = "kblob"
            status, extra = await kblob.upload(state.blobs, scope, receive, send)
            record.update(status=status, **extra)
        elif path == BLOB and method == "GET":
            record.update(kind="blob", status=await kblob.serve(state.blobs, scope, send))
        elif path == CREATOR and method == "GET":
            record["kind"] = "creator"
            record.update(await state.creator.page(scope, send, account if known else None))
        elif path.startswith(RESULTS_PREFIX) and method == "GET":
            record["kind"] = "creator_poll"
            record.update(await state.creator.poll(scope, send, account if known else None))
        elif path.startswith(THUMB_PREFIX) and method == "GET":
            record.update(kind="thumbnail", status=await state.creator.thumbnail(scope, send))
        else:
            record.update(kind="unknown", status=405)
            await respond(send, 405, b"Method Not Allowed\n", TEXT)
