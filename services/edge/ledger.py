"""What the edge does around every request it sends to a pool: the caller's limits before the
first job is published, its usage record once the answer is over.

Routes call `JobRoute.open_exchange`, which asks `admit`; `JobRoute.__call__` calls `finish` once
the request has ended, however it ended. Both see the request's `Caller` (who) and `Answering`
(what: model, pool, reservation, tokens delivered, end reason; routes/job_route.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from starlette.types import Scope

from services.edge.caller import Caller, caller_of

if TYPE_CHECKING:
    from services.edge.routes.job_route import Answering


class Limiter(Protocol):
    """A key's limits (limits.py)."""

    async def admit(self, caller: Caller, answering: Answering) -> None:
        """Raise a SwitchyardError (429, 403) when the caller may not send this request now; may
        add response headers to `answering.headers` (the limits' state, on every answer) and keep
        what it reserved in `answering.admission`."""

    def settle(self, caller: Caller, answering: Answering, status: int) -> None:
        """Give back what `admit` reserved beyond what the request used. Never raises, never waits."""


class UsageSink(Protocol):
    """Where finished requests' usage records go (usage.py)."""

    def record(self, caller: Caller, answering: Answering, status: int) -> None:
        """Record the request's usage. Never raises, never waits: the response is already out."""


class Ledger:
    """The limits and the usage records of the edge's callers; either may be absent (then free)."""

    def __init__(self) -> None:
        self.limiter: Limiter | None = None
        self.usage: UsageSink | None = None

    async def admit(self, scope: Scope, answering: Answering) -> None:
        if self.limiter is not None:
            await self.limiter.admit(caller_of(scope), answering)

    def finish(self, scope: Scope, answering: Answering, status: int) -> None:
        caller = caller_of(scope)
        if self.limiter is not None:
            self.limiter.settle(caller, answering, status)
        if self.usage is not None:
            self.usage.record(caller, answering, status)
