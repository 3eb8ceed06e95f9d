"""Client-disconnect detection and deliberate connection aborts.

uvicorn's `receive()`, once the body is consumed, blocks until the connection is lost (or the response
completes), and its `send()` silently drops data after a disconnect. So one background task parked on
`receive()` is the prompt, accurate signal: it timestamps the disconnect the moment uvicorn reports it
and cancels the request task, interrupting whatever sleep or hang it is in. Sleeps stay plain
`asyncio.sleep` calls, the cheapest timer there is, which matters with many streams pacing tokens.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from .events import Event


class InjectedAbort(Exception):
    """Raised after the response started: uvicorn then closes the socket mid-stream (`fail_after`)."""


class QuietAbort(logging.Filter):
    """Drops uvicorn's "Exception in ASGI application" record for our deliberate aborts."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], InjectedAbort))


class ClientWatch:
    """Create inside the request task; call `close()` when the request is over, before any await."""

    __slots__ = ("_owner", "_receive", "_task", "event", "finished", "gone_at")

    def __init__(self, receive: Any, event: Event | None) -> None:
        self._receive = receive
        self._owner = asyncio.current_task()
        self._task: asyncio.Task[None] | None = None
        self.event = event
        self.finished = False  # a completed response also wakes receive(): that is not a disconnect
        self.gone_at: float | None = None

    async def _watch(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        if self.finished:
            return
        self.gone_at = time.time()
        if self.event is not None:
            self.event["disconnected_at"] = self.gone_at
            self.event["outcome"] = "disconnected"
        if self._owner is not None and not self._owner.done():
            self._owner.cancel()  # see `interrupted`

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._watch())

    def interrupted(self) -> bool:
        """In an `except CancelledError`: True if it was us (the client left), and then the cancellation
        is consumed; False means someone else cancels (server shutdown) and it must propagate."""
        if self.gone_at is None or self._owner is None:
            return False
        self._owner.uncancel()
        return True

    async def sleep(self, seconds: float) -> None:
        """Sleep at least `seconds` (uvloop's millisecond timers may fire a hair early, and tests assert
        "at least latency_ms"); raises CancelledError if the client goes away meanwhile."""
        self.start()
        deadline = time.monotonic() + seconds
        await asyncio.sleep(seconds)
        remaining = deadline - time.monotonic()
        if remaining > 0:  # woke early: top up, with a millisecond to spare for the timer's granularity
            await asyncio.sleep(remaining + 0.001)

    async def until_gone(self) -> None:
        """Hang until the client goes away (then CancelledError)."""
        self.start()
        await asyncio.get_running_loop().create_future()

    def close(self) -> None:
        self.finished = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
