"""What a job produces: the interface between a worker's backend and the runtime every worker shares.

A backend (the upstream side of a worker) turns one job into an async stream of items:

- `list[choice]`: OpenAI choice deltas of a chat or completion job (coalesced into `delta` replies);
- `Result(body)`: the answer of a unary job (embedding, image, moderation: one per job; its body
  is OpenAI's response body for the route, proto/schemas/v1/<kind>_result.json);
- `Event(data)`: one event of an upstream's native stream, which the edge relays in the wire format
  of the route the client called (a web chat's own events);
- `Meta(model, headers)`: before the first output, what only the upstream knows: the model it
  says it used (the response's `model`) and response headers (x-switchyard-*); not an output;
- `WholeAnswer()`: the upstream answers in one piece, so the first-token and idle limits stop
  applying (heartbeats go on; the total limit still bounds the job);
- `StreamEnd(...)`: last: usage, fingerprint, the account that answered, and the last choices
  when the upstream's last read held both.

The first delta, result or event is the job's first output: the point after which it is never
retried (libs/worker_runtime.py owns that, and everything else about a job's life). `output_replies`
turns items into reply messages (proto/schemas/v1/reply.json), which the runtime numbers and sends.

A backend serves models, each for some job kinds (`serves`, announced to the edge, which routes a
request by its model and kind). A job with an `account` must run on that upstream account: the
backend leases it or fails with a retryable error, so that another replica may try.

Optional members a backend may define: `attach(js)` (worker_main gives it JetStream), `admission`
(an `Admission`: the runtime pulls no more jobs than it can start), `accounts_state()` (its pool of
upstream accounts, announced to the edge: proto/messages.py AccountsState), `async reconnected()`
(after a NATS reconnect: a backend's own watches start over).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import proto
from libs.coalesce import coalesce
from proto.messages import Feature, Job, Kind


@dataclass(frozen=True)
class StreamEnd:
    usage: dict[str, Any] | None = None
    system_fingerprint: str | None = None
    choices: list[dict[str, Any]] | None = None  # the last choices, read together with the end
    account: str | None = None  # the upstream account that answered (pools with accounts)


@dataclass(frozen=True)
class WholeAnswer:
    """The upstream answers in one piece: no first-token or idle limit, heartbeats go on."""


@dataclass(frozen=True, slots=True)
class Result:
    """A unary job's answer: OpenAI's response body for its route."""

    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Event:
    """One event of an upstream's native stream."""

    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Meta:
    """Before the first output: the model the upstream used, response headers (x-switchyard-*)."""

    model: str | None = None
    headers: Mapping[str, str] | None = None


Item = list[dict[str, Any]] | Result | Event | Meta | StreamEnd | WholeAnswer


class Admission(Protocol):
    """What a backend can start at once, when that is less than the worker's capacity (a web
    worker: the accounts it holds for its next jobs). The puller asks for no more jobs than this."""

    def available(self) -> int: ...

    def listen(self, wake: Callable[[], None]) -> None:
        """Call `wake` whenever `available` may have grown."""

    async def stop(self) -> None:
        """Give back what it holds for jobs not yet pulled: the worker drains (no more pulls)."""


class Backend(Protocol):
    """The upstream side of a worker."""

    features: list[Feature]

    @property
    def serves(self) -> Mapping[str, Sequence[Kind]]:
        """model id -> the job kinds it runs for that model."""

    def stream(self, job: Job, body: dict[str, Any]) -> AsyncIterator[Item]: ...

    async def aclose(self) -> None: ...


def output_replies(item: list[dict[str, Any]] | Result | Event, index_offset: int) -> list[dict[str, Any]]:
    """The reply messages (not yet numbered) an output item becomes."""
    if isinstance(item, Result):
        return [{"type": "result", "body": item.body}]
    if isinstance(item, Event):
        return [{"type": "event", "event": item.data}]
    return [{"type": "delta", "choices": merged} for merged in coalesce(item, index_offset)]


def meta_reply(meta: Meta) -> dict[str, Any]:
    reply: dict[str, Any] = {"type": "meta"}
    if meta.model:
        reply["model"] = meta.model
    headers = proto.meta_headers(dict(meta.headers or {}))
    if headers:
        reply["headers"] = headers
    return reply


def end_reply(end: StreamEnd) -> dict[str, Any]:
    reply: dict[str, Any] = {"type": "end", "usage": end.usage, "system_fingerprint": end.system_fingerprint}
    if end.account is not None:
        reply["account"] = end.account
    return reply
