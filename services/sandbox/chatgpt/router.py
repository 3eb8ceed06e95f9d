"""Routes /api/auth/session, /backend-api/* and /_sandbox/chatgpt/* to their handlers, doing what all
backend-api calls share: the request record, the bearer check, armed faults, one turn at a time."""

from __future__ import annotations

import time
from typing import Any

import orjson

from ..asgi import ClientGone, Receive, Scope, Send, header, read_body
from . import auth, control, conversation, faults, manage
from .http import answer, detail, ok
from .observe import Record
from .state import FakeState

_PREFIX = "/backend-api/"
_CONVERSATION = "/backend-api/conversation"
_ITEM = "/backend-api/conversation/"
_GEN_TITLE = "/backend-api/conversation/gen_title/"
_FEEDBACK = "/backend-api/conversation/message_feedback"
_CANNOT_PARSE = "Could not parse your authentication token. Please try signing in again."
_MISSING = "Unauthorized - Access token is missing"


LOGIN_PATH = "/auth/login"
LOGIN_PASSWORD = "sandbox-password"


class ChatGPT:
    def __init__(self, models: tuple[str, ...], token_ttl: int) -> None:
        self.state = FakeState(models, auth.Tokens(token_ttl))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if path.startswith(control.PREFIX):
            await control.handle(self.state, scope, receive, send)
            return
        record = self.state.observer.open(scope["method"], path)
        try:
            if path == "/api/auth/session":
                await self._session(scope, send, record)
            elif path == LOGIN_PATH:
                await self._login(scope, receive, send, record)
            else:
                await self._backend(scope, receive, send, record)
        finally:
            record["ended"] = time.time()

    async def _login(self, scope: Scope, receive: Receive, send: Send, record: Record) -> None:
        """A login service of the kind go-chatgpt-api's `/auth/login` fronted (JSON {username,
        password} in, {accessToken} out; errors as {"errorMessage"}): `<user>@sandbox.invalid` with
        the password `sandbox-password` logs in as <user>."""
        if scope["method"] != "POST":
            await detail(send, record, 405, "Method Not Allowed")
            return
        try:
            body = orjson.loads(await read_body(receive))
            username, password = body["username"], body["password"]
            user, _, domain = str(username).partition("@")
        except (orjson.JSONDecodeError, KeyError, TypeError):
            await answer(send, record, 400, orjson.dumps({"errorMessage": "username and password are required"}))
            return
        if domain != "sandbox.invalid" or password != LOGIN_PASSWORD or not user:
            await answer(send, record, 401, orjson.dumps({"errorMessage": "wrong email or password"}))
            return
        record["user"] = user
        token, _ = self.state.tokens.mint(user)
        await ok(send, record, {"accessToken": token})

    async def _session(self, scope: Scope, send: Send, record: Record) -> None:
        state = self.state
        if scope["method"] != "GET":
            await detail(send, record, 405, "Method Not Allowed")
            return
        value = auth.session_cookie(header(scope, b"cookie"))
        user, rotated = state.sessions.resolve(value) if value else (None, None)
        if user is None:
            await ok(send, record, {})  # NextAuth's "not logged in"
            return
        record["user"] = user
        state.observer.session_call(user)
        fault = state.faults.take(user, "session", None)
        if fault is not None:
            await answer(send, record, *faults.answer(fault.fault, fault.clears_in))
            return
        token, _ = state.tokens.mint(user)
        extra = () if rotated is None else ((b"set-cookie", auth.rotated_cookie(rotated, scope["scheme"] == "https")),)
        await ok(send, record, auth.session_json(user, token), extra)

    async def _backend(self, scope: Scope, receive: Receive, send: Send, record: Record) -> None:
        state = self.state
        user, why = state.tokens.check(header(scope, b"authorization"))
        if user is None:
            if why == "expired":
                await answer(send, record, 401, faults.TOKEN_EXPIRED)
            else:
                await detail(send, record, 401, _MISSING if why == "missing" else _CANNOT_PARSE)
            return
        record["user"] = user
        path: str = scope["path"]
        method: str = scope["method"]
        if path == _CONVERSATION and method == "POST":
            # one turn at a time per user: counted from here, refused ones included (max_concurrent)
            active = state.observer.enter(user)
            try:
                if active > 1:
                    await answer(send, record, 429, faults.ONE_AT_A_TIME)
                else:
                    await conversation.post(state, user, record, receive, send)
            finally:
                state.observer.leave(user)
            return
        fault = state.faults.take(user, "other", None)
        if fault is not None:
            await answer(send, record, *faults.answer(fault.fault, fault.clears_in))
            return
        await self._manage(user, scope, receive, send, record, path, method)

    async def _manage(
        self, user: str, scope: Scope, receive: Receive, send: Send, record: Record, path: str, method: str,
    ) -> None:
        state = self.state
        body: Any = None
        if method in ("POST", "PATCH"):
            try:
                raw = await read_body(receive)
            except ClientGone:
                return
            try:
                body = orjson.loads(raw) if raw else None
            except orjson.JSONDecodeError:
                await detail(send, record, 400, "The request body is not valid JSON")
                return
        route = (method, path)
        if route == ("GET", _PREFIX + "conversations"):
            await manage.list_conversations(state, user, scope, send, record)
        elif route == ("PATCH", _PREFIX + "conversations"):
            await manage.patch_conversations(state, user, body, send, record)
        elif route == ("POST", _FEEDBACK):
            await manage.message_feedback(state, user, body, send, record)
        elif method == "POST" and path.startswith(_GEN_TITLE) and len(path) > len(_GEN_TITLE):
            cid = path[len(_GEN_TITLE) :]
            record["conversation_id"] = cid
            await manage.gen_title(state, user, cid, body, send, record)
        elif path.startswith(_ITEM) and "/" not in path[len(_ITEM) :] and len(path) > len(_ITEM):
            cid = path[len(_ITEM) :]
            record["conversation_id"] = cid
            if method == "GET":
                await manage.get_conversation(state, user, cid, send, record)
            elif method == "PATCH":
                await manage.patch_conversation(state, user, cid, body, send, record)
            else:
                await detail(send, record, 405, "Method Not Allowed")
        elif route == ("GET", _PREFIX + "models"):
            await manage.models(state, user, send, record)
        elif route == ("POST", _PREFIX + "sentinel/chat-requirements"):
            await manage.chat_requirements(send, record)
        else:
            await detail(send, record, 404, "Not Found")
