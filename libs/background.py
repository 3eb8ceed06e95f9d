"""Tasks started and not awaited where they start (an ack, a cancel, a clean-up).

The event loop holds only weak references to tasks, so one nobody keeps may be collected before
it ran; this keeps each until it is done, and lets an owner wait for the ones still running.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any


class BackgroundTasks:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Future[Any]] = set()

    def start(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait(self) -> None:
        """Until those running now are done; their failures are not raised here."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
