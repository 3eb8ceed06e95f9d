"""What a failed ChatGPT web call means: for the account pool (an `Outcome`), for an OpenAI client
(a `SwitchyardError`), and for the native routes (the upstream's status and body, kept).

The table is the fact sheet's §2.8. Where it is silent:
- "Only one message at a time" (status unknown to the sheet; matched by its text on any 4xx but
  401): the account is answering elsewhere (a person in a browser) or our lease was broken. The
  account is busy, not broken: RATE_LIMITED for every model for a short while (the upstream's own
  text says "or wait one minute"), never a failure that escalates toward quarantine.
- A Cloudflare page is recognised on 403 and on 503 (Cloudflare's older challenge status).
- 413 (message_length_exceeds_limit) is `context_length_exceeded` for an OpenAI client: that is
  the code OpenAI SDKs and agents react to by shortening the input.
- A 401 whose text says "expired" without the `token_expired` code is AUTH_EXPIRED too: a
  refresh is the cure either way, and the pool quarantines if it does not help.
- Other statuses no row covers (3xx, 402, 405, 409, …) are FAILUREs: unexplained, so counted.
- An in-stream error with the words of a 429 body is a rate limit, not a failure.

Every text that leaves here has lost the secrets of the call (given verbatim: tokens rotate, so
they are not held process-wide) and anything shaped like a credential (libs/secrets.py).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import orjson

from libs import secrets as held_secrets
from libs.account_pool.outcome import Outcome, Verdict
from libs.errors import (
    ContextLengthExceeded,
    SwitchyardError,
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
)

ONE_AT_A_TIME_CLEARS_IN = 60.0  # seconds: "… or wait one minute", the upstream's own words
_CLOUDFLARE_MARKERS = (b"cf-please-wait", b"just a moment", b"cf_chl")
_RATE_LIMIT_WORDS = ("too many requests", "too many messages", "model_cap_exceeded", "rate limit")
_ONE_AT_A_TIME = "only one message at a time"
_SHORT = 200  # characters of upstream text kept in a message
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_SPACES = re.compile(r"\s+")


class UpstreamFailure(Exception):
    """A classified upstream failure. `status` and `body` are the upstream's (for the native routes,
    which answer with them; `body` scrubbed); `error` is what an OpenAI client gets; `outcome` is
    what the account pool learns."""

    def __init__(self, status: int, outcome: Outcome, error: SwitchyardError, body: Any) -> None:
        super().__init__(error.message)
        self.status = status
        self.outcome = outcome
        self.error = error
        self.body = body


def classify(status: int, body: bytes, content_type: str | None, *, model: str | None,
             secrets: Sequence[str]) -> UpstreamFailure:
    """The meaning of a non-200 answer of a backend-api call (or of `/api/auth/session`)."""
    parsed = _json(body, content_type)
    cloudflare = status in (403, 503) and is_cloudflare(body)
    if parsed is not None:
        native: Any = _scrub_json(parsed, secrets)
        detail, code, clears_in = _detail(native)
    else:
        detail, code, clears_in = _plain_detail(body, cloudflare, secrets), None, None
        native = {"detail": detail}
    said = f" ({status}): {detail}" if detail else f" ({status})"

    if cloudflare:
        return UpstreamFailure(status, Outcome(Verdict.CLOUDFLARE, reason=f"{status} Cloudflare challenge"),
                               UpstreamError(f"the ChatGPT upstream answered with a Cloudflare challenge ({status})"),
                               native)
    if status == 401:
        # the code is the sheet's; the words catch the same answer without it (a proxy's re-wrap)
        if code == "token_expired" or "expired" in detail.lower():
            return UpstreamFailure(status, Outcome(Verdict.AUTH_EXPIRED, reason="401 token_expired"),
                                   UpstreamAuthError("the ChatGPT account's access token has expired"), native)
        return UpstreamFailure(status, Outcome(Verdict.AUTH_INVALID, reason=_reason(status, detail)),
                               UpstreamAuthError(f"the ChatGPT account was refused{said}"), native)
    if 400 <= status < 500 and _ONE_AT_A_TIME in detail.lower():
        return UpstreamFailure(status, Outcome(Verdict.RATE_LIMITED, clears_in=ONE_AT_A_TIME_CLEARS_IN,
                                               reason=_reason(status, "busy answering another message")),
                               UpstreamRateLimited(f"the ChatGPT account is busy with another message{said}",
                                                   retry_after=ONE_AT_A_TIME_CLEARS_IN), native)
    if status == 403:
        return UpstreamFailure(status, Outcome(Verdict.AUTH_INVALID, reason=_reason(status, detail)),
                               UpstreamAuthError(f"the ChatGPT account was refused{said}"), native)
    if status == 429:
        if code == "model_cap_exceeded":
            outcome = Outcome(Verdict.RATE_LIMITED, model=model, clears_in=clears_in,
                              reason=_reason(status, f"model cap of {model or 'a model'}"))
            text = f"the ChatGPT account reached its cap for {model or 'this model'}{said}"
        else:
            outcome = Outcome(Verdict.RATE_LIMITED, reason=_reason(status, detail))
            text = f"the ChatGPT account is rate limited{said}"
        return UpstreamFailure(status, outcome, UpstreamRateLimited(text, retry_after=clears_in), native)
    if status == 413:
        return UpstreamFailure(status, Outcome.neutral(),
                               ContextLengthExceeded(f"the ChatGPT upstream found the messages too long{said}",
                                                     param="messages"), native)
    if status in (400, 404, 422):
        return UpstreamFailure(status, Outcome.neutral(),
                               UpstreamBadRequest(f"the ChatGPT upstream refused the request{said}"), native)
    return UpstreamFailure(status, Outcome(Verdict.FAILURE, reason=_reason(status, detail)),
                           UpstreamError(f"the ChatGPT upstream failed{said}"), native)


def stream_failure(message: str, secrets: Sequence[str]) -> UpstreamFailure:
    """An `error` inside a 200 event stream (or its `internal server error` line). The status given
    to a native route is 500, as go-chatgpt-api answered it."""
    text = _cut(scrub(message, secrets))
    lowered = text.lower()
    if _ONE_AT_A_TIME in lowered:
        return UpstreamFailure(500, Outcome(Verdict.RATE_LIMITED, clears_in=ONE_AT_A_TIME_CLEARS_IN,
                                            reason="in-stream: busy answering another message"),
                               UpstreamRateLimited(f"the ChatGPT account is busy with another message: {text}",
                                                   retry_after=ONE_AT_A_TIME_CLEARS_IN), {"detail": text})
    if any(words in lowered for words in _RATE_LIMIT_WORDS):
        return UpstreamFailure(500, Outcome(Verdict.RATE_LIMITED, reason=_cut(f"in-stream: {text}", 120)),
                               UpstreamRateLimited(f"the ChatGPT account is rate limited: {text}"), {"detail": text})
    return UpstreamFailure(500, Outcome(Verdict.FAILURE, reason=_cut(f"in-stream: {text}", 120)),
                           UpstreamError(f"the ChatGPT upstream failed mid-answer: {text}"), {"detail": text})


def unreachable(why: str, *, timed_out: bool) -> UpstreamFailure:
    """No answer at all (connecting, a proxy, a timeout, a broken-off body). `why` must hold no
    secret (an exception's class name, not its text). FAILURE: an account's own proxy may be the
    cause, and a pool that did not count it would keep choosing that account."""
    if timed_out:
        return UpstreamFailure(504, Outcome(Verdict.FAILURE, reason=_cut(why, 120)),
                               UpstreamTimeout(f"the ChatGPT upstream timed out: {why}"), {"detail": why})
    return UpstreamFailure(502, Outcome(Verdict.FAILURE, reason=_cut(why, 120)),
                           UpstreamError(f"cannot reach the ChatGPT upstream: {why}"), {"detail": why})


def scrub(text: str, secrets: Sequence[str]) -> str:
    """`text` without the call's own secrets (tokens rotate: not held process-wide), then without
    whatever the process holds or what looks like a credential."""
    return held_secrets.scrub_also(text, secrets)


def is_cloudflare(body: bytes) -> bool:
    """Whether `body` is a Cloudflare challenge page."""
    lowered = body[:64 * 1024].lower()
    return any(marker in lowered for marker in _CLOUDFLARE_MARKERS)


def _json(body: bytes, content_type: str | None) -> Any:
    """The body as a JSON object or array, None when it is not one."""
    if "json" not in (content_type or "") and body.lstrip()[:1] not in (b"{", b"["):
        return None
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict | list) else None


def _scrub_json(value: Any, secrets: Sequence[str]) -> Any:
    if isinstance(value, str):
        return scrub(value, secrets)
    if isinstance(value, dict):
        return {key: _scrub_json(item, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [_scrub_json(item, secrets) for item in value]
    return value


def _detail(body: Any) -> tuple[str, str | None, float | None]:
    """(message, code, clears_in) of a JSON error body: FastAPI's `detail` (a string, or an object
    with message/code/clears_in), or the `error`/`errorMessage`/`message` of proxies in front."""
    if not isinstance(body, dict):
        return _cut(orjson.dumps(body).decode()), None, None
    for key in ("detail", "error", "errorMessage", "message"):
        value = body.get(key)
        if isinstance(value, str):
            return _cut(value), None, None
        if isinstance(value, dict):
            message = value.get("message")
            code = value.get("code")
            return (_cut(message if isinstance(message, str) else orjson.dumps(value).decode()),
                    code if isinstance(code, str) else None, _seconds(value.get("clears_in")))
        if isinstance(value, list) and value:  # FastAPI's validation errors (422)
            return _cut(orjson.dumps(value).decode()), None, None
    return _cut(orjson.dumps(body).decode()), None, None


def _plain_detail(body: bytes, cloudflare: bool, secrets: Sequence[str]) -> str:
    if cloudflare:
        # chat2api's word for it; it also lets classify_reply (client.py) classify this body again
        return "cf-please-wait: a Cloudflare challenge page"
    text = body[:64 * 1024].decode("utf-8", errors="replace")
    title = _TITLE.search(text) if "<" in text else None
    if title is not None:
        text = title.group(1)
    return _cut(_SPACES.sub(" ", scrub(text, secrets)).strip())  # scrubbed whole, then cut


def _seconds(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float | str):
        try:
            seconds = float(value)
        except ValueError:
            return None
        return max(0.0, seconds) if math.isfinite(seconds) else None
    return None


def _reason(status: int, detail: str) -> str:
    return _cut(f"{status}: {detail}" if detail else str(status), 120)


def _cut(text: str, limit: int = _SHORT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
