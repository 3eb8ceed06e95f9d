"""proto/: schemas are valid, the TypedDicts in proto.messages are not stale, subjects map to rules."""

from __future__ import annotations

import typing
from typing import Any

import jsonschema
import pytest

import proto
from proto import messages

RESULT_SCHEMA_IDS = {f"switchyard.v1.{kind}_result" for kind in ("embedding", "image", "moderation")}
SCHEMA_IDS = [f"switchyard.v1.{name}" for name in ("job", "reply", "cancel", "announce", "discover", "puback")]
SCHEMA_IDS += sorted(RESULT_SCHEMA_IDS)
# written by nats-server (JetStream's publish acknowledgement), or OpenAI's response bodies carried
# in a `result` reply: no TypedDict of ours mirrors them
FOREIGN_SCHEMA_IDS = {"switchyard.v1.puback"} | RESULT_SCHEMA_IDS


def validator(schema_id: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(proto.schema(schema_id))


def hints(td: type) -> dict[str, Any]:
    return typing.get_type_hints(td, include_extras=True)


def optional_keys(td: type) -> set[str]:
    # TypedDict.__required_keys__ is unreliable with `from __future__ import annotations` on 3.11,
    # so look at the NotRequired wrappers directly.
    return {k for k, v in hints(td).items() if typing.get_origin(v) is typing.NotRequired}


# ---- schemas -------------------------------------------------------------------------------


@pytest.mark.parametrize("schema_id", SCHEMA_IDS)
def test_schema_is_valid_draft_2020_12(schema_id: str) -> None:
    schema = proto.schema(schema_id)
    assert schema["$id"] == schema_id
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    assert jsonschema.validators.validator_for(schema) is jsonschema.Draft202012Validator


def test_schema_unknown_id() -> None:
    with pytest.raises(KeyError):
        proto.schema("other.v1.job")
    with pytest.raises(FileNotFoundError):
        proto.schema("switchyard.v1.nothing")


def test_schema_types_cover_every_schema() -> None:
    assert set(messages.SCHEMA_TYPES) == set(SCHEMA_IDS) - FOREIGN_SCHEMA_IDS


@pytest.mark.parametrize(
    ("message", "valid"),
    [
        ({"stream": "SY_V1_JOBS", "seq": 7}, True),
        ({"stream": "SY_V1_JOBS", "seq": 7, "duplicate": True, "domain": "hub"}, True),
        ({"error": {"code": 503, "err_code": 10077, "description": "maximum messages exceeded"}}, True),
        ({"error": {"code": 500}, "stream": "SY_V1_JOBS"}, True),
        ({"stream": "OTHER", "seq": 7}, False),  # a job must land in the chat work queue
        ({"stream": "SY_V1_JOBS"}, False),
        ({"stream": "SY_V1_JOBS", "seq": 0}, False),
        ({"error": "refused"}, False),
        ({}, False),
    ],
)
def test_puback_schema_matches_jetstream_answers(message: dict[str, Any], valid: bool) -> None:
    assert validator("switchyard.v1.puback").is_valid(message) is valid


# ---- generated types are not stale ---------------------------------------------------------


def _type_const(td: type) -> str:
    literal = hints(td)["type"]
    assert typing.get_origin(literal) is typing.Literal
    (value,) = typing.get_args(literal)
    return str(value)


def _reply_branch(kind: str) -> dict[str, Any]:
    schema = proto.schema("switchyard.v1.reply")
    matches = [b for b in schema["oneOf"] if b["properties"]["type"].get("const") == kind]
    assert len(matches) == 1, kind
    return matches[0]


def _cases() -> list[tuple[str, type]]:
    return [(sid, td) for sid, tds in messages.SCHEMA_TYPES.items() for td in tds]


@pytest.mark.parametrize(("schema_id", "td"), _cases(), ids=[f"{s}:{t.__name__}" for s, t in _cases()])
def test_typed_dict_keys_equal_schema_properties(schema_id: str, td: type) -> None:
    schema = proto.schema(schema_id)
    if schema_id == "switchyard.v1.reply":
        branch = _reply_branch(_type_const(td))
        properties = set(branch["properties"])
        assert set(schema["properties"]) <= properties
        required = set(schema["required"]) | set(branch.get("required", []))
    else:
        properties = set(schema["properties"])
        required = set(schema["required"])
        assert schema["properties"]["type"]["const"] == _type_const(td)
    keys = set(hints(td))
    assert keys == set(td.__annotations__)
    assert keys == properties
    # and what the schema requires is exactly what the type does not mark NotRequired
    assert keys - optional_keys(td) == required


def test_reply_union_matches_reply_branches() -> None:
    schema = proto.schema("switchyard.v1.reply")
    branch_types = {b["properties"]["type"]["const"] for b in schema["oneOf"]}
    assert branch_types == set(schema["properties"]["type"]["enum"])
    assert {_type_const(td) for td in messages.SCHEMA_TYPES["switchyard.v1.reply"]} == branch_types
    assert set(typing.get_args(messages.Reply)) == set(messages.SCHEMA_TYPES["switchyard.v1.reply"])


@pytest.mark.parametrize(
    ("td", "schema_id", "path"),
    [
        (messages.Timeouts, "switchyard.v1.job", ("properties", "timeouts")),
        (messages.BodyRef, "switchyard.v1.job", ("properties", "body_ref")),
        (messages.Usage, "switchyard.v1.reply", ("end", "usage")),
        (messages.WireError, "switchyard.v1.reply", ("error", "error")),
    ],
)
def test_nested_typed_dicts_match_schema(td: type, schema_id: str, path: tuple[str, str]) -> None:
    if schema_id == "switchyard.v1.reply":
        sub = _reply_branch(path[0])["properties"][path[1]]
    else:
        sub = proto.schema(schema_id)[path[0]][path[1]]
    assert set(hints(td)) == set(sub["properties"])
    assert set(hints(td)) - optional_keys(td) == set(sub["required"])


@pytest.mark.parametrize(
    ("literal", "schema_id", "path"),
    [
        (messages.Feature, "switchyard.v1.announce", ("features", "items", "enum")),
        (hints(messages.Cancel)["reason"], "switchyard.v1.cancel", ("reason", "enum")),
        (hints(messages.Job)["kind"], "switchyard.v1.job", ("kind", "enum")),
    ],
)
def test_literals_match_schema_enums(literal: Any, schema_id: str, path: tuple[str, ...]) -> None:
    node: Any = proto.schema(schema_id)["properties"]
    for key in path:
        node = node[key]
    assert set(typing.get_args(literal)) == set(node)


# ---- subjects ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "pattern", "schema"),
    [
        ("sy.v1.jobs.openai", "sy.v1.jobs.{pool}", "switchyard.v1.job"),
        ("sy.v1.jobs.my_pool-2", "sy.v1.jobs.{pool}", "switchyard.v1.job"),
        ("sy.v1.reply.edge1.abc", "sy.v1.reply.{edge}.{token}", "switchyard.v1.reply"),
        ("sy.v1.cancel", "sy.v1.cancel", "switchyard.v1.cancel"),
        ("sy.v1.announce", "sy.v1.announce", "switchyard.v1.announce"),
        ("sy.v1.discover", "sy.v1.discover", "switchyard.v1.discover"),
        ("$JS.API.STREAM.INFO.X", "$JS.API.>", None),
        ("$JS.API.CONSUMER.MSG.NEXT.SY_V1_JOBS.sy_v1_jobs_openai", "$JS.API.>", None),
        ("$JS.ACK.a.b.c", "$JS.ACK.>", None),
        ("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.S.C", "$JS.EVENT.>", None),
        ("$JS.FC.SY_V1_JOBS.x.y", "$JS.FC.>", None),
        ("$O.SY_V1_BODIES.C.abc", "$O.SY_V1_BODIES.>", None),
        ("_INBOX.x.y", "_INBOX.>", None),
        ("_INBOX.x", "_INBOX.>", None),
    ],
)
def test_rule_for_known_subjects(subject: str, pattern: str, schema: str | None) -> None:
    rule = proto.rule_for(subject)
    assert rule is not None
    assert (rule.pattern, rule.schema) == (pattern, schema)
    if schema is not None:
        proto.schema(schema)  # every named schema exists


