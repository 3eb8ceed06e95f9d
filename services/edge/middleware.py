"""Pure ASGI middleware of the edge: request ids and access logs, then authentication.

Starlette's docs advise against BaseHTTPMiddleware on a streaming hot path; these wrap `send`
and nothing else.
"""

from __future__ import annotations

import hmac
import logging
import re
import time
from typing import Protocol

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from libs import secrets
from libs.errors import AuthenticationFailed
from libs.ids import new_id
from services.edge.asgi_io import header, send_error, send_json
from services.edge.caller import CALLER_KEY, Caller
from services.edge.metrics import EdgeMetrics

access_log = logging.getLogger("switchyard.edge.access")

_REQUEST_ID = re.compile(rb"^[\w.-]{1,128}$")
REQUEST_ID_KEY = "sy.request_id"
OPEN_PATHS = frozenset({"/", "/healthz", "/readyz", "/metrics", "/openapi.json"})
# generated images' URLs: their random names are their secret, as OpenAI's are (routes/images.py);
# the admin API (routes/admin.py) checks ADMIN_KEY itself: it is not an API key
OPEN_PREFIXES = ("/images/", "/admin/")


# go-chatgpt-api's routes (routes/chatgpt_web.py): there `Authorization` may hold the caller's own
# ChatGPT access token instead of this gateway's key (see `chatgpt_credentials`)
CHATGPT_PREFIXES = ("/conversation", "/auth/login")

# ChatGPT-API-server's routes (routes/agents.py): its own auth errors, a bare token or `Bearer`,
# ADMIN_KEY accepted as a key; /api/connections checks ADMIN_KEY itself
SEED002_PREFIX = "/api/"
SEED002_OWN_AUTH = "/api/connections"
ADMIN_CALLER = Caller("admin")

# nginx's status for a request whose client went away before any response was sent
CLIENT_DISCONNECTED = 499


class RequestContext:
    """Gives every request an id (the client's `x-request-id` when well-formed), echoes it, logs.

    A request whose client disconnected before any response started is logged with status 499
    and `disconnected: true` (the route saw `http.disconnect` and gave up), not as status 0."""

    def __init__(self, app: ASGIApp, *, log_requests: bool) -> None:
        self.app = app
        self.log_requests = log_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = header(scope, b"x-request-id")
        request_id = given.decode() if given and _REQUEST_ID.match(given) else new_id()
        scope[REQUEST_ID_KEY] = request_id
        encoded_id = request_id.encode()
        status = 0
        disconnected = False

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                # a new message, never the caller's: senders may reuse theirs
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", encoded_id)]}
            await send(message)

        if not self.log_requests:  # no line to write: nothing to time, no receive to watch
            await self.app(scope, receive, send_with_id)
            return
        started = time.perf_counter()

        async def receive_watching() -> Message:
            nonlocal disconnected
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected = True
            return message

        try:
            await self.app(scope, receive_watching, send_with_id)
        finally:
            gone = status == 0 and disconnected
            logged = CLIENT_DISCONNECTED if gone else status
            access_log.info(
                "%s %s %s%s", scope["method"], scope["path"], logged, " client_disconnected" if gone else "",
                extra={"request_id": request_id, "status": logged, "disconnected": gone or None,
                       "duration_ms": round((time.perf_counter() - started) * 1000, 2)},
            )


class KeyStore(Protocol):
    """Where API keys live: StaticKeyStore, or services/edge/keys.py's static and managed keys."""

    def is_open(self) -> bool: ...

    async def authenticate(self, token: str) -> Caller | None: ...


class StaticKeyStore:
    """The keys from AUTH_TOKEN / AUTH_TOKENS. Empty: the edge runs open."""

    def __init__(self, tokens: list[str]) -> None:
        self._tokens = [t.encode() for t in tokens]
        self._callers = [Caller(f"static-{n}") for n in range(1, len(tokens) + 1)]
        for token in tokens:  # the edge holds them: never in a log line, whatever their shape
            secrets.hold(token)

    def is_open(self) -> bool:
        return not self._tokens

    async def authenticate(self, token: str) -> Caller | None:
        candidate = token.encode()
        matched: Caller | None = None
        for known, caller in zip(self._tokens, self._callers, strict=True):
            # compare with every key, in constant time each
            if hmac.compare_digest(candidate, known) and matched is None:
                matched = caller
        return matched


