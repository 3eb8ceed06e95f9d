"""The accounts this replica holds for its next jobs: the worker's admission (libs/worker_backend.py).

A web account takes one turn at a time, so a job is worth pulling only when an account is ready
for it. This replica keeps leases on up to `capacity` accounts (free ones, least recently used
first, as the shared pool hands them out) and the runtime pulls no more jobs than it holds idle
leases: a job with no account free waits in the work queue, where whichever replica next gets an
account takes it, never inside a worker. A job takes an idle lease at once (no pool round trip);
when it ends, its lease is released with the turn's outcome (one round trip) and the loop leases
the next free account (one more). A lease lost while idle (it expired: this process stalled) is
dropped; one another replica waits for (a conversation continues on that account) is given up
at once; a job that finds no idle lease for its model (model permissions, a per-model cooldown)
leases one from the pool itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Collection

from libs.account_pool.outcome import Outcome
from libs.account_pool.pool import AccountPool, Lease

log = logging.getLogger("switchyard.account_pool.reservations")


class Reservations:
    def __init__(self, pool: AccountPool, capacity: int) -> None:
        self._pool = pool
        self._capacity = capacity
        self._idle: list[Lease] = []
        self._busy = 0  # leases taken by running jobs
        self._wakes: list[Callable[[], None]] = []
        self._room = asyncio.Event()
        self._room.set()
        self._task: asyncio.Task[None] | None = None
        self._watchers: dict[Lease, asyncio.Task[None]] = {}
        self._waiting = 0  # jobs here waiting for an account from the pool: they go first

    # ---- Admission -----------------------------------------------------------------------------

    def available(self) -> int:
        return sum(1 for lease in self._idle if not lease.lost.is_set())

    def listen(self, wake: Callable[[], None]) -> None:
        self._wakes.append(wake)

    # ---- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._keep_leased(), name="account-reservations")

    async def stop(self) -> None:
        """Give every idle lease back (a draining replica must not sit on accounts)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        idle, self._idle = self._idle, []
        for watcher in self._watchers.values():
            watcher.cancel()
        self._watchers.clear()
        await asyncio.gather(*(lease.release(Outcome.neutral()) for lease in idle), return_exceptions=True)

    async def _keep_leased(self) -> None:
        while True:
            for lease in [lease for lease in self._idle if lease.lost.is_set()]:
                self._idle.remove(lease)
                watcher = self._watchers.pop(lease, None)
                if watcher is not None:
                    watcher.cancel()
            if len(self._idle) + self._busy >= self._capacity or self._waiting:
                self._room.clear()
                await self._room.wait()
                continue
            try:
                lease = await self._pool.acquire(None, timeout=None, stocking=True)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the bus is away, say: try again shortly
                log.warning("could not lease an account: %s", type(exc).__name__)
                await asyncio.sleep(1.0)
                continue
            self._idle.append(lease)
            self._watchers[lease] = asyncio.create_task(self._give_up_when_wanted(lease), name="reservation-wanted")
            for wake in self._wakes:
                wake()

    async def _give_up_when_wanted(self, lease: Lease) -> None:
        """Another replica waits for this very account (a conversation continues on it): an idle
        lease goes back at once, so the follow-up does not wait for this replica's next job."""
        await lease.wanted.wait()
        if lease in self._idle:
            self._idle.remove(lease)
            self._watchers.pop(lease, None)
            self._room.set()
            await lease.release(Outcome.neutral())

    # ---- jobs ------------------------------------------------------------------------------------

    def take(self, model: str | None, name: str | None = None, exclude: Collection[str] = ()) -> Lease | None:
        """An idle lease for `model` (that account when `name` is given, none of `exclude`), now;
        None if none fits."""
        for i, lease in enumerate(self._idle):
            if lease.lost.is_set() or lease.wanted.is_set():
                continue
            if (name is None or lease.name == name) and lease.name not in exclude \
                    and self._pool.eligible(lease.name, model):
                del self._idle[i]
                watcher = self._watchers.pop(lease, None)
                if watcher is not None:
                    watcher.cancel()
                self._busy += 1
                return lease
        return None

    @contextlib.asynccontextmanager
    async def waiting(self) -> AsyncIterator[None]:
        """A job here waits for an account from the pool: meanwhile this replica leases nothing
        for later jobs, so an account that frees goes to the job, not to an idle reservation."""
        self._waiting += 1
        try:
            yield
        finally:
            self._waiting -= 1
            self._room.set()

    def adopt(self) -> None:
        """A job leased an account from the pool itself: it counts against capacity too."""
        self._busy += 1

    async def give_back(self, lease: Lease, outcome: Outcome) -> None:
        """The job is done with its account: release it with the turn's outcome."""
        self._busy -= 1
        self._room.set()
        await lease.release(outcome)