@pytest.mark.parametrize(
    "subject",
    [
        "foo.bar",
        "sy.v2.cancel",
        "sy.v1.cancel.extra",
        "sy.v1.chat.jobs",
        "sy.v1.jobs.a.b",
        "sy.v1.reply.edge1",
        "sy.v1.reply.edge1.abc.def",
        "sy.v1.announcex",
        "sy_v1_cancel",
        "$JS.API",
        "_INBOX",
        "$O.OTHER_STORE.x",
        "",
    ],
)
def test_rule_for_unknown_subjects_is_none(subject: str) -> None:
    assert proto.rule_for(subject) is None


def test_subject_helpers_agree_with_rules() -> None:
    cases = [
        (proto.job_subject("openai"), "switchyard.v1.job"),
        (proto.reply_subject("edge1", "tok"), "switchyard.v1.reply"),
        (proto.puback_subject("edge1", "tok"), "switchyard.v1.puback"),
        (proto.CANCEL_SUBJECT, "switchyard.v1.cancel"),
        (proto.ANNOUNCE_SUBJECT, "switchyard.v1.announce"),
        (proto.DISCOVER_SUBJECT, "switchyard.v1.discover"),
    ]
    for subject, schema in cases:
        rule = proto.rule_for(subject)
        assert rule is not None and rule.schema == schema, subject
    assert proto.reply_wildcard("edge1") == "sy.v1.reply.edge1.*"
    assert proto.puback_wildcard("edge1") == "sy.v1.puback.edge1.*"
    puback = proto.rule_for(proto.puback_subject("edge1", "tok"))
    assert puback is not None and puback.status_messages
    assert not any(rule.status_messages for rule in proto.subject_rules() if rule is not puback)
    assert proto.consumer_name("openai") == "sy_v1_jobs_openai"
    contract = proto.contract()
    assert contract["streams"]["jobs"]["name"] == proto.STREAM_JOBS
    assert contract["object_stores"]["bodies"]["name"] == proto.BODY_STORE


