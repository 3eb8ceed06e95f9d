"""One job's reply stream as the edge sees it: fencing of stale attempts and sequence checks.

Pure logic, no I/O: `JobReplies.accept` takes a decoded reply message and says what it means;
`Fragments` joins the parts of a reply payload too large for one bus message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import proto
from libs.errors import ReplyGap, SwitchyardError, from_wire


@dataclass(frozen=True)
class Started:
    attempt: int
    worker_id: str
    taken_at: float = 0.0  # unix seconds; the start message itself may arrive later


@dataclass(frozen=True)
class Described:
    """What the worker knows before the first output: the model the upstream used, headers."""

    model: str | None
    headers: dict[str, str]


@dataclass(frozen=True)
class Deltas:
    choices: list[dict[str, Any]]


@dataclass(frozen=True)
class Produced:
    """A unary job's result: its body (proto/schemas/v1/<kind>_result.json)."""

    body: dict[str, Any]


@dataclass(frozen=True)
class Emitted:
    """One event of an upstream's native stream."""

    event: dict[str, Any]


@dataclass(frozen=True)
class Finished:
    usage: dict[str, Any] | None
    system_fingerprint: str | None
    account: str | None = None


@dataclass(frozen=True)
class Failed:
    error: SwitchyardError


@dataclass(frozen=True)
class Alive:
    """A heartbeat: nothing to forward, but the worker lives."""


@dataclass(frozen=True)
class Stale:
    """A message from an attempt that lost; the caller may cancel that attempt."""

    attempt: int


Outcome = Started | Described | Deltas | Produced | Emitted | Finished | Failed | Alive | Stale


@dataclass
class JobReplies:
    job_id: str
    attempt: int = 0  # the attempt we follow; 0 until a start arrives
    locked: bool = False  # an output of `attempt` was forwarded: no other attempt may speak now
    next_seq: int = 0
    done: bool = False
    stale_cancelled: set[int] = field(default_factory=set)

    def accept(self, message: dict[str, Any]) -> Outcome | None:
        kind = message.get("type")
        attempt = int(message.get("attempt", 0))
        seq = int(message.get("seq", -1))
        if self.done:
            return None
        if kind == "start":
            if self.locked or attempt <= self.attempt:
                return Stale(attempt) if attempt != self.attempt else None
            # a newer delivery took over before any token reached the client: follow it
            self.attempt = attempt
            self.next_seq = 1
            return Started(attempt, str(message.get("worker_id", "")), float(message.get("taken_at") or 0.0))
        if attempt != self.attempt:
            return Stale(attempt) if attempt else None
        if seq != self.next_seq:
            self.done = True
            return Failed(ReplyGap(f"reply {self.next_seq} of the answer was lost on the bus (got {seq})"))
        self.next_seq += 1
        if kind == "delta":
            self.locked = True
            return Deltas(message.get("choices") or [])
        if kind == "heartbeat":
            return Alive()
        if kind == "meta":
            model = message.get("model")
            headers = proto.meta_headers(message.get("headers"))
            return Described(model if isinstance(model, str) and model else None, headers)
        if kind == "end":
            self.done = True
            return Finished(message.get("usage"), message.get("system_fingerprint"), message.get("account"))
        if kind == "result":
            self.locked = True
            return Produced(message.get("body") or {})
        if kind == "event":
            self.locked = True
            return Emitted(message.get("event") or {})
        if kind == "error":
            self.done = True
            return Failed(from_wire(message.get("error") or {}))
        return None


FRAGMENTED_LIMIT = 256 * 1024 * 1024  # characters of one fragmented payload (a worker's answers stay far below)


@dataclass
class Fragments:
    """The parts of fragmented reply payloads of one job, per attempt, until each is complete."""

    parts: dict[int, list[str]] = field(default_factory=dict)
    sizes: dict[int, int] = field(default_factory=dict)

    def add(self, message: dict[str, Any]) -> bytes | None:
        """The whole payload once its last part is in, else None; ReplyGap if a part is missing."""
        attempt = message.get("attempt")
        data = message.get("data")
        if not isinstance(attempt, int) or not isinstance(data, str):
            raise ReplyGap("a part of a large reply could not be read")
        parts = self.parts.setdefault(attempt, [])
        if message.get("part") != len(parts):
            raise ReplyGap(f"part {len(parts)} of a large reply was lost on the bus")
        size = self.sizes[attempt] = self.sizes.get(attempt, 0) + len(data)
        if size > FRAGMENTED_LIMIT:
            raise ReplyGap("a large reply went past the size the edge accepts")
        parts.append(data)
        if message.get("last") is not True:
            return None
        del self.parts[attempt], self.sizes[attempt]
        return "".join(parts).encode()
