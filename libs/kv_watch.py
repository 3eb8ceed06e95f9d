"""Ending a JetStream KV watch and the task that follows it, for every in-memory mirror of a
bucket (the account pool's, the edge's API keys)."""

from __future__ import annotations

import asyncio
import contextlib

from nats.js.kv import KeyValue


async def stop_watch(watcher: KeyValue.KeyWatcher | None, task: asyncio.Task[None] | None) -> None:
    """Unsubscribe the watch (a closed connection has nothing to unsubscribe), then end its task."""
    if watcher is not None:
        with contextlib.suppress(Exception):
            await watcher.stop()
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
