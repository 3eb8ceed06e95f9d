"""The bus contract: subject names, JetStream objects and message schemas (see subjects.toml).

Code builds every subject through the helpers here, so a subject exists in one place only.
"""

from __future__ import annotations

import functools
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
VERSION = "v1"

STREAM_JOBS = "SY_V1_JOBS"
BODY_STORE = "SY_V1_BODIES"
IMAGE_STORE = "SY_V1_IMAGES"
USAGE_STREAM = "SY_V1_USAGE"
USAGE_HOURLY_BUCKET = "SY_V1_USAGE_HOURLY"
USAGE_CONSUMER = "sy_v1_usage_hourly"
USAGE_SUBJECTS = "sy.v1.usage.*"
# What a job asks a worker to do (job.json's `kind`): chat and completion stream deltas; the
# others answer with one `result`, whose body `result_schema(kind)` describes; chatgpt_web (a
# ChatGPT web backend-api call) and sydney (a call of SydneyQt's web API) answer with native
# events or one result
# agent: one ask of a ChatGPT-API-server browser agent (services/agent_bridge), answered by one result
KINDS = ("chat", "completion", "embedding", "image", "moderation", "chatgpt_web", "sydney", "bing_image", "agent")
CANCEL_SUBJECT = "sy.v1.cancel"
ANNOUNCE_SUBJECT = "sy.v1.announce"
DISCOVER_SUBJECT = "sy.v1.discover"
# agent-bridge: every bridge answers the edge's question for its agents (GET /api/connections)
AGENT_CONNECTIONS_SUBJECT = "sy.v1.agents.connections"
# JetStream delivers a job this often at most (the pool consumer's max_deliver, subjects.toml):
# workers create their consumer with it, and the edge knows that the last delivery gets no other
MAX_DELIVER = 3

_TOKEN_CHARS = r"[A-Za-z0-9_-]+"
_TOKEN = re.compile(_TOKEN_CHARS)


def check_token(value: str) -> str:
    """A pool, edge id or reply token must be one plain subject token."""
    if not _TOKEN.fullmatch(value):
        raise ValueError(f"not a valid subject token: {value!r}")
    return value


@functools.lru_cache(maxsize=1024)  # on every job's publish; pools are a handful
def job_subject(pool: str) -> str:
    return f"sy.v1.jobs.{check_token(pool)}"


def usage_subject(key_id: str) -> str:
    """Where a finished request's usage record goes: its caller's key id is one subject token."""
    return f"sy.v1.usage.{check_token(key_id)}"


def consumer_name(pool: str) -> str:
    return f"sy_v1_jobs_{check_token(pool)}"


_REPLY_PREFIX = "sy.v1.reply."
_REPLY_SUBJECT = re.compile(re.escape(_REPLY_PREFIX) + _TOKEN_CHARS + r"\." + _TOKEN_CHARS)


def reply_subject(edge_id: str, token: str) -> str:
    return f"{_REPLY_PREFIX}{edge_id}.{token}"


def is_reply_subject(subject: object) -> bool:
    """Whether a reply subject read off the bus (a job's `reply`) is one `reply_subject` builds."""
    return isinstance(subject, str) and _REPLY_SUBJECT.fullmatch(subject) is not None


def agent_subject(handle: str) -> str:
    """Where the bridge holding agent `handle` (its public handle, never its connection id) takes
    asks forwarded by another bridge, and hears that the agent registered elsewhere."""
    return f"sy.v1.agents.ask.{check_token(handle)}"


def reply_wildcard(edge_id: str) -> str:
    return f"{_REPLY_PREFIX}{check_token(edge_id)}.*"


def puback_subject(edge_id: str, token: str) -> str:
    """Where JetStream acknowledges (or refuses) the job `token`: the job's reply-to."""
    return f"sy.v1.puback.{edge_id}.{token}"


def puback_wildcard(edge_id: str) -> str:
    return f"sy.v1.puback.{check_token(edge_id)}.*"


@functools.cache
def contract() -> dict[str, Any]:
    with open(_HERE / "subjects.toml", "rb") as f:
        return tomllib.load(f)


@functools.cache
def schema(schema_id: str) -> dict[str, Any]:
    """The JSON Schema with `$id` == schema_id, e.g. `switchyard.v1.reply`."""
    name = schema_id.rsplit(".", 1)[-1]
    with open(_HERE / "schemas" / VERSION / f"{name}.json", "rb") as f:
        loaded: dict[str, Any] = json.load(f)
    if loaded.get("$id") != schema_id:
        raise KeyError(schema_id)
    return loaded


def result_schema(kind: str) -> str | None:
    """The schema id of a `result` body answering a job of `kind` (None: the kind has no result)."""
    results: dict[str, str] = contract().get("results", {})
    return results.get(kind)


@dataclass(frozen=True)
class SubjectRule:
    pattern: str
    schema: str | None  # None for NATS/JetStream's own subjects
    regex: re.Pattern[str]
    status_messages: bool = False  # NATS may also send its own status messages (empty body) here
    batches: bool = False  # a payload may also be a JSON array of 2+ messages (see subjects.toml)


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    parts = []
    for token in pattern.split("."):
        if token == ">":
            parts.append(r".+")
        elif token == "*" or (token.startswith("{") and token.endswith("}")):
            parts.append(r"[^.]+")
        else:
            parts.append(re.escape(token))
    return re.compile(r"^" + r"\.".join(parts) + r"$")


@functools.cache
def subject_rules() -> tuple[SubjectRule, ...]:
    table = contract()
    rules = [
        SubjectRule(
            s["pattern"], s["schema"], _pattern_regex(s["pattern"]), s.get("status_messages", False),
            s.get("batches", False),
        )
        for s in table["subjects"]
    ]
    rules += [SubjectRule(s["pattern"], None, _pattern_regex(s["pattern"])) for s in table["system"]]
    return tuple(rules)


def rule_for(subject: str) -> SubjectRule | None:
    """The contract entry a subject falls under, or None when proto/ does not name it."""
    for rule in subject_rules():
        if rule.regex.match(subject):
            return rule
    return None


_META_HEADER = re.compile(r"x-switchyard-[a-z0-9-]{1,64}")
_META_VALUE = re.compile(r"[\x20-\x7e]{0,512}")
META_HEADERS_MAX = 16


def meta_headers(headers: object) -> dict[str, str]:
    """The response headers a `meta` reply may carry (reply.json): x-switchyard-* names, printable
    values, at most 16. The worker sends only these and the edge takes only these, so a worker
    cannot set or split a header the edge owns, whatever its upstream said."""
    if not isinstance(headers, dict):
        return {}
    kept = {k: v for k, v in headers.items()
            if isinstance(k, str) and isinstance(v, str) and _META_HEADER.fullmatch(k) and _META_VALUE.fullmatch(v)}
    return dict(list(kept.items())[:META_HEADERS_MAX])
