"""ChatGPT web upstream failures classified (fact sheet §2.8): the pool's Outcome, the OpenAI
client's error, the native routes' status and body; and no secret of the call in any of them."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import orjson
import pytest

from libs.account_pool.outcome import Outcome, Verdict
from libs.errors import (
    ContextLengthExceeded,
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
)
from services.chatgpt_web_worker.client import classify_reply
from services.chatgpt_web_worker.upstream_errors import (
    ONE_AT_A_TIME_CLEARS_IN,
    UpstreamFailure,
    classify,
    stream_failure,
    unreachable,
)

# JWT-shaped access token and an opaque cookie value (no credential pattern matches the cookie:
# only the verbatim scrubbing of the call's own secrets removes it)
ACCESS = ("eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOjQxMDI0NDQ4MDAsInN1YiI6InVzZXItdGVzdCJ9"
          ".c2lnbmF0dXJlLW5vdC1jaGVja2Vk")
COOKIE = "q8Zr1xV0/Lm3Nw7TpK2sYb5HdJ9eFg4c+Wn6"
SECRETS = (ACCESS, COOKIE)
MODEL = "gpt-4o"

CLOUDFLARE_PAGE = (b"<!DOCTYPE html><html><head><title>Just a moment...</title></head><body>"
                   b"<div id=\"cf-please-wait\">Checking your browser</div>"
                   b"<script src=\"/cdn-cgi/challenge-platform/h/g/orchestrate/chl_page/v1?ray=1&cf_chl_rt_tk=x\">"
                   b"</script></body></html>")


def _json(body: dict[str, Any]) -> bytes:
    return orjson.dumps(body)


def _classify(status: int, body: bytes, content_type: str | None = "application/json") -> UpstreamFailure:
    return classify(status, body, content_type, model=MODEL, secrets=SECRETS)


def _all_text(failure: UpstreamFailure) -> str:
    return " ".join([str(failure), failure.error.message, orjson.dumps(failure.error.to_wire()).decode(),
                     orjson.dumps(failure.body).decode(), failure.outcome.reason])


def test_401_token_expired_is_auth_expired() -> None:
    body = _json({"detail": {"message": "Your authentication token has expired. Please try signing in again.",
                             "type": "invalid_request_error", "param": None, "code": "token_expired"}})
    failure = _classify(401, body)
    assert failure.outcome == Outcome(Verdict.AUTH_EXPIRED, reason="401 token_expired")
    assert isinstance(failure.error, UpstreamAuthError) and failure.error.retryable
    assert failure.status == 401 and failure.body == orjson.loads(body)  # native routes keep both


def test_401_saying_expired_without_the_code_is_auth_expired() -> None:
    body = _json({"error": {"message": "Your authentication token has expired. Please try signing in again."}})
    assert _classify(401, body).outcome.verdict is Verdict.AUTH_EXPIRED


def test_other_401_is_auth_invalid_with_the_reason() -> None:
    failure = _classify(401, _json({"detail": "Could not parse your authentication token. Please try signing in."}))
    assert failure.outcome.verdict is Verdict.AUTH_INVALID
    assert "Could not parse your authentication token" in failure.outcome.reason
    assert isinstance(failure.error, UpstreamAuthError) and failure.error.retryable


@pytest.mark.parametrize("status", [403, 503])
def test_cloudflare_page(status: int) -> None:
    failure = _classify(status, CLOUDFLARE_PAGE, "text/html; charset=UTF-8")
    assert failure.outcome.verdict is Verdict.CLOUDFLARE
    assert failure.error.retryable and failure.error.status == 502
    assert failure.body == {"detail": "cf-please-wait: a Cloudflare challenge page"}  # not the page itself


@pytest.mark.parametrize("page", [b"<html><title>Just a moment...</title></html>", b"<a href='?__cf_chl_tk=1'>"])
def test_each_cloudflare_marker_alone(page: bytes) -> None:
    assert _classify(403, page, "text/html").outcome.verdict is Verdict.CLOUDFLARE


def test_other_403_is_auth_invalid_with_the_reason() -> None:
    failure = _classify(403, _json({"detail": "Unusual activity has been detected from your device."}))
    assert failure.outcome.verdict is Verdict.AUTH_INVALID
    assert "Unusual activity" in failure.outcome.reason
    assert isinstance(failure.error, UpstreamAuthError)


def test_429_model_cap_with_clears_in() -> None:
    body = _json({"detail": {"message": "You have sent too many messages to the model. Please try again later.",
                             "code": "model_cap_exceeded", "clears_in": 11461}})
    failure = _classify(429, body)
    assert failure.outcome == Outcome(Verdict.RATE_LIMITED, model=MODEL, clears_in=11461.0,
                                      reason="429: model cap of gpt-4o")
    assert isinstance(failure.error, UpstreamRateLimited) and failure.error.retryable
    assert failure.error.retry_after == 11461.0 and failure.error.headers()["retry-after"] == "11461"
    assert "gpt-4o" in failure.error.message


@pytest.mark.parametrize("detail", ["Too many requests in 1 hour. Try again later.",
                                    "Something went wrong, please try reloading the conversation."])
def test_other_429_is_rate_limited_for_every_model(detail: str) -> None:
    failure = _classify(429, _json({"detail": detail}))
    assert failure.outcome.verdict is Verdict.RATE_LIMITED
    assert failure.outcome.model is None and failure.outcome.clears_in is None
    assert isinstance(failure.error, UpstreamRateLimited) and detail in failure.error.message


def test_429_from_a_proxy_in_front() -> None:
    failure = _classify(429, b'{"error": "Rate limited by proxy"}')
    assert failure.outcome.verdict is Verdict.RATE_LIMITED and "Rate limited by proxy" in failure.error.message


@pytest.mark.parametrize("status", [429, 409, 403])
def test_only_one_message_at_a_time_is_a_short_cool_down(status: int) -> None:
    body = _json({"detail": "Only one message at a time. Please allow any other responses to complete before "
                            "sending another message, or wait one minute."})
    failure = _classify(status, body)
    assert failure.outcome.verdict is Verdict.RATE_LIMITED
    assert failure.outcome.model is None and failure.outcome.clears_in == ONE_AT_A_TIME_CLEARS_IN
    assert isinstance(failure.error, UpstreamRateLimited) and failure.error.retryable


def test_413_is_context_length_for_an_openai_client() -> None:
    body = _json({"detail": {"message": "The message you submitted was too long, please reload the conversation "
                                        "and submit something shorter.", "code": "message_length_exceeds_limit"}})
    failure = _classify(413, body)
    assert failure.outcome == Outcome.neutral()
    assert isinstance(failure.error, ContextLengthExceeded) and not failure.error.retryable
    assert failure.error.status == 400 and failure.error.param == "messages"


@pytest.mark.parametrize(("status", "body"), [
    (404, b'{"detail": "Conversation not found"}'),
    (400, b'{"detail": "Invalid request"}'),
    (422, b'{"detail": [{"loc": ["body", "action"], "msg": "field required", "type": "value_error.missing"}]}'),
])
def test_client_faults_are_neutral_and_not_retried(status: int, body: bytes) -> None:
    failure = _classify(status, body)
    assert failure.outcome == Outcome.neutral()
    assert isinstance(failure.error, UpstreamBadRequest) and not failure.error.retryable
    assert failure.body == orjson.loads(body)


@pytest.mark.parametrize(("status", "body", "content_type"), [
    (500, b"Internal Server Error", "text/plain"),
    (502, b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>", "text/html"),
    (500, b'{"detail": "Server error"}', "application/json"),
    (500, b'{"detail": broken', "application/json"),
    (302, b"", None),
])
def test_server_errors_and_the_unexplained_are_failures(status: int, body: bytes, content_type: str | None) -> None:
    failure = _classify(status, body, content_type)
    assert failure.outcome.verdict is Verdict.FAILURE
    assert type(failure.error) is UpstreamError and failure.error.retryable
    assert failure.status == status and isinstance(failure.body, dict) and "detail" in failure.body


def test_plain_bodies_become_a_short_detail() -> None:
    assert _classify(502, b"<html><head><title>502 Bad Gateway</title></head></html>", "text/html").body == {
        "detail": "502 Bad Gateway"}
    long = _classify(500, b"x" * 10_000, "text/plain")
    assert len(long.body["detail"]) <= 200 and len(long.error.message) < 300


def test_secrets_are_scrubbed_from_every_text() -> None:
    echoes = [
        (401, _json({"detail": f"token {ACCESS} refused for cookie {COOKIE}"}), "application/json"),
        (403, f"<html><title>denied {COOKIE}</title></html>".encode(), "text/html"),
        (429, _json({"detail": {"message": f"cap for {quote(COOKIE, safe='')}", "code": "model_cap_exceeded",
                                "clears_in": 5, "echo": [ACCESS]}}), "application/json"),
        (500, f"upstream saw Bearer {ACCESS} and {COOKIE}".encode(), "text/plain"),
        (422, _json({"detail": [{"input": COOKIE}]}), "application/json"),
    ]
    for status, body, content_type in echoes:
        failure = _classify(status, body, content_type)
        text = _all_text(failure)
        assert ACCESS not in text and COOKIE not in text and quote(COOKIE, safe="") not in text, (status, text)
        assert "[redacted]" in text, (status, text)


def test_stream_failures() -> None:
    failure = stream_failure(f"Something went wrong with {COOKIE}", SECRETS)
    assert failure.outcome.verdict is Verdict.FAILURE and failure.status == 500
    assert type(failure.error) is UpstreamError and failure.error.retryable
    assert COOKIE not in _all_text(failure) and "Something went wrong" in failure.error.message
    assert failure.body == {"detail": "Something went wrong with [redacted]"}

    limited = stream_failure("Too many requests in 1 hour. Try again later.", SECRETS)
    assert limited.outcome.verdict is Verdict.RATE_LIMITED and isinstance(limited.error, UpstreamRateLimited)
    busy = stream_failure("Only one message at a time. Please allow any other responses to complete.", SECRETS)
    assert busy.outcome.clears_in == ONE_AT_A_TIME_CLEARS_IN
    assert stream_failure("internal server error", SECRETS).outcome.verdict is Verdict.FAILURE


def test_unreachable() -> None:
    timed_out = unreachable("ReadTimeout", timed_out=True)
    assert isinstance(timed_out.error, UpstreamTimeout) and timed_out.status == 504
    refused = unreachable("ConnectError", timed_out=False)
    assert type(refused.error) is UpstreamError and refused.status == 502
    assert refused.outcome.verdict is timed_out.outcome.verdict is Verdict.FAILURE


@pytest.mark.parametrize(("status", "body", "content_type"), [
    (401, b'{"detail": {"message": "expired", "code": "token_expired"}}', "application/json"),
    (401, b'{"detail": "bad token"}', "application/json"),
    (403, CLOUDFLARE_PAGE, "text/html"),
    (503, CLOUDFLARE_PAGE, "text/html"),
    (403, b"<html><title>Forbidden</title></html>", "text/html"),
    (429, b'{"detail": {"message": "cap", "code": "model_cap_exceeded", "clears_in": 60}}', "application/json"),
    (429, b'{"detail": "Only one message at a time."}', "application/json"),
    (429, b"rate-limit", "text/plain"),
    (413, b'{"detail": {"message": "too long", "code": "message_length_exceeds_limit"}}', "application/json"),
    (422, b'{"detail": [{"loc": ["body"], "msg": "bad"}]}', "application/json"),
    (500, b"Internal Server Error", "text/plain"),
])
def test_the_native_body_classifies_the_same_again(status: int, body: bytes, content_type: str) -> None:
    # WebClient.call returns classify's body for a failed call; classify_reply reads it back
    first = _classify(status, body, content_type)
    again = classify_reply(status, first.body, model=MODEL, secrets=SECRETS)
    assert again.outcome == first.outcome and type(again.error) is type(first.error)
