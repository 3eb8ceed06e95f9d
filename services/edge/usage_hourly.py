"""The hourly usage aggregates: SY_V1_USAGE folded into SY_V1_USAGE_HOURLY, per key, model and hour.

Every edge pulls from one durable consumer (sy_v1_usage_hourly), so each record is delivered to
one edge at a time; a batch is grouped by (key, hour), each entry is read, folded and written back
with a compare-and-set on its revision (another edge may write the same entry: read again, fold
again), and the batch is acked only once its entries are written. A record delivered again (an
edge stopped between its write and its ack) is not counted twice: the entry keeps the stream
sequences it folded (libs/usage.py `fold`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from typing import Any

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import BadRequestError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

import proto
from libs.usage import decode_entry, decode_records, encode_entry, entry_key, fold, hour_of

log = logging.getLogger("switchyard.edge.usage")

_BATCH = 256  # messages (each holds an edge's records of one key over its flush window)
_FETCH_WAIT = 1.0  # a pull waits this long for records (an idle edge makes one request a second)
# between two folds: the aggregates are for the console, not the request path, and a fold costs
# round trips (ack floor, an entry's read and write per key and hour) whatever its size
_FOLD_EVERY = 1.0
_ACK_WAIT = 30.0  # a batch not acked within this goes to another edge
_CAS_ATTEMPTS = 16  # edges folding the same entry at once: each retry reads the winner's write
_RETRY = 1.0


async def ensure_hourly_bucket(js: JetStreamContext, retention_days: float) -> KeyValue:
    """SY_V1_USAGE_HOURLY, on disk, an entry kept USAGE_RETENTION_DAYS after its last write
    (applied again when the operator changes it)."""
    ttl = retention_days * 86400.0
    config = js_api.KeyValueConfig(bucket=proto.USAGE_HOURLY_BUCKET, description="hourly usage per key and model",
                                   history=1, ttl=ttl, storage=js_api.StorageType.FILE)
    try:
        return await js.create_key_value(config)
    except BadRequestError:  # exists with another TTL: the operator changed the retention
        info = await js.stream_info(f"KV_{proto.USAGE_HOURLY_BUCKET}")
        if info.config.max_age != ttl:
            info.config.max_age = ttl
            await js.update_stream(info.config)
        return await js.key_value(proto.USAGE_HOURLY_BUCKET)


class HourlyAggregator:
    def __init__(self, ack_wait: float = _ACK_WAIT) -> None:
        self._ack_wait = ack_wait
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._stop = asyncio.Event()
        self.folded = 0

    def start(self, js: JetStreamContext, kv: KeyValue) -> None:
        self._task = asyncio.create_task(self._run(js, kv), name="usage aggregator")

    async def stop(self, within: float) -> None:
        """Stop pulling: what the current pull brings is still folded and acked (within `within`),
        rather than left to be delivered again only once its ack_wait has passed."""
        self._stopping = True
        self._stop.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), within)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _run(self, js: JetStreamContext, kv: KeyValue) -> None:
        while not self._stopping:
            sub: JetStreamContext.PullSubscription | None = None
            try:
                sub = await self._bind(js)
                while not self._stopping:
                    try:
                        msgs = await sub.fetch(_BATCH, timeout=_FETCH_WAIT)
                    except TimeoutError:
                        continue
                    await self._fold(js, kv, msgs)
                    await self._pause(_FOLD_EVERY)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS away, the consumer gone with a restarted server: bind again
                log.warning("usage aggregation paused (%s); retrying", type(exc).__name__)
                await self._pause(_RETRY)
            finally:
                # a pull subscription left behind holds up the connection's drain at shutdown
                if sub is not None:
                    with contextlib.suppress(Exception):
                        await sub.unsubscribe()

    async def _bind(self, js: JetStreamContext) -> JetStreamContext.PullSubscription:
        config = js_api.ConsumerConfig(
            durable_name=proto.USAGE_CONSUMER, filter_subject=proto.USAGE_SUBJECTS,
            ack_policy=js_api.AckPolicy.EXPLICIT, deliver_policy=js_api.DeliverPolicy.ALL,
            ack_wait=self._ack_wait, max_ack_pending=_BATCH * 8, max_waiting=512,
        )
        with contextlib.suppress(BadRequestError):  # exists (another edge made it)
            await js.add_consumer(proto.USAGE_STREAM, config)
        return await js.pull_subscribe_bind(proto.USAGE_CONSUMER, stream=proto.USAGE_STREAM)

    async def _fold(self, js: JetStreamContext, kv: KeyValue, msgs: list[Msg]) -> None:
        # everything at or below the ack floor was acked and is never delivered again
        info = await js.consumer_info(proto.USAGE_STREAM, proto.USAGE_CONSUMER)
        floor = info.ack_floor.stream_seq if info.ack_floor is not None else 0
        groups: dict[tuple[str, str], list[tuple[int, dict[str, Any]]]] = defaultdict(list)
        for msg in msgs:
            seq = msg.metadata.sequence.stream
            for record in decode_records(msg.data):  # what is no record (the contract says) is left out
                hour = hour_of(float(record.get("ended_at") or msg.metadata.timestamp.timestamp()))
                groups[(record["key"], hour)].append((seq, record))
        for (key, hour), records in groups.items():
            await self._write(kv, key, hour, records, floor)
        await self._ack(msgs)
        self.folded += len(msgs)

    async def _ack(self, msgs: list[Msg]) -> None:
        for msg in msgs:
            await msg.ack()

    async def _write(self, kv: KeyValue, key: str, hour: str, records: list[tuple[int, dict[str, Any]]],
                     floor: int) -> None:
        name = entry_key(key, hour)
        for _ in range(_CAS_ATTEMPTS):
            try:
                current = await kv.get(name)
                entry, revision = decode_entry(current.value, key, hour), current.revision
            except KeyNotFoundError:
                entry, revision = decode_entry(None, key, hour), None
            if not fold(entry, records, floor):
                return  # every record is in it already
            try:
                if revision is None:
                    await kv.create(name, encode_entry(entry))
                else:
                    await kv.update(name, encode_entry(entry), last=revision)
                return
            except KeyWrongLastSequenceError:
                continue  # another edge wrote it meanwhile: fold into its write
        raise RuntimeError(f"usage entry {name} kept changing under {_CAS_ATTEMPTS} writes")
