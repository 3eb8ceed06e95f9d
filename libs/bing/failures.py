"""What a failed Bing call means: for the account pool (an `Outcome`) and for a client (an error).

Bing states most failures itself, as a `type:2` result value (§3.2 of the fact sheet):
- `Throttled` (the account's daily cap): RATE_LIMITED, the account cools down; another may answer.
- `CaptchaChallenge`: only a person on bing.com can solve it, and every further turn meets it
  again, so the account is quarantined with that reason (the operator solves it, then restores).
- `UnauthorizedRequest`, and `InvalidSession` on a conversation we just created: the cookies are
  refused; quarantined with the reason.
- `InvalidSession` on a conversation the client asked to continue: the conversation expired (6 h)
  or is not this account's. The client's to fix (400 `invalid_conversation`); the account is fine.
- A refused ChatHub upgrade (401/403) on a continued conversation: its token is refused, not the
  account (400 `invalid_conversation`); on a new one, the account's cookies are (quarantine).
- `InvalidRequest` (a conversation over its turn cap): the client's request, 400.
- `Apology`: the prompt tripped Bing's filter (or Bing revoked its answer); not the account's fault.
- A `type:7` close, a socket that ends early or stays silent, a refused upgrade, a create that
  fails with a server error: FAILUREs, counted toward a cooldown; another account may answer.
Every text here is secret-free: libs/bing's errors never carry a cookie or a token.
"""

from __future__ import annotations

from libs.account_pool.outcome import Outcome, Verdict
from libs.bing.errors import BingError, BingUnavailable, ChatRefused, ChatTimeout, CreateFailed, UploadRejected
from libs.bing.turn import TurnFailed
from libs.errors import (
    ContentFiltered,
    InvalidRequest,
    SwitchyardError,
    UpstreamAuthError,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
)

_SHORT = 160  # characters of Bing's own message kept in a reason


class BingFailure(Exception):
    """A classified failure: `error` is what a client gets, `outcome` what the pool learns, `value`
    Bing's own word for it (a `type:2` result value, `Closed`, `HTTP 503`, ...)."""

    def __init__(self, value: str, outcome: Outcome, error: SwitchyardError) -> None:
        super().__init__(error.message)
        self.value = value
        self.outcome = outcome
        self.error = error


def _said(message: str) -> str:
    message = " ".join(message.split())[:_SHORT]
    return f": {message}" if message else ""


def turn_failure(item: TurnFailed, *, continued: bool) -> BingFailure:
    """A turn Bing ended with an error; `continued`: on a conversation the client gave back."""
    value, said = item.value, _said(item.message)
    reason = f"{value}{said}"[:_SHORT]
    if value == "Throttled":
        return BingFailure(value, Outcome(Verdict.RATE_LIMITED, reason=reason),
                           UpstreamRateLimited(f"Bing throttled the account{said}"))
    if value == "CaptchaChallenge":
        return BingFailure(value, Outcome(Verdict.AUTH_INVALID, reason="CaptchaChallenge: solve it on bing.com"),
                           UpstreamAuthError(f"Bing asks the account to solve a CAPTCHA{said}"))
    if value == "InvalidSession" and continued:
        return BingFailure(value, Outcome.neutral(),
                           InvalidRequest(f"the Bing conversation does not exist or has expired{said}",
                                          param="conversation", code="invalid_conversation"))
    if value in ("UnauthorizedRequest", "InvalidSession"):
        return BingFailure(value, Outcome(Verdict.AUTH_INVALID, reason=reason),
                           UpstreamAuthError(f"Bing refused the account ({value}){said}"))
    if value == "InvalidRequest":
        return BingFailure(value, Outcome.neutral(),
                           InvalidRequest(f"Bing refused the request{said}", code="invalid_request"))
    if value == "Apology":
        return BingFailure(value, Outcome.neutral(), ContentFiltered(f"Bing withheld its answer{said}"))
    return BingFailure(value, Outcome(Verdict.FAILURE, reason=reason), UpstreamError(f"Bing failed ({value}){said}"))


def create_failure(exc: CreateFailed) -> BingFailure:
    said = _said(exc.message)
    if exc.value == "UnauthorizedRequest" or exc.status in (401, 403):
        return BingFailure(exc.value, Outcome(Verdict.AUTH_INVALID, reason=f"create: {exc.value}{said}"[:_SHORT]),
                           UpstreamAuthError(f"Bing refused to create a conversation ({exc.value}){said}"))
    if exc.status == 429:
        return BingFailure(exc.value, Outcome(Verdict.RATE_LIMITED, reason="create: HTTP 429"),
                           UpstreamRateLimited("Bing rate limited conversation create (HTTP 429)"))
    return BingFailure(exc.value, Outcome(Verdict.FAILURE, reason=f"create: {exc.value}"[:_SHORT]),
                       UpstreamError(f"failed to create the Bing conversation ({exc.value}){said}"))


def transport_failure(exc: BingError, *, continued: bool = False) -> BingFailure:
    """The socket or the HTTP call failed underneath the protocol; `continued`: on a conversation
    the client gave back, whose sec_access_token is what a refused upgrade (401/403) refuses."""
    if isinstance(exc, ChatRefused) and exc.status in (401, 403) and continued:
        return BingFailure(f"HTTP {exc.status}", Outcome.neutral(),
                           InvalidRequest(f"Bing refused the conversation's access token (HTTP {exc.status}): it "
                                          "expired or belongs to other cookies", param="conversation",
                                          code="invalid_conversation"))
    if isinstance(exc, ChatRefused) and exc.status in (401, 403):
        return BingFailure(f"HTTP {exc.status}", Outcome(Verdict.AUTH_INVALID, reason=f"chathub: HTTP {exc.status}"),
                           UpstreamAuthError(str(exc)))
    if isinstance(exc, ChatRefused) and exc.status == 429:
        return BingFailure("HTTP 429", Outcome(Verdict.RATE_LIMITED, reason="chathub: HTTP 429"),
                           UpstreamRateLimited(str(exc)))
    if isinstance(exc, ChatTimeout):
        return BingFailure("Timeout", Outcome(Verdict.FAILURE, reason="chathub: silent"),
                           UpstreamTimeout(f"Bing went silent mid-turn{_said(str(exc))}"))
    if isinstance(exc, UploadRejected):
        return BingFailure("Rejected", Outcome.neutral(),
                           InvalidRequest("Bing refused the image (its upload answered no blobId)", param="file",
                                          code="invalid_image"))
    status = exc.status if isinstance(exc, BingUnavailable) else None
    value = f"HTTP {status}" if status else type(exc).__name__
    if status == 429:
        return BingFailure(value, Outcome(Verdict.RATE_LIMITED, reason="HTTP 429"),
                           UpstreamRateLimited(f"Bing rate limited the account{_said(str(exc))}"))
    return BingFailure(value, Outcome(Verdict.FAILURE, reason=f"{value}{_said(str(exc))}"[:_SHORT]),
                       UpstreamError(f"Bing failed{_said(str(exc))}"))
