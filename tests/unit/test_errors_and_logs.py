"""libs.errors (one table from error class to OpenAI error body) and libs.logs (redaction)."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import orjson
import pytest

from libs import errors
from libs.errors import (
    AccountsBusy,
    AuthenticationFailed,
    BodyTooLarge,
    BusError,
    BusUnavailable,
    ClientTooSlow,
    ContentFiltered,
    ContextLengthExceeded,
    DeadlineExceeded,
    ImageNotFound,
    InvalidRequest,
    KeyConcurrencyLimited,
    KeyQuotaExceeded,
    KeyRateLimited,
    ModelNotAllowed,
    ModelNotFound,
    NoCapacity,
    NoWorker,
    ReplyGap,
    ShuttingDown,
    SwitchyardError,
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamTooLarge,
    WorkerLost,
    from_wire,
)
from libs.logs import JsonFormatter, redact

# class, status, type, code, retryable
TABLE: list[tuple[type[SwitchyardError], int, str, str, bool]] = [
    (SwitchyardError, 500, "server_error", "internal_error", False),
    (InvalidRequest, 400, "invalid_request_error", "invalid_value", False),
    (BodyTooLarge, 413, "invalid_request_error", "request_too_large", False),
    (ModelNotFound, 404, "invalid_request_error", "model_not_found", False),
    (ImageNotFound, 404, "invalid_request_error", "image_not_found", False),
    (ContentFiltered, 400, "invalid_request_error", "content_policy_violation", False),
    (ContextLengthExceeded, 400, "invalid_request_error", "context_length_exceeded", False),
    (AuthenticationFailed, 401, "invalid_request_error", "invalid_api_key", False),
    (BusError, 502, "server_error", "bus_error", False),
    (NoCapacity, 503, "server_error", "no_capacity", False),
    (AccountsBusy, 429, "rate_limit_error", "accounts_busy", True),
    (NoWorker, 503, "server_error", "no_worker", False),
    (BusUnavailable, 503, "server_error", "bus_unavailable", False),
    (WorkerLost, 502, "server_error", "worker_lost", False),
    (ReplyGap, 502, "server_error", "reply_gap", False),
    (ClientTooSlow, 503, "server_error", "client_too_slow", False),
    (ShuttingDown, 503, "server_error", "shutting_down", False),
    (DeadlineExceeded, 504, "server_error", "timeout", False),
    (UpstreamError, 502, "upstream_error", "upstream_error", True),
    (UpstreamAuthError, 502, "upstream_error", "upstream_auth_error", True),
    (UpstreamRateLimited, 429, "rate_limit_error", "rate_limit_exceeded", True),
    (UpstreamTimeout, 504, "upstream_error", "upstream_timeout", True),
    (UpstreamBadRequest, 400, "invalid_request_error", "upstream_bad_request", False),
    (UpstreamProtocolError, 502, "upstream_error", "upstream_protocol_error", True),
    (UpstreamTooLarge, 502, "upstream_error", "upstream_too_large", False),
    (errors.AgentConversationUnknown, 404, "invalid_request_error", "agent_conversation_not_found", False),
    (errors.AgentGone, 410, "upstream_error", "agent_gone", False),
    (errors.AgentLost, 502, "upstream_error", "agent_lost", False),
    (errors.AgentPingFailed, 503, "upstream_error", "agent_ping_failed", False),
    (errors.AgentFailed, 502, "upstream_error", "agent_error", False),
    (errors.AgentTimeout, 504, "upstream_error", "agent_timeout", False),
]
WIRE_CLASSES = [row[0] for row in TABLE if row[0] is not SwitchyardError]
# the edge's refusals of a managed key (services/edge/limits.py): never on the bus
EDGE_ONLY: list[tuple[type[SwitchyardError], int, str, str, bool]] = [
    (ModelNotAllowed, 403, "invalid_request_error", "model_not_allowed", False),
    (KeyRateLimited, 429, "requests", "rate_limit_exceeded", False),
    (KeyQuotaExceeded, 429, "insufficient_quota", "insufficient_quota", False),
    (KeyConcurrencyLimited, 429, "requests", "concurrency_limit_exceeded", False),
]


def make(cls: type[SwitchyardError], message: str = "boom", **kwargs: Any) -> SwitchyardError:
    if cls is ModelNotFound:
        return ModelNotFound("some-model")
    return cls(message, **kwargs)


def test_table_covers_every_error_class() -> None:
    def walk(cls: type[SwitchyardError]) -> set[type[SwitchyardError]]:
        return {cls}.union(*(walk(sub) for sub in cls.__subclasses__()))

    assert walk(SwitchyardError) == {row[0] for row in TABLE + EDGE_ONLY}


@pytest.mark.parametrize(("cls", "status", "type_", "code", "retryable"), EDGE_ONLY,
                         ids=[r[0].__name__ for r in EDGE_ONLY])
def test_edge_only_classes(cls: type[SwitchyardError], status: int, type_: str, code: str, retryable: bool) -> None:
    err = make(cls)
    assert (err.status, err.type, err.code, err.retryable) == (status, type_, code, retryable)
    assert set(err.body()["error"]) == {"message", "type", "param", "code"}
    assert from_wire(err.to_wire()).__class__ is not cls  # never rebuilt from the bus


def test_codes_are_unique() -> None:
    codes = [row[3] for row in TABLE]
    assert len(codes) == len(set(codes))


@pytest.mark.parametrize(("cls", "status", "type_", "code", "retryable"), TABLE, ids=[r[0].__name__ for r in TABLE])
def test_status_type_code_table(
    cls: type[SwitchyardError], status: int, type_: str, code: str, retryable: bool
) -> None:
    err = make(cls)
    assert (err.status, err.type, err.code, err.retryable) == (status, type_, code, retryable)
    assert isinstance(err, Exception)


@pytest.mark.parametrize("cls", [row[0] for row in TABLE], ids=[r[0].__name__ for r in TABLE])
def test_body_shape(cls: type[SwitchyardError]) -> None:
    err = make(cls)
    body = err.body()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"] == err.message == str(err)
    assert body["error"]["type"] == err.type
    assert body["error"]["code"] == err.code
    orjson.dumps(body)  # serialisable


def test_invalid_request_param_and_code_override() -> None:
    err = InvalidRequest("bad temperature", param="temperature", code="invalid_type")
    assert err.body() == {
        "error": {"message": "bad temperature", "type": "invalid_request_error", "param": "temperature",
                  "code": "invalid_type"},
    }  # fmt: skip
    # the refinement is per instance
    assert InvalidRequest("x").code == "invalid_value"


def test_model_not_found_message_and_param() -> None:
    err = ModelNotFound("gpt-9")
    assert err.message == "The model 'gpt-9' does not exist or you do not have access to it."
    assert err.param == "model"


@pytest.mark.parametrize(
    ("retry_after", "header", "ms"),
    [(None, None, None), (0, "1", "1"), (0.2, "1", "200"), (0.5, "1", "500"), (1, "1", "1000"),
     (1.4, "2", "1400"), (1.6, "2", "1600"), (3.0, "3", "3000"), (30, "30", "30000"), (59.7, "60", "59700"),
     (0.0014, "1", "2")],
)  # fmt: skip
def test_retry_after_header(retry_after: float | None, header: str | None, ms: str | None) -> None:
    # retry-after-ms: what the official OpenAI SDKs read first, to the millisecond (never early)
    err = UpstreamRateLimited("slow down", retry_after=retry_after)
    assert err.headers() == ({} if header is None else {"retry-after": header, "retry-after-ms": ms})


def test_no_retry_after_header_for_errors_without_it() -> None:
    assert InvalidRequest("x").headers() == {}
    assert NoCapacity("full").headers() == {}
    assert NoCapacity("full", retry_after=2).headers() == {"retry-after": "2", "retry-after-ms": "2000"}


@pytest.mark.parametrize("cls", WIRE_CLASSES, ids=[c.__name__ for c in WIRE_CLASSES])
def test_wire_round_trip_every_class(cls: type[SwitchyardError]) -> None:
    kwargs: dict[str, Any] = {}
    if not issubclass(cls, InvalidRequest):  # an invalid request is never worth retrying later
        kwargs["retry_after"] = 4.5
    original = make(cls, "it broke", **kwargs)
    wire = original.to_wire()
    assert wire["code"] == original.code
    assert wire["message"] == original.message
    assert wire["retryable"] is original.retryable
    back = from_wire(orjson.loads(orjson.dumps(wire)))
    assert type(back) is cls
    assert (back.status, back.type, back.code, back.retryable) == (
        original.status, original.type, original.code, original.retryable,
    )  # fmt: skip
    assert back.message == original.message
    assert back.param == original.param
    assert back.retry_after == original.retry_after
    assert back.body() == original.body()
    assert back.headers() == original.headers()


def test_to_wire_shape() -> None:
    assert UpstreamTimeout("t").to_wire() == {"code": "upstream_timeout", "message": "t", "retryable": True}
    assert UpstreamRateLimited("r", retry_after=2.5).to_wire() == {
        "code": "rate_limit_exceeded", "message": "r", "retryable": True, "retry_after": 2.5,
    }  # fmt: skip
    assert InvalidRequest("bad", param="n", code="invalid_n").to_wire() == {
        "code": "invalid_n", "message": "bad", "retryable": False, "param": "n",
    }  # fmt: skip


def test_invalid_request_with_custom_code_round_trips() -> None:
    back = from_wire(InvalidRequest("bad n", param="n", code="invalid_n").to_wire())
    assert type(back) is InvalidRequest
    assert (back.status, back.code, back.param, back.message) == (400, "invalid_n", "n", "bad n")


@pytest.mark.parametrize(
    ("wire", "cls", "status", "code", "message"),
    [
        ({"code": "brand_new_code", "message": "hm", "retryable": True}, UpstreamError, 502, "upstream_error", "hm"),
        ({"code": "invalid_something", "message": "no", "retryable": False}, InvalidRequest, 400,
         "invalid_something", "no"),
        ({"code": "internal_error", "message": "x", "retryable": False}, UpstreamError, 502, "upstream_error", "x"),
        ({}, UpstreamError, 502, "upstream_error", "upstream failure"),
        ({"code": "", "message": ""}, UpstreamError, 502, "upstream_error", "upstream failure"),
        ({"code": None, "message": None}, UpstreamError, 502, "upstream_error", "upstream failure"),
    ],
)  # fmt: skip
def test_from_wire_unknown_codes(wire: dict[str, Any], cls: type, status: int, code: str, message: str) -> None:
    err = from_wire(wire)
    assert type(err) is cls
    assert (err.status, err.code, err.message) == (status, code, message)


def test_from_wire_retry_after_is_float() -> None:
    err = from_wire({"code": "no_capacity", "message": "m", "retryable": False, "retry_after": 3})
    assert isinstance(err, NoCapacity)
    assert err.retry_after == 3.0 and isinstance(err.retry_after, float)
    assert err.headers() == {"retry-after": "3", "retry-after-ms": "3000"}


def test_by_code_table_excludes_the_generic_invalid_request() -> None:
    assert "invalid_value" not in errors._BY_CODE
    assert errors._BY_CODE["rate_limit_exceeded"] is UpstreamRateLimited


# ---- logs ----------------------------------------------------------------------------------

SECRETS = [
    "Bearer abcdef0123456789",
    "sk-proj-AbCdEf0123456789xyz",
    "sk-abcdef123456",
    "api_key=hunter2hunter2",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
]


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer abcdef0123456789", "abcdef0123456789"),
        ("authorization=bearer abcDEF.ghi-jkl_mno", "abcDEF.ghi-jkl_mno"),
        ("upstream said: invalid key sk-proj-AbCdEf0123456789xyz", "AbCdEf0123456789xyz"),
        ("key sk-abcdef123456 rejected", "abcdef123456"),
        ("pk-live_1234567890 and rk-test_1234567890", "1234567890"),
        ("GET /v1?api_key=hunter2hunter2&x=1", "hunter2hunter2"),
        ("api-key: hunter2hunter2", "hunter2hunter2"),
        ("APIKEY=s3cr3tvalue", "s3cr3tvalue"),
        ("access_token=ya29.a0AfH6SMB", "ya29.a0AfH6SMB"),
        ("token: ghp_abcdefghijkl", "ghp_abcdefghijkl"),
        ("Cookie: session=abc123def456", "abc123def456"),
        ("cookie=_U=1A2B3C4D5E6F", "1A2B3C4D5E6F"),
        ("_U=1A2B3C4D5E6F7G8H", "1A2B3C4D5E6F7G8H"),
        (
            "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c end",
            "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
        ),
        (
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
            "eyJzdWIiOiIxMjM0NTY3ODkwIn0",
        ),
    ],
)
def test_redact_removes_secrets(text: str, secret: str) -> None:
    out = redact(text)
    assert secret not in out
    assert "[redacted]" in out


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer abcdef0123456789", "Authorization: [redacted] [redacted]"),
        ("api_key=hunter2hunter2, next", "api_key=[redacted], next"),
        ("x-api-key: hunter2hunter2", "x-api-key: [redacted]"),
    ],
)
def test_redact_keeps_the_label(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_redact_every_cookie_of_a_cookie_header() -> None:
    out = redact("Cookie: theme=dark; session_id=s3cr3tS3ssionValue42")
    assert "s3cr3tS3ssionValue42" not in out


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ('{"error": {"message": "bad key", "api_key": "s3cr3tvalue123"}}', "s3cr3tvalue123"),
        ("{'access_token': 's3cr3tvalue456'}", "s3cr3tvalue456"),
        ('{"headers": {"cookie": "session=s3cr3tvalue789"}}', "s3cr3tvalue789"),
    ],
)
def test_redact_secrets_in_json_bodies(text: str, secret: str) -> None:
    """Upstream error bodies are JSON: a quoted key must not shield its value."""
    assert secret not in redact(text)


@pytest.mark.parametrize(
    "text",
    [
        "job 1234 finished in 35 ms",
        "model gpt-4o routed to pool openai",
        "status=200 duration_ms=12",
        "task-abcdefgh done",  # "sk-" only at a word boundary
        "the token count is high",
        "",
    ],
)
def test_redact_leaves_ordinary_text_alone(text: str) -> None:
    assert redact(text) == text


def test_redact_is_idempotent() -> None:
    text = " | ".join(SECRETS)
    once = redact(text)
    assert redact(once) == once
    for secret in SECRETS:
        assert secret not in once


def record(msg: str, *args: Any, exc_info: Any = None, **extra: Any) -> logging.LogRecord:
    rec = logging.LogRecord("sy.test", logging.WARNING, __file__, 1, msg, args, exc_info)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_json_formatter_one_redacted_json_line() -> None:
    formatter = JsonFormatter("edge")
    line = formatter.format(record("upstream rejected %s\nsecond line", "sk-abcdef1234567890"))
    assert "\n" not in line
    entry = orjson.loads(line)
    assert entry["level"] == "warning"
    assert entry["service"] == "edge"
    assert entry["logger"] == "sy.test"
    assert entry["msg"].startswith("upstream rejected ")
    assert "abcdef1234567890" not in entry["msg"]
    assert "[redacted]" in entry["msg"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["ts"])
    assert set(entry) == {"ts", "level", "service", "logger", "msg"}


def test_json_formatter_includes_known_extras_only() -> None:
    formatter = JsonFormatter("worker")
    rec = record(
        "done", request_id="req-1", job_id="job-1", model="m", pool="p", status=200, duration_ms=12.5,
        attempt=2, worker_id="w1", other="ignored", pool_none=None,
    )  # fmt: skip
    entry = orjson.loads(formatter.format(rec))
    assert {k: entry[k] for k in ("request_id", "job_id", "model", "pool", "status", "duration_ms", "attempt",
                                  "worker_id")} == {
        "request_id": "req-1", "job_id": "job-1", "model": "m", "pool": "p", "status": 200, "duration_ms": 12.5,
        "attempt": 2, "worker_id": "w1",
    }  # fmt: skip
    assert "other" not in entry


def test_json_formatter_redacts_exceptions() -> None:
    formatter = JsonFormatter("edge")
    try:
        raise RuntimeError("auth failed with Bearer abcdef0123456789")
    except RuntimeError:
        rec = record("failed", exc_info=sys.exc_info())
    line = formatter.format(rec)
    assert "\n" not in line
    entry = orjson.loads(line)
    assert "RuntimeError" in entry["exc"]
    assert "abcdef0123456789" not in entry["exc"]
