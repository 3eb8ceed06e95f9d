"""Usage records and their hourly aggregates: building, encoding, folding. No I/O.

A record (proto/schemas/v1/usage.json) says what one finished request cost: who (the key id,
never the key), what (model, pool, the upstream account's name, the route), the tokens the client
actually received and whether they are the upstream's figure or an estimate, how it ended (HTTP
status, end reason) and when. An edge publishes the records of one key it gathered within a short
window as one message `{"records": [...]}` on `sy.v1.usage.{key}` (stream SY_V1_USAGE): a
JetStream publish and its ack cost the edge far more CPU than a request's share allows, and at a
high rate a window holds many records. An aggregator folds them into one KV entry per key and UTC
hour (SY_V1_USAGE_HOURLY).

An hourly entry (key `{key}.{YYYYMMDDHH}`):

    {"key": k, "hour": "2026120619", "start": <unix seconds of the hour>,
     "models": {model: {"requests", "prompt_tokens", "completion_tokens", "estimated_requests",
                        "end_reasons": {reason: count}}},
     "floor": <stream sequence>, "seqs": [<stream sequences folded, above floor>]}

Redelivery never counts a record twice: an entry keeps the stream sequences (messages) it folded
that are above the aggregator consumer's ack floor when it was written (everything at or below the
floor was acked, and JetStream never delivers an acked message again), and a fold skips a
sequence at or below `floor` or in `seqs`; a message's records for one entry are folded in one
write. `seqs` stays small: the floor follows the acks, so it holds only what was folded while some
message was still unacked.
"""

from __future__ import annotations

import calendar
import datetime
import math
import time
from collections.abc import Iterable
from typing import Any

import orjson

from libs.errors import InvalidRequest

END_REASONS = ("stop", "length", "client_gone", "upstream_error", "timeout")

# What the edge keeps per finished request until its flusher encodes it: a plain tuple, built on the
# request's path (cheap), turned into a dict off it. The order of `RECORD_FIELDS`.
RecordTuple = tuple[str, str, str, str, "str | None", str, int, int, bool, int, str, float, float]
RECORD_FIELDS = (
    "request_id", "key", "model", "pool", "account", "route", "prompt_tokens", "completion_tokens",
    "estimated", "status", "end_reason", "started_at", "ended_at",
)


def record_dict(row: RecordTuple) -> dict[str, Any]:
    """The record as published (schema usage.json): the tuple's fields and `duration_ms`."""
    record = dict(zip(RECORD_FIELDS, row, strict=True))
    record["duration_ms"] = round(max(0.0, row[12] - row[11]) * 1000.0, 3)
    return record


def encode_records(rows: Iterable[RecordTuple]) -> bytes:
    """One message of the stream: records of one key."""
    return orjson.dumps({"records": [record_dict(row) for row in rows]})


def decode_records(data: bytes) -> list[dict[str, Any]]:
    """The records of a message read off the stream; those that are not records left out (never raises)."""
    try:
        message = orjson.loads(data)
    except orjson.JSONDecodeError:
        return []
    records = message.get("records") if isinstance(message, dict) else None
    if not isinstance(records, list):
        return []
    return [r for r in records if isinstance(r, dict) and isinstance(r.get("key"), str)]


# ---- reading usage back (the admin API, tools/keys.py) -------------------------------------------

USAGE_DEFAULT_PERIOD = 86400.0  # no `start`: the last 24 hours
USAGE_DEFAULT_LIMIT = 1000
USAGE_MAX_LIMIT = 10_000


def instant(raw: str, param: str) -> float:
    """Unix seconds, or an RFC 3339 time (with its offset; none means UTC). InvalidRequest otherwise."""
    try:
        seconds = float(raw)
    except ValueError:
        seconds = None
    if seconds is not None:
        if not math.isfinite(seconds):
            raise InvalidRequest(f"'{param}' must be a finite time.", param=param)
        return seconds
    try:
        moment = datetime.datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidRequest(f"'{param}' is neither unix seconds nor an RFC 3339 time.", param=param) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


# ---- hourly aggregates ------------------------------------------------------------------------


def hour_of(ts: float) -> str:
    """The UTC hour a time falls in, as the entry's key suffix: YYYYMMDDHH."""
    return time.strftime("%Y%m%d%H", time.gmtime(ts))


def hour_start(hour: str) -> float:
    """Unix seconds at the start of a YYYYMMDDHH hour (UTC)."""
    return float(calendar.timegm(time.strptime(hour, "%Y%m%d%H")))


def entry_key(key: str, hour: str) -> str:
    return f"{key}.{hour}"


def new_entry(key: str, hour: str) -> dict[str, Any]:
    return {"key": key, "hour": hour, "start": hour_start(hour), "models": {}, "floor": 0, "seqs": []}


def decode_entry(data: bytes | None, key: str, hour: str) -> dict[str, Any]:
    """An entry read off the bucket; a fresh one for none or an unreadable value."""
    if data:
        try:
            entry = orjson.loads(data)
            if isinstance(entry, dict) and isinstance(entry.get("models"), dict):
                entry.setdefault("floor", 0)
                entry.setdefault("seqs", [])
                return entry
        except orjson.JSONDecodeError:
            pass
    return new_entry(key, hour)


def fold(entry: dict[str, Any], records: Iterable[tuple[int, dict[str, Any]]], floor: int) -> int:
    """Add (stream sequence, record) pairs to `entry` in place, the records of each sequence once
    (a sequence is one message: all its records for this entry come in one call); `floor`: the
    aggregator consumer's ack floor (every sequence at or below it is acked). Returns how many
    records were added (0: the entry need not be written)."""
    folded = set(entry["seqs"])
    seen = set(folded)
    old_floor = int(entry["floor"])
    added = 0
    models: dict[str, Any] = entry["models"]
    for seq, record in records:
        if seq <= old_floor or seq in folded:
            continue  # folded already (a redelivery after a crash between the write and the ack)
        seen.add(seq)
        added += 1
        model = str(record.get("model") or "")
        totals = models.get(model)
        if totals is None:
            totals = models[model] = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0,
                                      "estimated_requests": 0, "end_reasons": {}}
        totals["requests"] += 1
        totals["prompt_tokens"] += int(record.get("prompt_tokens") or 0)
        totals["completion_tokens"] += int(record.get("completion_tokens") or 0)
        totals["estimated_requests"] += 1 if record.get("estimated") else 0
        reason = str(record.get("end_reason") or "stop")
        totals["end_reasons"][reason] = totals["end_reasons"].get(reason, 0) + 1
    new_floor = max(old_floor, floor)
    entry["floor"] = new_floor
    entry["seqs"] = sorted(s for s in seen if s > new_floor)
    return added


def encode_entry(entry: dict[str, Any]) -> bytes:
    return orjson.dumps(entry)


def public_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry as the admin API shows it: without the bookkeeping of folded sequences."""
    return {"hour": entry["hour"], "start": entry["start"], "models": entry["models"]}
