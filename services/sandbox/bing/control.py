"""/_sandbox/bing/*: what tests use to drive and read the Bing fake (never part of the real API).

POST   faults    {"account": name|"any", "kind", "times"?=1} -> {"armed": {account, kind, times}}
GET    faults    -> {"faults": [{account, kind, times}, ...]} (armed, not yet used up, in order)
GET    requests  -> {"requests": [record, ...]} in arrival order; DELETE clears them
GET    stats     -> {"stats": {...}}
POST   expire    {"conversationId"?} -> {"expired": n} (no id: every conversation)
POST   reset     -> {"reset": true}
Bad bodies get 400 {"error": "..."}.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..asgi import ClientGone, Receive, Scope, Send, read_body, respond
from . import faults
from .state import BingState

PREFIX = "/_sandbox/bing/"


async def _ok(send: Send, obj: Any) -> None:
    await respond(send, 200, orjson.dumps(obj))


async def _bad(send: Send, status: int, why: str) -> None:
    await respond(send, status, orjson.dumps({"error": why}))


def _post(state: BingState, name: str, body: dict[str, Any]) -> dict[str, Any] | None:
    if name == "faults":
        fault = faults.check(body.get("account"), body.get("kind"), body.get("times", 1))
        state.faults.arm(fault)
        return {"armed": {"account": fault.account, "kind": fault.kind, "times": fault.times}}
    if name == "expire":
        cid = body.get("conversationId")
        if cid is not None and not isinstance(cid, str):
            raise ValueError("conversationId must be a string")
        return {"expired": state.conversations.expire(cid)}
    if name == "reset":
        state.reset()
        return {"reset": True}
    return None


async def handle(state: BingState, scope: Scope, receive: Receive, send: Send) -> None:
    name = scope["path"][len(PREFIX):]
    method = scope["method"]
    if method == "GET" and name == "requests":
        await _ok(send, {"requests": list(state.observer.requests)})
    elif method == "DELETE" and name == "requests":
        state.observer.requests.clear()
        await _ok(send, {"requests": []})
    elif method == "GET" and name == "stats":
        await _ok(send, {"stats": state.observer.stats(state.counts())})
    elif method == "GET" and name == "faults":
        await _ok(send, {"faults": state.faults.listing()})
    elif method == "POST":
        try:
            raw = await read_body(receive)
        except ClientGone:
            return
        try:
            body = orjson.loads(raw) if raw else {}
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            result = _post(state, name, body)
        except orjson.JSONDecodeError:
            await _bad(send, 400, "the body is not valid JSON")
            return
        except ValueError as exc:
            await _bad(send, 400, str(exc))
            return
        if result is None:
            await _bad(send, 404, f"Unknown sandbox control {scope['path']}")
        else:
            await _ok(send, result)
    else:
        await _bad(send, 404, f"Unknown sandbox control {method} {scope['path']}")
