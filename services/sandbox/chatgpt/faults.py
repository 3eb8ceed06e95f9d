"""Injected failures: the sheet's exact error answers (§2.8), armed per user through the control
endpoint, and the answers of the `status=` directive (the same bodies where the sheet has one)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import orjson

from ..asgi import JSON, TEXT

Answer = tuple[int, bytes, bytes, tuple[tuple[bytes, bytes], ...]]  # status, body, content type, headers

KINDS = frozenset({
    "rate_limit", "model_cap", "token_expired", "cloudflare", "not_found", "too_long", "server_error",
    "in_stream_error",
})  # fmt: skip
PATHS = frozenset({"conversation", "session", "any"})
DEFAULT_CLEARS_IN = 3600

TOKEN_EXPIRED = orjson.dumps({"detail": {
    "message": "Your authentication token has expired. Please try signing in again.",
    "type": "invalid_request_error", "param": None, "code": "token_expired",
}})  # fmt: skip
RATE_LIMIT = orjson.dumps({"detail": "Too many requests in 1 hour. Try again later."})
NOT_FOUND = orjson.dumps({"detail": "Conversation not found"})
TOO_LONG = orjson.dumps({"detail": {
    "message": "The message you submitted was too long, please reload the conversation and submit something "
               "shorter.",
    "code": "message_length_exceeds_limit",
}})  # fmt: skip
ONE_AT_A_TIME = orjson.dumps({"detail": "Only one message at a time. Please allow any other responses to complete "
                                        "before sending another message, or wait one minute."})
SERVER_ERROR = b"Internal Server Error"
HTML = b"text/html; charset=UTF-8"
CLOUDFLARE = b"""<!DOCTYPE html><html lang="en-US"><head><title>Just a moment...</title>
<meta http-equiv="Content-Type" content="text/html; charset=UTF-8"></head>
<body><div class="main-wrapper" role="main"><div class="main-content">
<h1 class="zone-name-title h1">chat.openai.com</h1>
<h2 id="cf-challenge-running" class="h2">Checking if the site connection is secure</h2>
<div id="cf-please-wait"><div id="spinner"></div><p>Please wait...</p></div>
<noscript><div id="cf-challenge-error-title">Please enable cookies.</div></noscript>
</div></div></body></html>
"""
_CLOUDFLARE_HEADERS = ((b"cf-mitigated", b"challenge"), (b"server", b"cloudflare"))


def model_cap(clears_in: int) -> bytes:
    return orjson.dumps({"detail": {
        "message": "You have sent too many messages to the model. Please try again later.",
        "code": "model_cap_exceeded", "clears_in": clears_in,
    }})  # fmt: skip


def answer(kind: str, clears_in: int = DEFAULT_CLEARS_IN) -> Answer:
    """The whole HTTP answer of a fault (every kind but in_stream_error, which is part of a stream)."""
    if kind == "rate_limit":
        return 429, RATE_LIMIT, JSON, ()
    if kind == "model_cap":
        return 429, model_cap(clears_in), JSON, ()
    if kind == "token_expired":
        return 401, TOKEN_EXPIRED, JSON, ()
    if kind == "cloudflare":
        return 403, CLOUDFLARE, HTML, _CLOUDFLARE_HEADERS
    if kind == "not_found":
        return 404, NOT_FOUND, JSON, ()
    if kind == "too_long":
        return 413, TOO_LONG, JSON, ()
    return 500, SERVER_ERROR, TEXT, ()


_BY_STATUS = {401: "token_expired", 403: "cloudflare", 404: "not_found", 413: "too_long", 429: "rate_limit",
              500: "server_error"}


def status_answer(status: int) -> Answer:
    """`[sandbox status=N]`: the sheet's body for N when it has one, else a plain `{"detail"}`."""
    kind = _BY_STATUS.get(status)
    if kind is not None:
        return answer(kind)
    return status, orjson.dumps({"detail": f"Injected status {status} (sandbox)"}), JSON, ()


@dataclass(slots=True)
class Fault:
    fault: str
    times: int = 1
    model: str | None = None  # only requests for this model slug match
    clears_in: int = DEFAULT_CLEARS_IN
    path: str = "conversation"

    def matches(self, where: str, model: str | None) -> bool:
        if self.path != "any" and self.path != where:
            return False
        if self.fault == "in_stream_error" and where != "conversation":
            return False  # only a stream can carry it
        return self.model is None or self.model == model


class Faults:
    def __init__(self) -> None:
        self._armed: dict[str, list[Fault]] = {}

    def arm(self, user: str, fault: Fault) -> None:
        self._armed.setdefault(user, []).append(fault)

    def take(self, user: str, where: str, model: str | None) -> Fault | None:
        """The first armed fault of `user` matching this request, counted down (where: conversation |
        session | other)."""
        armed = self._armed.get(user)
        if not armed:
            return None
        for i, fault in enumerate(armed):
            if fault.matches(where, model):
                fault.times -= 1
                if fault.times <= 0:
                    del armed[i]
                return fault
        return None

    def listing(self) -> dict[str, list[dict[str, Any]]]:
        return {user: [asdict(f) for f in armed] for user, armed in self._armed.items() if armed}

    def reset(self) -> None:
        self._armed.clear()
