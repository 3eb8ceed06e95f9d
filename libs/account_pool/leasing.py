"""The account a web worker's job runs on (every web worker's chat and native calls alike).

First one this replica holds idle for its next job (reservations.py: no pool round trip), else one
from the pool, where waiting asks a replica holding a fitting one idle to give it up. A job waits
no longer than it could still have waited in the queue, then is handed back (AccountsBusy is
retryable) for another replica.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Collection

from libs.account_pool.outcome import Outcome
from libs.account_pool.pool import AccountGone, AccountPool, Lease, NoEligibleAccount, PoolBusy
from libs.account_pool.reservations import Reservations
from libs.errors import AccountsBusy, UpstreamError
from proto.messages import Job


class Leasing:
    """`reservations` None: a worker that holds no idle leases (image-worker's Bing backend, which
    must not sit on accounts chat workers share with it) leases from the pool per job."""

    def __init__(self, pool: AccountPool, reservations: Reservations | None) -> None:
        self.pool = pool
        self.reservations = reservations

    def _waiting(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self.reservations.waiting() if self.reservations is not None else contextlib.nullcontext()

    def _adopt(self) -> None:
        if self.reservations is not None:
            self.reservations.adopt()

    @staticmethod
    def _wait(job: Job) -> float:
        return max(0.5, job["start_by"] - time.time())

    async def named(self, job: Job, name: str, model: str | None) -> Lease | None:
        """That account (a conversation lives on it); None when it is gone (quarantined, removed)."""
        lease = self.reservations.take(model, name) if self.reservations is not None else None
        if lease is not None:
            return lease
        wait = self._wait(job)
        try:
            async with self._waiting():
                lease = await self.pool.acquire_named(name, model, timeout=wait, job=job["job_id"])
        except AccountGone:
            return None
        except PoolBusy as busy:
            raise AccountsBusy("the account holding this conversation stayed busy; retry later",
                               retry_after=busy.retry_after or wait) from None
        self._adopt()
        return lease

    async def any(self, job: Job, model: str | None, tried: Collection[str] = ()) -> Lease:
        """A free account fit for `model`, none of `tried`."""
        lease = self.reservations.take(model, exclude=tried) if self.reservations is not None else None
        if lease is not None:
            return lease
        wait = self._wait(job)
        try:
            async with self._waiting():
                lease = await self.pool.acquire(model, timeout=wait, exclude=tried, job=job["job_id"])
        except PoolBusy as busy:
            raise AccountsBusy("every account of this model stayed busy or cooling down; retry later",
                               retry_after=busy.retry_after or wait) from None
        except NoEligibleAccount:
            raise UpstreamError(f"no usable account serves {model or 'any model'}: every one is quarantined, "
                                "not permitted it, or already tried") from None
        self._adopt()
        return lease

    async def give_back(self, lease: Lease, outcome: Outcome) -> None:
        if self.reservations is not None:
            await self.reservations.give_back(lease, outcome)
        else:
            await lease.release(outcome)
