"""Typed views of the bus messages in schemas/v1 (tests/contract checks they match the schemas)."""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

Kind = Literal["chat", "completion", "embedding", "image", "moderation", "chatgpt_web", "sydney", "bing_image", "agent"]


class Timeouts(TypedDict):
    first_token: float
    idle: float
    heartbeat: float


class BodyRef(TypedDict):
    store: str
    name: str
    size: NotRequired[int]


class Job(TypedDict):
    type: Literal["job"]
    job_id: str
    request_id: str
    kind: Kind
    model: str
    pool: str
    reply: str
    index_offset: int
    created: float
    start_by: float
    deadline: float
    timeouts: Timeouts
    account: NotRequired[str]
    access_token: NotRequired[str]
    cookies: NotRequired[str]
    body: NotRequired[dict[str, Any]]
    body_ref: NotRequired[BodyRef]


class Start(TypedDict):
    type: Literal["start"]
    job_id: str
    attempt: int
    seq: int
    worker_id: str
    taken_at: float


class Meta(TypedDict):
    """Before the first output: the model the upstream used, and response headers (x-switchyard-*)."""

    type: Literal["meta"]
    job_id: str
    attempt: int
    seq: int
    model: NotRequired[str]
    headers: NotRequired[dict[str, str]]


class Delta(TypedDict):
    type: Literal["delta"]
    job_id: str
    attempt: int
    seq: int
    choices: list[dict[str, Any]]


class Result(TypedDict):
    """A unary job's answer; `body` per kind: proto/schemas/v1/<kind>_result.json."""

    type: Literal["result"]
    job_id: str
    attempt: int
    seq: int
    body: dict[str, Any]


class Event(TypedDict):
    """One event of an upstream's native stream, relayed by the edge in the client's wire format."""

    type: Literal["event"]
    job_id: str
    attempt: int
    seq: int
    event: dict[str, Any]


class Heartbeat(TypedDict):
    type: Literal["heartbeat"]
    job_id: str
    attempt: int
    seq: int


class Usage(TypedDict):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    estimated: NotRequired[bool]


class End(TypedDict):
    type: Literal["end"]
    job_id: str
    attempt: int
    seq: int
    usage: NotRequired[Usage | None]
    system_fingerprint: NotRequired[str | None]
    account: NotRequired[str]


class WireError(TypedDict):
    code: str
    message: str
    retryable: bool
    retry_after: NotRequired[float]
    param: NotRequired[str | None]


class Error(TypedDict):
    type: Literal["error"]
    job_id: str
    attempt: int
    seq: int
    error: WireError


class Fragment(TypedDict):
    """One part of a reply payload too large for one bus message (see reply.json)."""

    type: Literal["fragment"]
    job_id: str
    attempt: int
    seq: int
    part: int
    last: bool
    data: str


Reply = Start | Meta | Delta | Result | Event | Heartbeat | End | Error | Fragment


class Cancel(TypedDict):
    type: Literal["cancel"]
    job_id: str
    reason: Literal["client_disconnected", "deadline", "stale_attempt", "edge_error", "orphaned"]
    attempt: NotRequired[int]


Feature = Literal["chat", "completion", "n", "tools", "cookies"]


class AccountsState(TypedDict):
    """A pool of upstream accounts as one replica sees it (web workers)."""

    total: int
    free: int
    retry_at: float | None


class Announce(TypedDict):
    type: Literal["announce"]
    worker_id: str
    pool: str
    models: list[str]
    serves: dict[str, list[Kind]]
    capacity: int
    in_flight: int
    draining: bool
    features: list[Feature]
    ttl: float
    accounts: NotRequired[AccountsState]


class Discover(TypedDict):
    type: Literal["discover"]
    edge_id: str


# schema $id -> TypedDicts that must list exactly the schema's properties
SCHEMA_TYPES: dict[str, tuple[type, ...]] = {
    "switchyard.v1.job": (Job,),
    "switchyard.v1.reply": (Start, Meta, Delta, Result, Event, Heartbeat, End, Error, Fragment),
    "switchyard.v1.cancel": (Cancel,),
    "switchyard.v1.announce": (Announce,),
    "switchyard.v1.discover": (Discover,),
}
