"""Capacity-aware pulling from a JetStream pull consumer.

A worker never holds more jobs than it can run: it keeps `outstanding` pull credits (jobs asked
of the server but not yet delivered) plus `in_flight` jobs at or below `capacity`, and at or below
what its backend's admission says it can start at once (a web worker: the upstream accounts it
holds for the next jobs), so a job waits for an account in the queue, where any replica that gets
one can take it, not inside a worker. A finished job
frees a slot and asks for exactly one more. All replicas of a pool pull from one durable consumer,
so the server hands each job to a replica that has room, and none waits behind a busy one.

nats-py's `fetch()` is not used: its lingering batch requests can capture jobs after it returned,
which would park them behind a worker with no free slot until `ack_wait` ran out.

Pull requests expire quickly (well under `ack_wait`): the server does not notice that a killed
worker's requests have no listener, so a job it hands to one is lost until `ack_wait` redelivers
it. Short-lived requests keep that window small; an idle worker re-asks every `expires` seconds.

Stopping (a draining worker) asks for nothing more, and runs the jobs its still-open requests
deliver until they have ended. There is no way to withdraw a pull request, and handing such a job
back (nak) is worse than running it: JetStream redelivers it at once to the next waiting request,
often another one of ours, and a few rounds of that spend the job's `max_deliver` while another
replica sits idle. Each of those jobs came on a credit for a free slot, so running it keeps the
capacity promise; the worker's drain waits for it like any other job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from libs.bus import subscribe_inline

log = logging.getLogger("switchyard.pull")

_STATUS = "Status"
_PENDING = "Nats-Pending-Messages"


class JobPuller:
    def __init__(
        self,
        nc: NATS,
        stream: str,
        durable: str,
        capacity: int,
        on_job: Callable[[Msg], None],
        *,
        expires: float = 30.0,
        admission: Callable[[], int] | None = None,
    ) -> None:
        self._nc = nc
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self.capacity = capacity
        self._on_job = on_job
        self._expires = expires
        self._admission = admission
        self.in_flight = 0
        self.outstanding = 0
        self._refill = max(1, capacity // 8)
        self._pause_until = 0.0
        self._wake = asyncio.Event()
        self._stopping = False
        self._inbox = ""
        self._sub: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_pull = 0.0

    async def start(self) -> None:
        self._inbox = self._nc.new_inbox()
        self._sub = await subscribe_inline(self._nc, self._inbox, self._on_msg)  # a job starts as it is read
        self._task = asyncio.create_task(self._pull_loop(), name="job-puller")

    def release(self) -> None:
        """A job finished: its slot is free again (the pull loop wakes only when it will ask)."""
        self.in_flight -= 1
        if self._should_pull():
            self._wake.set()

    def wake(self) -> None:
        """The backend can start more jobs now (an upstream account came free, say)."""
        if self._should_pull():
            self._wake.set()

    def _want(self) -> int:
        room = self.capacity - self.in_flight
        if self._admission is not None:  # a backend that can start only so many jobs at once
            room = min(room, self._admission())
        return room - self.outstanding

    def _should_pull(self) -> bool:
        # Ask again only once a few slots have freed up (or nothing is asked for at all): one
        # outstanding credit already means "this worker has room", and fewer pull requests
        # mean less work for the worker and the server under load.
        want = self._want()
        return want > 0 and (self.outstanding == 0 or want >= self._refill)

    def stop_asking(self) -> None:
        """Ask for no more jobs from now on (jobs on requests already made still arrive)."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()

    async def stop(self) -> None:
        """Stop asking for jobs and wait until our open pull requests have ended (delivered their
        batch, or expired: the server's 408 says so), bounded by their expiry. Jobs they deliver
        meanwhile are run as usual (see the module's notes). Then stop listening."""
        self.stop_asking()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        loop = asyncio.get_running_loop()
        # the server counts a request's expiry from when it read it, a little after we sent it
        until = self._last_pull + self._expires + min(1.0, self._expires)
        while self.outstanding > 0 and loop.time() < until:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), until - loop.time())
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    def reset(self) -> None:
        """After a reconnect the server has forgotten our pull requests."""
        self.outstanding = 0
        self._wake.set()

    async def _pull_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            if self._pause_until > loop.time():  # the server refused pulls (409): don't hammer it
                await asyncio.sleep(self._pause_until - loop.time())
            if self._should_pull() and self._nc.is_connected:
                want = self._want()
                request = {"batch": want, "expires": int(self._expires * 1e9)}
                try:
                    await self._nc.publish(self._next_subject, orjson.dumps(request), reply=self._inbox)
                    self.outstanding += want
                    self._last_pull = loop.time()
                except Exception as exc:  # connection trouble: try again shortly
                    log.warning("pull request failed: %s", type(exc).__name__)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self._expires + 2.0)
            except TimeoutError:
                # Nothing heard for longer than a request lives: the server has surely dropped
                # whatever we still count as outstanding (a lost 408, a reconnect).
                if loop.time() - self._last_pull > self._expires + 1.0:
                    self.outstanding = 0

    def _on_msg(self, msg: Msg) -> None:
        headers = msg.headers
        if headers and _STATUS in headers and not msg.data:
            self._on_status(headers)
            return
        self.outstanding = max(0, self.outstanding - 1)
        if self._stopping and self.outstanding == 0:
            self._wake.set()  # `stop` waits for this
        self.in_flight += 1
        self._on_job(msg)

    def _on_status(self, headers: dict[str, str]) -> None:
        status = headers.get(_STATUS, "")
        if status == "100":  # idle heartbeat
            return
        pending = headers.get(_PENDING)
        if status == "408" and pending is not None:
            # the request expired with `pending` jobs undelivered: those credits are free again
            self.outstanding = max(0, self.outstanding - int(pending))
        elif status in ("408", "409", "404"):
            log.info("pull status %s %s", status, headers.get("Description", ""))
            self.outstanding = 0
            if status == "409":  # e.g. too many waiting pulls, or the consumer is being recreated
                self._pause_until = asyncio.get_running_loop().time() + 0.5
        self._wake.set()