@pytest.mark.parametrize("token", ["openai", "pool_1", "a-b", "X"])
def test_check_token_accepts(token: str) -> None:
    assert proto.check_token(token) == token


@pytest.mark.parametrize("token", ["", "a.b", "a*", ">", "a b", "a\n", "pool/x"])
def test_check_token_rejects(token: str) -> None:
    with pytest.raises(ValueError, match="not a valid subject token"):
        proto.check_token(token)
    with pytest.raises(ValueError):
        proto.job_subject(token)


# ---- example messages ----------------------------------------------------------------------

JOB: dict[str, Any] = {
    "type": "job",
    "job_id": "job-1",
    "request_id": "req-1.a",
    "kind": "chat",
    "model": "gpt-4o",
    "pool": "openai",
    "reply": "sy.v1.reply.edge1.tok1",
    "index_offset": 0,
    "created": 1700000000.0,
    "start_by": 1700000010.0,
    "deadline": 1700000600.0,
    "timeouts": {"first_token": 60, "idle": 30, "heartbeat": 5},
    "body": {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
}
START = {"type": "start", "job_id": "j", "attempt": 1, "seq": 0, "worker_id": "w1", "taken_at": 1.0}
DELTA = {
    "type": "delta",
    "job_id": "j",
    "attempt": 1,
    "seq": 1,
    "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None, "logprobs": None}],
}
HEARTBEAT = {"type": "heartbeat", "job_id": "j", "attempt": 2, "seq": 3}
END = {
    "type": "end",
    "job_id": "j",
    "attempt": 1,
    "seq": 5,
    "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3, "estimated": True},
    "system_fingerprint": None,
}
ERROR = {
    "type": "error",
    "job_id": "j",
    "attempt": 1,
    "seq": 2,
    "error": {"code": "rate_limit_exceeded", "message": "slow", "retryable": True, "retry_after": 2.5},
}
CANCEL = {"type": "cancel", "job_id": "j", "reason": "client_disconnected"}
ANNOUNCE = {
    "type": "announce",
    "worker_id": "w1",
    "pool": "openai",
    "models": ["gpt-4o"],
    "serves": {"gpt-4o": ["chat", "completion"]},
    "capacity": 8,
    "in_flight": 0,
    "draining": False,
    "features": ["chat", "n"],
    "ttl": 15,
}
DISCOVER = {"type": "discover", "edge_id": "edge1"}


def with_(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = {**base, **changes}
    return {k: v for k, v in out.items() if v is not DROP}


def without(base: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in base.items() if k not in keys}


DROP = object()

VALID: list[tuple[str, dict[str, Any]]] = [
    ("switchyard.v1.job", JOB),
    ("switchyard.v1.job", with_(JOB, body=DROP, body_ref={"store": "SY_V1_BODIES", "name": "job-1", "size": 9})),
    ("switchyard.v1.job", with_(JOB, kind="completion", index_offset=3, body={"prompt": "x"})),
    ("switchyard.v1.reply", START),
    ("switchyard.v1.reply", DELTA),
    ("switchyard.v1.reply", with_(DELTA, choices=[{"index": 1, "text": "x", "finish_reason": "stop"}])),
    ("switchyard.v1.reply", with_(DELTA, choices=[])),
    ("switchyard.v1.reply", HEARTBEAT),
    ("switchyard.v1.reply", END),
    ("switchyard.v1.reply", without(END, "usage", "system_fingerprint")),
    ("switchyard.v1.reply", with_(END, usage=None, system_fingerprint="fp_1")),
    ("switchyard.v1.reply", ERROR),
    ("switchyard.v1.reply", with_(ERROR, error={"code": "invalid_n", "message": "m", "retryable": False,
                                                "param": None})),
    ("switchyard.v1.cancel", CANCEL),
    ("switchyard.v1.cancel", with_(CANCEL, reason="stale_attempt", attempt=2)),
    ("switchyard.v1.announce", ANNOUNCE),
    ("switchyard.v1.announce", with_(ANNOUNCE, models=[], features=[], draining=True, ttl=0.5)),
    ("switchyard.v1.discover", DISCOVER),
]  # fmt: skip

INVALID: list[tuple[str, str, dict[str, Any]]] = [
    ("switchyard.v1.job", "no body nor body_ref", without(JOB, "body")),
    ("switchyard.v1.job", "both body and body_ref", with_(JOB, body_ref={"store": "s", "name": "n"})),
    ("switchyard.v1.job", "bad reply subject", with_(JOB, reply="sy.v1.reply.edge1")),
    ("switchyard.v1.job", "bad pool", with_(JOB, pool="a.b")),
    ("switchyard.v1.job", "bad kind", with_(JOB, kind="transcription")),
    ("switchyard.v1.job", "negative offset", with_(JOB, index_offset=-1)),
    ("switchyard.v1.job", "zero timeout", with_(JOB, timeouts={"first_token": 0, "idle": 1, "heartbeat": 1})),
    ("switchyard.v1.job", "missing timeout", with_(JOB, timeouts={"first_token": 1, "idle": 1})),
    ("switchyard.v1.job", "extra field", with_(JOB, priority=1)),
    ("switchyard.v1.job", "empty job id", with_(JOB, job_id="")),
    ("switchyard.v1.job", "long job id", with_(JOB, job_id="x" * 65)),
    ("switchyard.v1.job", "bad request id", with_(JOB, request_id="has space")),
    ("switchyard.v1.job", "wrong type", with_(JOB, type="cancel")),
    ("switchyard.v1.reply", "start seq not 0", with_(START, seq=1)),
    ("switchyard.v1.reply", "start without worker", without(START, "worker_id")),
    ("switchyard.v1.reply", "attempt 0", with_(START, attempt=0)),
    ("switchyard.v1.reply", "negative seq", with_(HEARTBEAT, seq=-1)),
    ("switchyard.v1.reply", "delta without choices", without(DELTA, "choices")),
    ("switchyard.v1.reply", "choice without index", with_(DELTA, choices=[{"delta": {}}])),
    ("switchyard.v1.reply", "choice negative index", with_(DELTA, choices=[{"index": -1}])),
    ("switchyard.v1.reply", "choice text not string", with_(DELTA, choices=[{"index": 0, "text": 1}])),
    ("switchyard.v1.reply", "heartbeat with choices", with_(HEARTBEAT, choices=[])),
    ("switchyard.v1.reply", "start with choices", with_(START, choices=[])),
    ("switchyard.v1.reply", "usage missing total", with_(END, usage={"prompt_tokens": 1, "completion_tokens": 1})),
    ("switchyard.v1.reply", "usage negative", with_(END, usage={"prompt_tokens": -1, "completion_tokens": 1,
                                                             "total_tokens": 0})),
    ("switchyard.v1.reply", "error without error", without(ERROR, "error")),
    ("switchyard.v1.reply", "error missing retryable", with_(ERROR, error={"code": "c", "message": "m"})),
    ("switchyard.v1.reply", "error extra field", with_(ERROR, error={"code": "c", "message": "m", "retryable": True,
                                                                     "status": 500})),
    ("switchyard.v1.reply", "unknown type", with_(HEARTBEAT, type="progress")),
    ("switchyard.v1.reply", "missing job_id", without(HEARTBEAT, "job_id")),
    ("switchyard.v1.cancel", "bad reason", with_(CANCEL, reason="bored")),
    ("switchyard.v1.cancel", "attempt 0", with_(CANCEL, attempt=0)),
    ("switchyard.v1.cancel", "missing reason", without(CANCEL, "reason")),
    ("switchyard.v1.announce", "unknown feature", with_(ANNOUNCE, features=["chat", "vision"])),
    ("switchyard.v1.announce", "zero ttl", with_(ANNOUNCE, ttl=0)),
    ("switchyard.v1.announce", "negative capacity", with_(ANNOUNCE, capacity=-1)),
    ("switchyard.v1.announce", "bad pool", with_(ANNOUNCE, pool="a b")),
    ("switchyard.v1.announce", "missing draining", without(ANNOUNCE, "draining")),
    ("switchyard.v1.announce", "draining not bool", with_(ANNOUNCE, draining="no")),
    ("switchyard.v1.discover", "missing edge", without(DISCOVER, "edge_id")),
    ("switchyard.v1.discover", "extra field", with_(DISCOVER, pool="p")),
    ("switchyard.v1.discover", "wrong type", with_(DISCOVER, type="announce")),
]  # fmt: skip


@pytest.mark.parametrize(("schema_id", "message"), VALID, ids=[f"{s}-{i}" for i, (s, _) in enumerate(VALID)])
def test_valid_examples(schema_id: str, message: dict[str, Any]) -> None:
    errors = list(validator(schema_id).iter_errors(message))
    assert errors == [], [e.message for e in errors]


@pytest.mark.parametrize(("schema_id", "why", "message"), INVALID, ids=[why for _, why, _ in INVALID])
def test_invalid_examples(schema_id: str, why: str, message: dict[str, Any]) -> None:
    assert not validator(schema_id).is_valid(message), why


def test_error_to_wire_validates_against_reply_schema() -> None:
    from libs.errors import InvalidRequest, UpstreamRateLimited, UpstreamTimeout

    for err in (UpstreamRateLimited("r", retry_after=3), UpstreamTimeout("t"), InvalidRequest("x", param="n")):
        message = {"type": "error", "job_id": "j", "attempt": 1, "seq": 1, "error": err.to_wire()}
        validator("switchyard.v1.reply").validate(message)


@pytest.mark.parametrize("subject,ok", [
    (proto.reply_subject("edge-1", "tok_2"), True),
    ("sy.v1.reply.edge.tok extra", False),
    ("sy.v1.reply.edge.tok\r\nPUB x 0", False),
    ("sy.v1.reply.edge", False),
    ("sy.v1.reply.edge.tok.more", False),
    ("sy.v1.cancel", False),
    (None, False),
    (42, False),
])
def test_only_reply_subjects_proto_builds_pass_as_reply_subjects(subject: object, ok: bool) -> None:
    assert proto.is_reply_subject(subject) is ok


def test_the_delivery_limit_is_the_consumer_s_in_the_contract() -> None:
    assert proto.contract()["consumers"]["jobs"]["max_deliver"] == proto.MAX_DELIVER
