"""Whether the edge may publish jobs now: connected to NATS, and the work queue restored since the
last reconnect.

While the connection is down a job would sit in nats-py's pending buffer until the publish-ack
limit gives up on it; and right after a reconnect to a restarted server the memory stream does not
exist until the edge has recreated it, so a job published then is refused ("no work queue took the
request"). The gate answers the first case at once with 503 `bus_unavailable`, and holds jobs back
in the second until the restore is done (bounded by the publish-ack limit).

nats-py counts a reconnect (`stats["reconnects"]`) before it marks the connection usable again,
so a job can never slip in between the reconnect and the start of the restore.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from nats.aio.client import Client as NATS

from libs.errors import BusUnavailable

log = logging.getLogger("switchyard.edge.bus")

RETRY_AFTER = 1.0  # seconds a client is told to wait while the bus is away
_RESTORE_RETRY = 0.25  # seconds before the second attempt at restoring after a reconnect...
_RESTORE_RETRY_MAX = 5.0  # ...doubling up to this


def unavailable(message: str = "the message bus is unavailable; retry shortly") -> BusUnavailable:
    return BusUnavailable(message, retry_after=RETRY_AFTER)


class BusGate:
    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self._restored = nc.stats["reconnects"]  # the connection the work queue was last made for
        self._changed = asyncio.Event()

    @property
    def open(self) -> bool:
        return self.nc.is_connected and self.nc.stats["reconnects"] == self._restored

    async def admit(self, limit: float) -> None:
        """Return once jobs may be published; BusUnavailable at once while disconnected, or when
        the restore after a reconnect takes longer than `limit`."""
        if self.open:
            return
        loop = asyncio.get_running_loop()
        until = loop.time() + limit
        while not self.open:
            if not self.nc.is_connected:
                raise unavailable("the message bus is unavailable (reconnecting); retry shortly")
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(until):
                    await changed.wait()
            if loop.time() >= until and not self.open:
                raise unavailable("the message bus is being restored after a reconnect; retry shortly")

    async def restore(self, recreate: Callable[[], Awaitable[None]]) -> None:
        """After a reconnect: recreate the work queue, retrying until it works or the connection
        is lost again (the next reconnect restores it then), and open the gate."""
        generation = self.nc.stats["reconnects"]
        pause = _RESTORE_RETRY
        while self.nc.is_connected and self.nc.stats["reconnects"] == generation:
            try:
                await recreate()
            except Exception as exc:
                log.warning("restoring the work queue failed (%s); retrying in %.2f s", type(exc).__name__, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, _RESTORE_RETRY_MAX)
                continue
            self._restored = generation
            self._wake()
            log.info("work queue restored after a reconnect")
            return

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
