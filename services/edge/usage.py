"""The edge's usage records: one per finished request, published to JetStream off the request's path.

`record` (ledger.py's UsageSink) appends a tuple to a bounded queue and, when the queue was empty,
wakes the flusher: the request pays for a tuple and a deque append, never a bus round trip. The
flusher publishes what gathered within a short window, one message per key (a JetStream publish
and its ack cost far more than a request may: libs/usage.py), async publishes with their acks
gathered. When NATS is away the messages are kept and tried again: the queue holds
USAGE_QUEUE_BOUND records, past it the oldest are dropped and counted
(switchyard_edge_usage_records_dropped_total). Each message carries a Nats-Msg-Id, so one published
again after a lost ack is stored once. `close` flushes what is left (the edge's drain).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from typing import TYPE_CHECKING

from nats.js import JetStreamContext
from nats.js import api as js_api
from prometheus_client import CollectorRegistry, Counter

import proto
from libs.bus import add_or_update_stream
from libs.usage import RecordTuple, encode_records
from services.edge.caller import Caller

if TYPE_CHECKING:
    from services.edge.routes.job_route import Answering

log = logging.getLogger("switchyard.edge.usage")

USAGE_QUEUE_BOUND = 10_000
_BATCH = 1000  # records per publish round, and per message at most (about 400 bytes each)
_WINDOW = 0.1  # records gather this long after the first one wakes the flusher
_ACK_WAIT = 5.0  # a batch's acks within this, else it is tried again
_RETRY = 1.0  # after a failed batch (NATS away)
_DUPLICATE_WINDOW = 120.0


async def ensure_usage_stream(js: JetStreamContext, retention_days: float) -> None:
    """SY_V1_USAGE (proto/subjects.toml), on disk; its max_age follows USAGE_RETENTION_DAYS, also
    when the operator changes it (the stream is updated)."""
    await add_or_update_stream(js, js_api.StreamConfig(
        name=proto.USAGE_STREAM, subjects=[proto.USAGE_SUBJECTS], retention=js_api.RetentionPolicy.LIMITS,
        storage=js_api.StorageType.FILE, max_age=retention_days * 86400.0,
        duplicate_window=min(_DUPLICATE_WINDOW, retention_days * 86400.0), num_replicas=1,
        description="usage records of finished requests",
    ))


# (subject, payload, Nats-Msg-Id, records in it): a message as published; kept as such when its
# publish failed
_Encoded = tuple[str, bytes, str, int]


class UsageRecorder:
    """The UsageSink of ledger.py, publishing to SY_V1_USAGE."""

    def __init__(self, edge_id: str, registry: CollectorRegistry, bound: int = USAGE_QUEUE_BOUND) -> None:
        self._edge_id = edge_id
        self._bound = bound
        self._queue: deque[RecordTuple] = deque()
        self._retry: deque[_Encoded] = deque()  # older than everything in _queue
        self._retrying = 0  # records in _retry
        self._room = bound  # what _queue may hold: the bound less what waits to be retried
        self._ids = itertools.count(1)
        self._wake = asyncio.Event()
        self._closing = False
        self._js: JetStreamContext | None = None
        self._task: asyncio.Task[None] | None = None
        self.dropped = Counter(
            "switchyard_edge_usage_records_dropped_total",
            "Usage records dropped because NATS stayed away while the edge's queue was full",
            registry=registry,
        )

    # ---- the request's path ---------------------------------------------------------------

    def record(self, caller: Caller, answering: Answering, status: int) -> None:
        queue = self._queue
        if len(queue) >= self._room:
            self._drop_oldest()
        queue.append((
            answering.request_id, caller.key_id, answering.model, answering.pool, answering.account,
            answering.route, answering.prompt_tokens, answering.completion_tokens, answering.tokens_estimated,
            status, answering.end_reason or "stop", answering.started_at, time.time(),
        ))
        if not self._wake.is_set():
            self._wake.set()

    def _drop_oldest(self) -> None:
        if self._retry:
            count = self._retry.popleft()[3]
            self._retrying -= count
            self._room += count
        else:
            self._queue.popleft()
            count = 1
        self.dropped.inc(count)

    # ---- the flusher -----------------------------------------------------------------------

    def start(self, js: JetStreamContext) -> None:
        self._js = js
        self._task = asyncio.create_task(self._flush_forever(), name="usage records")

    def js(self) -> JetStreamContext:
        """The edge's JetStream context (the admin API's usage reads use it too)."""
        if self._js is None:
            raise RuntimeError("UsageRecorder.start() was not called")
        return self._js

    def pending(self) -> int:
        """Records not stored yet."""
        return len(self._queue) + self._retrying

    async def close(self, within: float) -> None:
        """Publish what is queued (for at most `within` seconds), then stop."""
        self._closing = True
        self._wake.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), within)
        except TimeoutError:
            log.warning("%d usage records not published at shutdown (NATS away)", self.pending())
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _flush_forever(self) -> None:
        while True:
            await self._wake.wait()
            if not self._closing:
                await asyncio.sleep(_WINDOW)
            self._wake.clear()
            while self.pending():
                if not await self._publish_batch():
                    await asyncio.sleep(_RETRY)
                elif not self._closing and len(self._queue) < _BATCH:
                    # what came while the acks were awaited waits for the next window (it set _wake):
                    # going on at once would publish a message per ack round trip, a few records each
                    break
            if self._closing and not self.pending():
                return

    def _take(self) -> list[_Encoded]:
        """The next messages to publish: those to try again first, then the queue's records by key."""
        batch = list(self._retry)
        self._retry.clear()
        self._retrying = 0
        self._room = self._bound
        by_key: dict[str, list[RecordTuple]] = {}
        for _ in range(min(len(self._queue), _BATCH)):
            row = self._queue.popleft()
            by_key.setdefault(row[1], []).append(row)
        for key, rows in by_key.items():
            batch.append((proto.usage_subject(key), encode_records(rows), f"{self._edge_id}-{next(self._ids)}",
                          len(rows)))
        return batch

    async def _publish_batch(self) -> bool:
        """Publish one batch; what failed goes back to be tried again. False when some failed."""
        assert self._js is not None
        batch = self._take()
        futures: list[asyncio.Future[js_api.PubAck]] = []
        try:
            for subject, payload, msg_id, _ in batch:
                futures.append(await self._js.publish_async(
                    subject, payload, headers={"Nats-Msg-Id": msg_id}, wait_stall=_ACK_WAIT))
            done, _ = await asyncio.wait(futures, timeout=_ACK_WAIT)
        except Exception as exc:  # NATS away, closed, or the publish buffer stalled
            log.debug("publishing usage records failed: %s", type(exc).__name__)
            done = set()
        failed = [item for item, fut in itertools.zip_longest(batch, futures)
                  if fut is None or fut not in done or fut.cancelled() or fut.exception() is not None]
        for fut in futures:
            if not fut.done():
                fut.cancel()
        if not failed:
            return True
        self._retry.extend(failed)  # nothing else is in _retry: `_take` emptied it
        self._retrying = sum(item[3] for item in failed)
        log.warning("%d usage records not stored (NATS away?); trying again", self._retrying)
        while self._retrying + len(self._queue) > self._bound:  # past the bound the oldest go
            self._drop_oldest()
        self._room = self._bound - self._retrying
        return False