def _bare(value: bytes | None) -> str:
    """A credential header's value without its optional `Bearer ` (go-chatgpt-api took both)."""
    text = value.decode("latin-1").strip() if value else ""
    scheme, sep, rest = text.partition(" ")
    return rest.strip() if sep and scheme.lower() == "bearer" else text


def _is_access_token(value: str) -> bool:
    return value.startswith("eyJ")  # a JWT's base64url header: ChatGPT access tokens are JWTs


def chatgpt_credentials(scope: Scope) -> tuple[str | None, str | None]:
    """(the caller's ChatGPT access token, this gateway's key) of a request to go-chatgpt-api's routes.

    The rule, written once: the access token is `Authorization`'s value when it is a JWT, else
    `X-Authorization`'s when that is (each with or without `Bearer `, as go-chatgpt-api accepted);
    the gateway's key is `X-Api-Key`, else `Authorization` when that is not a JWT."""
    authorization = _bare(header(scope, b"authorization"))
    token: str | None = None
    if _is_access_token(authorization):
        token = authorization
    else:
        other = _bare(header(scope, b"x-authorization"))
        token = other if _is_access_token(other) else None
    given = header(scope, b"x-api-key")
    key = given.decode("latin-1").strip() if given else ("" if token == authorization else authorization)
    return token, key or None


class BearerAuth:
    """401 for a request without a valid bearer key (counted by reason when given `metrics`).

    On go-chatgpt-api's routes the key may also come as `X-Api-Key` (`chatgpt_credentials`)."""

    def __init__(self, app: ASGIApp, keys: KeyStore, metrics: EdgeMetrics | None = None, admin_key: str = "") -> None:
        self.app = app
        self.keys = keys
        self._admin_key = admin_key.encode()
        self.failures = metrics.auth_failures_by if metrics is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        if not path or self.keys.is_open() or path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            await self.app(scope, receive, send)
            return
        if path.startswith(SEED002_PREFIX):
            await self._seed002(scope, receive, send, path)
            return
        if path.startswith(CHATGPT_PREFIXES):
            key = chatgpt_credentials(scope)[1]
            if key is None:
                await self._refuse(send, "missing", AuthenticationFailed(
                    "You didn't provide an API key. Use the header 'X-Api-Key: YOUR_KEY' (or 'Authorization: "
                    "Bearer YOUR_KEY' when it holds no ChatGPT access token)."
                ))
                return
        else:
            raw = header(scope, b"authorization") or b""
            scheme, _, token = raw.decode("latin-1").partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                await self._refuse(send, "missing", AuthenticationFailed(
                    "You didn't provide an API key. Use the header 'Authorization: Bearer YOUR_KEY'."
                ))
                return
            key = token.strip()
        caller = await self.keys.authenticate(key)
        if caller is None:
            await self._refuse(send, "invalid", AuthenticationFailed("Incorrect API key provided."))
            return
        scope[CALLER_KEY] = caller
        await self.app(scope, receive, send)

    async def _seed002(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        """Seed 002's /api/ routes: `Authorization: <token>` (or `Bearer <token>`), its 401 bodies."""
        if path == SEED002_OWN_AUTH:
            await self.app(scope, receive, send)
            return
        key = _bare(header(scope, b"authorization"))
        if not key:
            await self._refuse_seed(send, "missing", "API key not provided")
            return
        if self._admin_key and hmac.compare_digest(key.encode(), self._admin_key):
            caller: Caller | None = ADMIN_CALLER
        else:
            caller = await self.keys.authenticate(key)
        if caller is None:
            await self._refuse_seed(send, "invalid", "Invalid API key")
            return
        scope[CALLER_KEY] = caller
        await self.app(scope, receive, send)

    async def _refuse_seed(self, send: Send, reason: str, text: str) -> None:
        if self.failures is not None:
            self.failures[reason].inc()
        await send_json(send, 401, {"error": text})

    async def _refuse(self, send: Send, reason: str, err: AuthenticationFailed) -> None:
        if self.failures is not None:
            self.failures[reason].inc()
        await send_error(send, err)
