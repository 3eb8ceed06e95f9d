"""/_sandbox/chatgpt/*: what tests and `make run` use to drive the fake (never part of the real API).

POST faults    {"user", "fault", "times"?=1, "model"?, "clears_in"?=3600, "path"?="conversation"} -> the Fault
GET  faults    -> {"faults": {user: [Fault, ...]}} (armed, not yet used up)
POST revoke    {"user", "sessions"?=false} -> {"revoked": <tokens>}; with sessions, the user's sessions too
POST sessions  {"user", "rotate"?=false} -> {"session_token"}
POST tokens    {"user", "ttl"?} -> {"access_token", "exp"} (ttl <= 0: already expired)
POST models    {"user", "models": [slug, ...]} -> {"user", "models"}
POST reset     -> {"success": true}
GET  requests  -> {"requests": [record, ...]} in arrival order; DELETE clears them
GET  stats     -> {"stats": {user: {"max_concurrent", "turns", "session_calls"}}}
Bad bodies get 400 {"detail": ...}.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..asgi import ClientGone, Receive, Scope, Send, read_body
from . import auth, faults
from .http import detail, ok
from .state import FakeState

PREFIX = "/_sandbox/chatgpt/"


class _Bad(ValueError):
    pass


def _user(body: dict[str, Any]) -> str:
    user = body.get("user")
    if not auth.valid_user(user):
        raise _Bad("user must be a short name: letters, digits, '_', '.', '-' (at most 64)")
    return str(user)


def _optional_int(body: dict[str, Any], key: str, default: int | None, low: int | None) -> int | None:
    value = body.get(key, default)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or (low is not None and value < low):
        raise _Bad(f"{key} must be an integer" + ("" if low is None else f" >= {low}"))
    return value


def _fault(state: FakeState, body: dict[str, Any]) -> dict[str, Any]:
    user = _user(body)
    kind = body.get("fault")
    if kind not in faults.KINDS:
        raise _Bad(f"fault must be one of {', '.join(sorted(faults.KINDS))}")
    path = body.get("path", "conversation")
    if path not in faults.PATHS:
        raise _Bad(f"path must be one of {', '.join(sorted(faults.PATHS))}")
    model = body.get("model")
    if model is not None and (not isinstance(model, str) or not model):
        raise _Bad("model must be a model slug")
    times = _optional_int(body, "times", 1, 1)
    clears_in = _optional_int(body, "clears_in", faults.DEFAULT_CLEARS_IN, 0)
    assert times is not None and clears_in is not None
    fault = faults.Fault(str(kind), times, model, clears_in, str(path))
    state.faults.arm(user, fault)
    return {"user": user, "fault": fault.fault, "times": times, "model": model, "clears_in": clears_in, "path": path}


def _models(state: FakeState, body: dict[str, Any]) -> dict[str, Any]:
    user = _user(body)
    slugs = body.get("models")
    if not isinstance(slugs, list) or not all(isinstance(s, str) and s in state.models for s in slugs):
        raise _Bad(f"models must be a list of the sandbox's slugs: {', '.join(state.models)}")
    state.permitted[user] = tuple(slugs)
    return {"user": user, "models": slugs}


def _post(state: FakeState, name: str, body: dict[str, Any]) -> dict[str, Any] | None:
    if name == "faults":
        return _fault(state, body)
    if name == "revoke":
        user = _user(body)
        if body.get("sessions"):
            state.sessions.revoke(user)
        return {"revoked": state.tokens.revoke(user)}
    if name == "sessions":
        return {"session_token": state.sessions.register(_user(body), bool(body.get("rotate")))}
    if name == "tokens":
        token, exp = state.tokens.mint(_user(body), _optional_int(body, "ttl", None, None))
        return {"access_token": token, "exp": exp}
    if name == "models":
        return _models(state, body)
    if name == "reset":
        state.reset()
        return {"success": True}
    return None


async def handle(state: FakeState, scope: Scope, receive: Receive, send: Send) -> None:
    name = scope["path"][len(PREFIX) :]
    method = scope["method"]
    if method == "GET" and name == "requests":
        await ok(send, None, {"requests": list(state.observer.requests)})
    elif method == "DELETE" and name == "requests":
        state.observer.requests.clear()
        await ok(send, None, {"requests": []})
    elif method == "GET" and name == "stats":
        await ok(send, None, {"stats": state.observer.stats})
    elif method == "GET" and name == "faults":
        await ok(send, None, {"faults": state.faults.listing()})
    elif method == "POST":
        try:
            raw = await read_body(receive)
        except ClientGone:
            return
        try:
            body = orjson.loads(raw) if raw else {}
            if not isinstance(body, dict):
                raise _Bad("the body must be a JSON object")
            result = _post(state, name, body)
        except orjson.JSONDecodeError:
            await detail(send, None, 400, "the body is not valid JSON")
            return
        except _Bad as exc:
            await detail(send, None, 400, str(exc))
            return
        if result is None:
            await detail(send, None, 404, f"Unknown sandbox control {scope['path']}")
        else:
            await ok(send, None, result)
    else:
        await detail(send, None, 404, f"Unknown sandbox control {method} {scope['path']}")
