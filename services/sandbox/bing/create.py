"""GET …/turing/conversation/create (sheet §1): a new conversation for the `_U` account."""

from __future__ import annotations

import orjson

from ..asgi import TEXT, Scope, Send, respond
from . import cookies
from .http import request_cookies
from .state import BingState

UNAUTHORIZED = orjson.dumps({"result": {
    "value": "UnauthorizedRequest",
    "message": "Sorry, you need to login first to access this service. (sandbox: unknown _U cookie)",
}})  # fmt: skip


async def create(state: BingState, scope: Scope, send: Send) -> None:
    jar = request_cookies(scope)
    account, known = cookies.account_of(jar)
    record = state.observer.record("create", scope["path"], account, list(jar))
    if scope["method"] != "GET":
        record["status"] = 405
        await respond(send, 405, b"Method Not Allowed\n", TEXT)
        return
    fault = state.faults.take(account, create=True)
    if fault is not None and fault.create_status is not None:
        record.update(status=fault.create_status, fault=fault.kind)
        await respond(send, fault.create_status, f"Injected status {fault.create_status} (sandbox)\n".encode(), TEXT)
        return
    if not known:
        record.update(status=200, result="UnauthorizedRequest")
        await respond(send, 200, UNAUTHORIZED)
        return
    conv = state.conversations.create(account)
    state.observer.created(account)
    record.update(status=200, result="Success", conversationId=conv.id)
    body = orjson.dumps({"conversationId": conv.id, "clientId": conv.client_id,
                         "result": {"value": "Success", "message": None}})
    headers = [(b"x-sydney-encryptedconversationsignature", conv.secret.encode()),
               (b"x-sydney-conversationsignature", conv.signature.encode()), *cookies.set_cookies(jar)]
    await respond(send, 200, body, b"application/json; charset=utf-8", headers)
