"""Which workers are alive, from their announcements: a worker that dies mid-stream is noticed in
seconds, with no bus traffic beyond the announcements every worker already sends.

A worker announces every interval and says its announcement lives `ttl` (3 intervals). One not
heard from for 3/4 of its ttl (a little over two intervals: 4.5 s at the 2 s interval) is presumed
dead. One lost or late announcement is tolerated (a gap of two intervals); a worker killed right
after announcing is presumed dead 0.75 × ttl after that announcement, so never later than that
after its death. Any reply of the job counts as a sign of life too.

While the edge's own bus connection is away no announcement can reach it: that is no sign of
anyone's death, so the count starts again once the bus is back (`pardon`).
"""

from __future__ import annotations

import math

LIVENESS_SHARE = 0.75  # of an announcement's ttl
DEFAULT_TTL = 6.0  # the worker runtime's: 3 × its 2 s announce interval
_MEMORY = 4096  # workers remembered at most (the longest unseen forgotten first)


class WorkerLiveness:
    def __init__(self) -> None:
        # worker_id -> (monotonic time last heard, liveness limit); ordered by the time last heard
        self._seen: dict[str, tuple[float, float]] = {}
        self._floor = 0.0  # monotonic: no worker counts as unheard before this (see `pardon`)

    def observe(self, worker_id: str, ttl: float, now: float) -> None:
        """An announcement (draining or not: a draining worker still finishes its jobs)."""
        if not (math.isfinite(ttl) and ttl > 0):
            ttl = DEFAULT_TTL
        seen = self._seen
        seen.pop(worker_id, None)  # re-inserted last: the dict stays ordered by the time last heard
        seen[worker_id] = (now, ttl * LIVENESS_SHARE)
        # forget workers that stopped: the first entry is the longest unseen
        while seen:
            first = next(iter(seen))
            heard, limit = seen[first]
            if heard + 2 * limit >= now and len(seen) <= _MEMORY:
                break
            del seen[first]

    def pardon(self, now: float) -> None:
        """The edge could not hear announcements until `now` (its bus connection was away)."""
        self._floor = max(self._floor, now)

    def presumed_dead_at(self, worker_id: str, since: float) -> float:
        """When `worker_id` counts as dead unless heard from again; `since`: its last sign of life
        otherwise known (a reply). A worker never heard from (or forgotten) counts from `since`."""
        since = max(since, self._floor)
        entry = self._seen.get(worker_id)
        if entry is None:
            return since + DEFAULT_TTL * LIVENESS_SHARE
        heard, limit = entry
        return max(heard, since) + limit
