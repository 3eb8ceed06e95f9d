"""How sydney-worker reads a failed Bing call (libs/bing/failures.py): what the pool learns about
the account, what the client is told, and whether another account may be tried."""

from __future__ import annotations

import pytest

from libs.account_pool.outcome import Verdict
from libs.bing.errors import BingUnavailable, ChatClosed, ChatRefused, ChatTimeout, CreateFailed, UploadRejected
from libs.bing.failures import create_failure, transport_failure, turn_failure
from libs.bing.turn import TurnFailed
from libs.errors import ContentFiltered, InvalidRequest, UpstreamAuthError, UpstreamError, UpstreamRateLimited


@pytest.mark.parametrize(("value", "continued", "verdict", "error", "retryable"), [
    ("Throttled", False, Verdict.RATE_LIMITED, UpstreamRateLimited, True),
    ("CaptchaChallenge", False, Verdict.AUTH_INVALID, UpstreamAuthError, True),
    ("UnauthorizedRequest", False, Verdict.AUTH_INVALID, UpstreamAuthError, True),
    ("InvalidSession", False, Verdict.AUTH_INVALID, UpstreamAuthError, True),
    ("InvalidSession", True, Verdict.NEUTRAL, InvalidRequest, False),
    ("InvalidRequest", True, Verdict.NEUTRAL, InvalidRequest, False),
    ("Apology", False, Verdict.NEUTRAL, ContentFiltered, False),
    ("Closed", False, Verdict.FAILURE, UpstreamError, True),
    ("ProcessingMessage", False, Verdict.FAILURE, UpstreamError, True),
])
def test_turn_results(value: str, continued: bool, verdict: Verdict, error: type, retryable: bool) -> None:
    failure = turn_failure(TurnFailed(value, "said by Bing"), continued=continued)
    assert failure.outcome.verdict is verdict and type(failure.error) is error
    assert failure.error.retryable is retryable
    if verdict is Verdict.AUTH_INVALID:
        assert failure.outcome.reason.startswith(value)  # the operator's list says why
    if value == "InvalidSession" and continued:
        assert failure.error.code == "invalid_conversation" and failure.error.param == "conversation"


def test_a_refused_upgrade_on_a_continued_conversation_refuses_the_token_not_the_account() -> None:
    new = transport_failure(ChatRefused(401))
    assert new.outcome.verdict is Verdict.AUTH_INVALID
    continued = transport_failure(ChatRefused(401), continued=True)
    assert continued.outcome.verdict is Verdict.NEUTRAL
    assert isinstance(continued.error, InvalidRequest) and continued.error.code == "invalid_conversation"


@pytest.mark.parametrize(("exc", "verdict", "error"), [
    (ChatRefused(429), Verdict.RATE_LIMITED, UpstreamRateLimited),
    (ChatTimeout("silent"), Verdict.FAILURE, UpstreamError),
    (ChatClosed("gone", 1006), Verdict.FAILURE, UpstreamError),
    (BingUnavailable("down", 503), Verdict.FAILURE, UpstreamError),
    (UploadRejected("no blob"), Verdict.NEUTRAL, InvalidRequest),
])
def test_transport_failures(exc: Exception, verdict: Verdict, error: type) -> None:
    failure = transport_failure(exc)  # type: ignore[arg-type]
    assert failure.outcome.verdict is verdict and isinstance(failure.error, error)


@pytest.mark.parametrize(("status", "value", "verdict"), [
    (200, "UnauthorizedRequest", Verdict.AUTH_INVALID), (403, "HTTP 403", Verdict.AUTH_INVALID),
    (429, "HTTP 429", Verdict.RATE_LIMITED), (503, "HTTP 503", Verdict.FAILURE),
])
def test_create_failures(status: int, value: str, verdict: Verdict) -> None:
    assert create_failure(CreateFailed(status, value, "no")).outcome.verdict is verdict


def test_an_error_on_the_callers_cookies_loses_them_and_is_final() -> None:
    from libs.bing.session import Who
    from libs.errors import UpstreamError
    from services.sydney_worker.turns import _final

    who = Who(None, {"_U": "callers-own-u-cookie", "MUID": "callers-muid-0001"})
    error = _final(UpstreamError("Bing failed: cookie _U callers-own-u-cookie rejected; muid callers-muid-0001"), who)
    assert "callers-own-u-cookie" not in error.message and "callers-muid-0001" not in error.message
    assert error.retryable is False  # no other cookies may run this caller's turn
