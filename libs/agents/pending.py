"""Replies an agent owes the server, by id, with deadlines: pings (§3.5/§3.6) and jobs (§4.3). Sans-I/O.

Correct behaviour where the seed server has bugs (§4.6, §3.6, §4.3; do not copy them): the seed reads
the agent socket inside each HTTP handler, so two asks on one agent steal each other's pongs and
answers, and any frame other than the awaited one counts as a failure. Here ONE reader per socket
feeds every frame to `receive`, which matches it by id: a reply to someone else's ping or job goes to
its owner, a late reply (its deadline passed) or an unknown id is reported as such and changes nothing.
Only a deadline fails a ping or a job. Several pings and jobs may be outstanding at once.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from enum import Enum
from typing import Final

from libs.agents.handshake import new_id
from libs.agents.protocol import AgentError, ChatGptRequest, ChatGptResponse, Ping, Pong, encode

__all__ = ["JOB_TIMEOUT", "PING_TIMEOUT", "JobTracker", "Match", "PingTracker"]

PING_TIMEOUT: Final = 5.0  # §3.6: the seed's read deadline for the pong
JOB_TIMEOUT: Final = 120.0  # §4.3: the seed's read deadline for the answer
_REMEMBER_EXPIRED = 64  # expired ids kept to tell a late reply from a stray one


class Match(Enum):
    MATCHED = "matched"  # the reply to an outstanding ping/job, in time
    LATE = "late"  # the reply to one whose deadline already passed (and was reported by expire())
    UNKNOWN = "unknown"  # no such id was sent (or it was answered already)


class _Outstanding:
    def __init__(self, *, clock: Callable[[], float], timeout: float) -> None:
        self._clock = clock
        self.timeout = timeout
        self._deadlines: dict[str, float] = {}  # insertion order = deadline order (one timeout)
        self._expired: OrderedDict[str, None] = OrderedDict()

    def _add(self, id_: str) -> None:
        self._deadlines[id_] = self._clock() + self.timeout

    def _match(self, id_: str) -> Match:
        if self._deadlines.pop(id_, None) is not None:
            return Match.MATCHED
        if id_ in self._expired:
            del self._expired[id_]
            return Match.LATE
        return Match.UNKNOWN

    @property
    def pending(self) -> tuple[str, ...]:
        return tuple(self._deadlines)

    def next_deadline(self) -> float | None:
        """The clock value at which `expire()` will next have something to report."""
        return next(iter(self._deadlines.values()), None)

    def cancel(self, id_: str) -> None:
        """Forget an id without waiting for it (its waiter went away)."""
        self._deadlines.pop(id_, None)

    def expire(self) -> list[str]:
        """The ids whose deadline passed, oldest first; each is reported once, then a reply to it is LATE."""
        now = self._clock()
        gone = [id_ for id_, deadline in self._deadlines.items() if deadline <= now]
        for id_ in gone:
            del self._deadlines[id_]
            self._expired[id_] = None
            if len(self._expired) > _REMEMBER_EXPIRED:
                self._expired.popitem(last=False)
        return gone


class PingTracker(_Outstanding):
    """Pings sent to one agent and their pongs. `last_pong` is the clock value of the last pong in
    time (the only liveness signal the protocol has, §3.5)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, timeout: float = PING_TIMEOUT,
                 make_id: Callable[[], str] = new_id) -> None:
        super().__init__(clock=clock, timeout=timeout)
        self._make_id = make_id
        self.last_pong: float | None = None

    def send(self) -> tuple[str, str]:
        """A new ping: (its id, the frame to send). Its deadline starts now."""
        ping = Ping(self._make_id())
        self._add(ping.id)
        return ping.id, encode(ping)

    def receive(self, pong: Pong) -> Match:
        match = self._match(pong.id)
        if match is Match.MATCHED:
            self.last_pong = self._clock()
        return match


class JobTracker(_Outstanding):
    """Jobs sent to one agent and their answers (a ChatGptResponse or the agent's error frame)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, timeout: float = JOB_TIMEOUT) -> None:
        super().__init__(clock=clock, timeout=timeout)

    def send(self, request: ChatGptRequest) -> str:
        """The frame of `request`; its deadline starts now."""
        self._add(request.id)
        return encode(request)

    def receive(self, answer: ChatGptResponse | AgentError) -> Match:
        return self._match(answer.id)
