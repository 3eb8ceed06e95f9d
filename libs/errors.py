"""One error tree for the whole gateway, and one table from it to OpenAI error bodies.

    SwitchyardError
    ├── InvalidRequest            400  invalid_request_error (param names the field)
    │   ├── ContextLengthExceeded 400  context_length_exceeded (an input longer than the model takes)
    │   ├── BodyTooLarge          413
    │   ├── ModelNotFound         404  model_not_found
    │   └── ImageNotFound         404  image_not_found (a generated image's URL expired, or never was)
    ├── AuthenticationFailed      401  invalid_api_key
    ├── BusError
    │   ├── NoCapacity            503  no_capacity (Retry-After)
    │   ├── BusUnavailable        503  bus_unavailable (Retry-After; NATS is down or restarting)
    │   ├── WorkerLost            502  worker_lost
    │   ├── ReplyGap              502  reply_gap (a reply was dropped on the bus)
    │   ├── ClientTooSlow         503  client_too_slow (the per-request buffer overflowed)
    │   ├── ShuttingDown          503  shutting_down (the edge's drain time ran out; Retry-After)
    │   └── DeadlineExceeded      504  timeout
    └── UpstreamError             502  upstream_error
        ├── UpstreamAuthError     502  upstream_auth_error (the client's key was fine)
        ├── UpstreamRateLimited   429  rate_limit_exceeded (Retry-After)
        ├── UpstreamTimeout       504  upstream_timeout
        ├── UpstreamBadRequest    400  upstream_bad_request (the upstream rejected the input)
        └── UpstreamProtocolError 502  upstream_protocol_error
            └── UpstreamTooLarge  502  upstream_too_large (not retried: another try gets as much)

A managed key's limits (the edge's alone, never on the bus: defined after `_BY_CODE`):
    InvalidRequest
    └── ModelNotAllowed           403  model_not_allowed (param model)
    SwitchyardError
    ├── KeyRateLimited            429  rate_limit_exceeded, type requests or tokens (Retry-After)
    ├── KeyQuotaExceeded          429  insufficient_quota (Retry-After)
    └── KeyConcurrencyLimited     429  concurrency_limit_exceeded (Retry-After)

Workers put errors on the bus as `{code, message, retryable, retry_after?, param?}`;
`from_wire` turns them back into the same classes on the edge (an unknown code becomes an
InvalidRequest when it starts with "invalid", else an UpstreamError), so one table decides what a
client sees, whichever side raised it. `to_wire` scrubs the message (libs/secrets.py): whatever a
worker puts on the bus has lost every secret it holds, in whichever path the error was made.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from libs.secrets import scrub


class SwitchyardError(Exception):
    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    code: ClassVar[str] = "internal_error"
    retryable: ClassVar[bool] = False
    # The configured name of the upstream whose failure this is, set by the backend that called
    # it: a bounded metrics label (never a URL or key). Empty when no upstream is to blame.
    upstream: str = ""

    def __init__(self, message: str, *, param: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        # never tell a client to come early; `retry-after-ms` is what the official OpenAI SDKs
        # read first, and says it to the millisecond
        return {"retry-after": str(max(1, math.ceil(self.retry_after))),
                "retry-after-ms": str(max(1, math.ceil(round(self.retry_after * 1000, 3))))}

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"code": self.code, "message": scrub(self.message), "retryable": self.retryable}
        if self.retry_after is not None:
            wire["retry_after"] = self.retry_after
        if self.param is not None:
            wire["param"] = self.param
        return wire


class InvalidRequest(SwitchyardError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_value"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message, param=param)
        if code is not None:
            self.code = code  # type: ignore[misc]  # per-instance refinement of the class default


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class BodyTooLarge(InvalidRequest):
    status = 413
    code = "request_too_large"


class ContentFiltered(InvalidRequest):
    """The upstream's own filter refused the prompt (Bing's Apology, a rejected image prompt)."""

    code = "content_policy_violation"


class ModelNotFound(InvalidRequest):
    status = 404
    code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(f"The model '{model}' does not exist or you do not have access to it.", param="model")


class ImageNotFound(InvalidRequest):
    status = 404
    code = "image_not_found"


class AuthenticationFailed(SwitchyardError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class BusError(SwitchyardError):
    status = 502
    type = "server_error"
    code = "bus_error"


class NoCapacity(BusError):
    status = 503
    code = "no_capacity"

    @classmethod
    def after_queue_wait(cls, queue_wait: float) -> NoCapacity:
        """No worker took the job within the queue wait (said alike by the edge and a worker)."""
        return cls("no worker had capacity for this request within the queue wait; retry later",
                   retry_after=max(1.0, queue_wait / 5))


class AccountsBusy(SwitchyardError):
    """Every upstream account of a web pool stayed busy or cooling for the whole queue wait."""

    status = 429
    type = "rate_limit_error"
    code = "accounts_busy"
    retryable = True

    @classmethod
    def after_queue_wait(cls, queue_wait: float, retry_at: float | None, now: float) -> AccountsBusy:
        # the soonest cooldown end when the pool said it; else the queue wait again (answers end
        # at an unknowable time, but one in a queue wait is likely)
        retry_after = max(1.0, retry_at - now) if retry_at is not None else max(1.0, queue_wait)
        return cls("every upstream account of this model was busy or cooling down for the whole queue wait; "
                   "retry later", retry_after=retry_after)


class NoWorker(BusError):
    """No live worker serves what the route needs: an operator's matter (start one), no Retry-After."""

    status = 503
    code = "no_worker"


