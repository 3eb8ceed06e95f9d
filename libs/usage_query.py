"""Reading usage back: a key's records over a period (SY_V1_USAGE), its hourly aggregates (SY_V1_USAGE_HOURLY).

Records are read with an ephemeral pull consumer filtered on the key's subject and starting at
the period's start (JetStream seeks by time); a record is in the period by its `ended_at`. A record
is stored a moment after its request ended (a batch window; longer when NATS was away), so the
read goes on LATE seconds past the period's end before it stops looking.
"""

from __future__ import annotations

import contextlib
import datetime
import uuid
from typing import Any

from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import NotFoundError

import proto
from libs.kv_watch import current_entries
from libs.usage import decode_entry, decode_records, hour_of, public_entry

LATE = 300.0  # seconds after its end a request's record may still be stored (a NATS outage)
_FETCH = 256
_WAIT = 2.0


async def read_records(
    js: JetStreamContext, key: str, start: float, end: float, limit: int,
) -> tuple[list[dict[str, Any]], bool]:
    """Up to `limit` records of `key` that ended in [start, end), in the order they were stored (each
    edge publishes its own in batches, so two edges' records interleave by batch); and whether more exist."""
    name = "sy_v1_usage_read_" + uuid.uuid4().hex
    config = js_api.ConsumerConfig(
        name=name, filter_subject=proto.usage_subject(key), deliver_policy=js_api.DeliverPolicy.BY_START_TIME,
        opt_start_time=datetime.datetime.fromtimestamp(start, datetime.UTC),
        ack_policy=js_api.AckPolicy.NONE, inactive_threshold=30.0, mem_storage=True, num_replicas=1,
        max_ack_pending=-1,
    )
    try:
        await js.add_consumer(proto.USAGE_STREAM, config)
    except NotFoundError:  # no stream yet: no record
        return [], False
    found: list[dict[str, Any]] = []
    sub = await js.pull_subscribe_bind(stream=proto.USAGE_STREAM, name=name)
    try:
        pending = (await sub.consumer_info()).num_pending or 0
        stop_at = end + LATE
        while pending > 0 and len(found) <= limit:  # a message holds one or more records
            for msg in await sub.fetch(min(pending, _FETCH), timeout=_WAIT):
                pending = msg.metadata.num_pending
                if msg.metadata.timestamp.timestamp() > stop_at:
                    pending = 0
                    break
                found.extend(r for r in decode_records(msg.data) if start <= float(r.get("ended_at") or 0) < end)
    finally:
        with contextlib.suppress(Exception):
            await js.delete_consumer(proto.USAGE_STREAM, name)
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    return found[:limit], len(found) > limit


async def read_hourly(js: JetStreamContext, key: str, start: float, end: float) -> list[dict[str, Any]]:
    """`key`'s hourly entries for the hours that overlap [start, end), oldest first."""
    try:
        kv = await js.key_value(proto.USAGE_HOURLY_BUCKET)
    except NotFoundError:
        return []
    first, last = hour_of(start), hour_of(max(start, end - 1e-6))
    entries: list[dict[str, Any]] = []
    for name, value in await current_entries(kv, f"{proto.check_token(key)}.*"):
        hour = name.rsplit(".", 1)[-1]
        if first <= hour <= last:
            entries.append(public_entry(decode_entry(value, key, hour)))
    return sorted(entries, key=lambda e: e["hour"])
