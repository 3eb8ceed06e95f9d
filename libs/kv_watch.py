"""JetStream KV watches: ending one and the task that follows it (every in-memory mirror of a
bucket: the account pool's, the edge's API keys), and reading a bucket's current entries once."""

from __future__ import annotations

import asyncio
import contextlib

from nats.js.kv import KV_DEL, KV_PURGE, KeyValue


async def stop_watch(watcher: KeyValue.KeyWatcher | None, task: asyncio.Task[None] | None) -> None:
    """Unsubscribe the watch (a closed connection has nothing to unsubscribe), then end its task."""
    if watcher is not None:
        with contextlib.suppress(Exception):
            await watcher.stop()
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def current_entries(kv: KeyValue, keys: str = ">") -> list[tuple[str, bytes]]:
    """(key, value) of every live entry matching `keys`, as the bucket holds them now: a watch
    read until it says every current value was delivered (deleted and purged keys left out)."""
    found: list[tuple[str, bytes]] = []
    watcher = await kv.watch(keys)
    try:
        async for entry in watcher:
            if entry is None:
                break
            if entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
                continue
            found.append((entry.key, entry.value))
    finally:
        with contextlib.suppress(Exception):
            await watcher.stop()
    return found