class BusUnavailable(BusError):
    status = 503
    code = "bus_unavailable"


class WorkerLost(BusError):
    code = "worker_lost"


class ReplyGap(BusError):
    code = "reply_gap"


class ClientTooSlow(BusError):
    status = 503
    code = "client_too_slow"


class ShuttingDown(BusError):
    """The edge stops: requests still open when its drain time runs out end with this; another
    replica (or this one, restarted) takes the retry."""

    status = 503
    code = "shutting_down"


class DeadlineExceeded(BusError):
    status = 504
    code = "timeout"


class UpstreamError(SwitchyardError):
    status = 502
    type = "upstream_error"
    code = "upstream_error"
    retryable = True


class UpstreamAuthError(UpstreamError):
    code = "upstream_auth_error"
    retryable = True  # another upstream or account may still work


class UpstreamRateLimited(UpstreamError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"
    retryable = True


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class UpstreamBadRequest(UpstreamError):
    status = 400
    type = "invalid_request_error"
    code = "upstream_bad_request"
    retryable = False


class UpstreamProtocolError(UpstreamError):
    code = "upstream_protocol_error"


class UpstreamTooLarge(UpstreamProtocolError):
    """An upstream's answer (an image at the URL it gave, say) is larger than this gateway takes."""

    code = "upstream_too_large"
    retryable = False


# ---- ChatGPT-API-server's browser agents (services/agent_bridge); /api/ask maps each code to the
# seed's own status and body (services/edge/routes/agents.py). None is retried by another replica:
# an agent may have taken the turn already.


class AgentConversationUnknown(InvalidRequest):
    """A follow-up names a conversation no agent is known to hold (never seen, or forgotten)."""

    status = 404
    code = "agent_conversation_not_found"


class AgentGone(UpstreamError):
    """The agent that holds the conversation is no longer connected."""

    status = 410
    code = "agent_gone"
    retryable = False


class AgentLost(UpstreamError):
    """The agent's socket closed while it had the ask."""

    code = "agent_lost"
    retryable = False


class AgentPingFailed(UpstreamError):
    """The agent did not answer its ping in time (tried on up to 3 agents for a new conversation)."""

    status = 503
    code = "agent_ping_failed"
    retryable = False


class AgentFailed(UpstreamError):
    """The agent answered with an error frame or with data that is not a ChatGptResponse."""

    code = "agent_error"
    retryable = False


class AgentTimeout(UpstreamTimeout):
    """The agent stayed silent past the answer limit."""

    code = "agent_timeout"
    retryable = False


def _all_subclasses(cls: type[SwitchyardError]) -> list[type[SwitchyardError]]:
    found: list[type[SwitchyardError]] = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_all_subclasses(sub))
    return found


# `code` → class, for errors that crossed the bus. InvalidRequest has per-instance codes,
# so unknown codes fall back on the status the worker reported.
_BY_CODE: dict[str, type[SwitchyardError]] = {
    c.code: c for c in _all_subclasses(SwitchyardError) if c is not InvalidRequest
}


def from_wire(wire: dict[str, Any]) -> SwitchyardError:
    """Rebuild an error a worker published (`SwitchyardError.to_wire`)."""
    code = str(wire.get("code") or "upstream_error")
    message = str(wire.get("message") or "upstream failure")
    cls = _BY_CODE.get(code)
    if cls is None:
        if code.startswith("invalid"):
            return InvalidRequest(message, param=wire.get("param"), code=code)
        return UpstreamError(message)
    if issubclass(cls, InvalidRequest):
        # subclasses may have their own constructors (ModelNotFound): build through the base one
        invalid = cls.__new__(cls)
        InvalidRequest.__init__(invalid, message, param=wire.get("param"))
        return invalid
    retry_after = wire.get("retry_after")
    param = wire.get("param")
    return cls(message, param=param if isinstance(param, str) else None,
               retry_after=float(retry_after) if retry_after is not None else None)


# The edge's own refusals of a managed key. Defined after `_BY_CODE`: they never cross the bus,
# and `rate_limit_exceeded` there is an upstream's (UpstreamRateLimited).


class ModelNotAllowed(InvalidRequest):
    """A managed key's `models` patterns do not cover the model asked for (the key is never named)."""

    status = 403
    code = "model_not_allowed"

    def __init__(self, model: str) -> None:
        super().__init__(f"This key is not allowed to use the model '{model}'.", param="model")


class KeyRateLimited(SwitchyardError):
    """A managed key's requests or tokens per minute are spent (OpenAI's shape: type `requests` or
    `tokens`, code `rate_limit_exceeded`)."""

    status = 429
    type = "requests"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float | None = None, kind: str = "requests") -> None:
        super().__init__(message, retry_after=retry_after)
        self.type = kind  # type: ignore[misc]  # per-instance: requests or tokens


class KeyQuotaExceeded(SwitchyardError):
    """A managed key's token budget (total, or this period's) is spent."""

    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"


class KeyConcurrencyLimited(SwitchyardError):
    """A managed key has as many requests in progress as it may, across every edge."""

    status = 429
    type = "requests"
    code = "concurrency_limit_exceeded"
