"""The edge's keys: the static ones (AUTH_TOKEN / AUTH_TOKENS) and the managed ones (SY_V1_API_KEYS).

Every edge mirrors the managed keys' bucket through a KV watch into a dict hash → record, so a
request costs one SHA-256 and one dict lookup, never a bus round trip; a change made on any
replica reaches every mirror within milliseconds (a revoked key stops working everywhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time

from nats.js import JetStreamContext
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from libs.keys import KeyAdmin, KeyRecord, ensure_keys_bucket
from libs.kv_watch import stop_watch
from services.edge.caller import Caller
from services.edge.middleware import StaticKeyStore

log = logging.getLogger("switchyard.edge.keys")

_SYNC_WAIT = 10.0  # a watch delivers the bucket's current entries within this
_RETRY = 0.5  # after a failed resync (JetStream not back yet after a restart)


class _Pending:
    """A new watch's entries, held until its snapshot is complete and replaces the mirror."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[int, KeyRecord | None]] = {}
        self.synced = asyncio.Event()
        self.live = False


class ManagedKeys:
    """The mirror of SY_V1_API_KEYS, and the admin's writes through this edge."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.by_hash: dict[str, KeyRecord] = {}
        self.by_id: dict[str, KeyRecord] = {}
        self._revisions: dict[str, int] = {}
        self._admin: KeyAdmin | None = None
        self._watcher: KeyValue.KeyWatcher | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    @property
    def admin(self) -> KeyAdmin:
        if self._admin is None:
            raise RuntimeError("ManagedKeys.start() was not called")
        return self._admin

    async def start(self, js: JetStreamContext) -> None:
        """Ensure the bucket and mirror it; again after a reconnect (a restarted server's consumers
        are gone). The old mirror keeps serving until the new one holds every current entry."""
        async with self._lock:
            kv = await ensure_keys_bucket(js)
            pending = _Pending()
            watcher = await kv.watchall()
            task = asyncio.create_task(self._follow(watcher, pending), name="api keys watch")
            try:
                await asyncio.wait_for(pending.synced.wait(), _SYNC_WAIT)
            except BaseException:
                task.cancel()
                with contextlib.suppress(Exception):
                    await watcher.stop()
                raise
            await self._close_watch()
            self._admin = KeyAdmin(kv, self.prefix)
            self._watcher, self._task = watcher, task
            self.by_hash, self.by_id, self._revisions = {}, {}, {}
            for key_id, (revision, record) in pending.entries.items():
                self.apply(key_id, revision, record)
            pending.live = True  # from now on the watch applies to the mirror itself

    async def resync(self, js: JetStreamContext) -> None:
        """`start` again until it succeeds: after a reconnect JetStream may need a moment."""
        while True:
            try:
                await self.start(js)
                log.info("API keys mirrored again: %d keys", len(self.by_id))
                return
            except Exception as exc:  # retried: the old mirror serves meanwhile
                log.warning("mirroring the API keys failed (%s); retrying", type(exc).__name__)
                await asyncio.sleep(_RETRY)

    async def stop(self) -> None:
        await self._close_watch()

    async def _close_watch(self) -> None:
        watcher, task, self._watcher, self._task = self._watcher, self._task, None, None
        await stop_watch(watcher, task)

    async def _follow(self, watcher: KeyValue.KeyWatcher, pending: _Pending) -> None:
        try:
            async for entry in watcher:
                if entry is None:
                    pending.synced.set()
                    continue
                deleted = entry.operation in (KV_DEL, KV_PURGE) or not entry.value
                record = None if deleted else KeyRecord.decode(entry.value or b"")
                revision = entry.revision or 0
                if pending.live:
                    self.apply(entry.key, revision, record)
                else:
                    pending.entries[entry.key] = (revision, record)
        except Exception:
            log.exception("the API keys' watch failed; it is restarted at the next reconnect")

    def apply(self, key_id: str, revision: int, record: KeyRecord | None) -> None:
        """Mirror a write (None: a delete), unless the mirror holds a newer revision already (the
        admin's own write is applied at once, its echo from the watch later)."""
        if self._revisions.get(key_id, 0) >= revision:
            return
        self._revisions[key_id] = revision
        old = self.by_id.pop(key_id, None)
        if old is not None:
            self.by_hash.pop(old.hash, None)
        if record is not None:
            self.by_id[key_id] = record
            self.by_hash[record.hash] = record

    def last_revision(self, key_id: str) -> int:
        return self._revisions.get(key_id, 0)

    def lookup(self, token: str) -> KeyRecord | None:
        """The record of a usable key (enabled, not expired); None otherwise."""
        record = self.by_hash.get(hashlib.sha256(token.encode()).hexdigest())
        if record is None or not record.usable(time.time()):
            return None
        return record


class EdgeKeyStore:
    """The static keys first (constant-time compares, as before), then the managed keys' mirror.

    Open (no key asked) only when there is no static key, no ADMIN_KEY and no managed key: with an
    admin key the edge manages keys, so it never runs open, even before the first key exists; and
    a key created from the shell (tools/keys.py) closes an edge that ran open."""

    def __init__(self, static: StaticKeyStore, managed: ManagedKeys, *, admin_key: bool) -> None:
        self.static = static
        self.managed = managed
        self._may_open = static.is_open() and not admin_key

    def may_run_open(self) -> bool:
        return self._may_open

    def is_open(self) -> bool:
        return self._may_open and not self.managed.by_hash

    async def authenticate(self, token: str) -> Caller | None:
        caller = await self.static.authenticate(token)
        if caller is not None:
            return caller
        record = self.managed.lookup(token)
        return None if record is None else Caller(record.id, record)
