"""libs/usage.py (records, hourly folding, times) and the edge's bounded record queue."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator
from prometheus_client import CollectorRegistry

import proto
from libs.errors import InvalidRequest
from libs.usage import (
    RecordTuple,
    decode_entry,
    decode_records,
    encode_entry,
    encode_records,
    fold,
    hour_of,
    hour_start,
    instant,
    new_entry,
    public_entry,
    record_dict,
)
from services.edge.caller import Caller
from services.edge.routes.job_route import Answering
from services.edge.usage import UsageRecorder

ROW: RecordTuple = ("req-1", "static-1", "gpt-x", "openai", None, "chat.completions", 12, 7, False, 200, "stop",
                    1_700_000_000.0, 1_700_000_001.5)


def test_records_match_their_schema_and_round_trip() -> None:
    record = record_dict(ROW)
    assert record["duration_ms"] == 1500.0 and record["account"] is None
    message = encode_records([ROW, ROW])
    validator = Draft202012Validator(proto.schema("switchyard.v1.usage"))
    assert not list(validator.iter_errors(orjson.loads(message)))
    assert list(validator.iter_errors({"records": [{**record, "api_key": "sb-x"}]}))  # nothing else in a record
    assert decode_records(message) == [record, record]
    assert decode_records(b"not json") == [] and decode_records(b"[1]") == []
    assert decode_records(b'{"records": [1, {"key": "k"}]}') == [{"key": "k"}]


def _rec(model: str, prompt: int, completion: int, reason: str = "stop", estimated: bool = False) -> dict[str, object]:
    return {"model": model, "prompt_tokens": prompt, "completion_tokens": completion, "end_reason": reason,
            "estimated": estimated}


def test_fold_counts_per_model_and_each_sequence_once() -> None:
    entry = new_entry("k", "2026120619")
    assert fold(entry, [(5, _rec("a", 10, 3)), (6, _rec("a", 1, 1, "client_gone", True)), (7, _rec("b", 2, 0))], 0) == 3
    assert entry["models"]["a"] == {"requests": 2, "prompt_tokens": 11, "completion_tokens": 4,
                                    "estimated_requests": 1, "end_reasons": {"stop": 1, "client_gone": 1}}
    assert entry["seqs"] == [5, 6, 7]
    # the same batch again (a redelivery): nothing added, the entry need not be written
    assert fold(entry, [(5, _rec("a", 10, 3)), (7, _rec("b", 2, 0))], 0) == 0
    assert entry["models"]["b"]["requests"] == 1
    # the ack floor moves past 6: those sequences are forgotten, and can never come again
    assert fold(entry, [(6, _rec("a", 1, 1)), (9, _rec("b", 1, 1))], 6) == 1
    assert entry["floor"] == 6 and entry["seqs"] == [7, 9]
    assert entry["models"]["a"]["requests"] == 2 and entry["models"]["b"]["requests"] == 2
    # one message (sequence) holds several records: all of them count, once
    assert fold(entry, [(10, _rec("a", 1, 1)), (10, _rec("a", 1, 1))], 6) == 2
    assert fold(entry, [(10, _rec("a", 1, 1)), (10, _rec("a", 1, 1))], 6) == 0
    assert entry["models"]["a"]["requests"] == 4
    again = decode_entry(encode_entry(entry), "k", "2026120619")
    assert again == entry
    assert public_entry(again) == {"hour": "2026120619", "start": hour_start("2026120619"), "models": entry["models"]}


def test_an_unreadable_entry_reads_as_a_fresh_one() -> None:
    assert decode_entry(b"{broken", "k", "2026120619")["models"] == {}
    assert decode_entry(None, "k", "2026120619")["key"] == "k"


def test_hours_are_utc() -> None:
    assert hour_of(0) == "1970010100"
    assert hour_start("2026120619") == 1796583600.0
    assert hour_of(hour_start("2026120619") + 3599.9) == "2026120619"


@pytest.mark.parametrize(("raw", "seconds"), [
    ("1796583600", 1796583600.0), ("1796583600.5", 1796583600.5), ("2026-12-06T19:00:00Z", 1796583600.0),
    ("2026-12-06T20:00:00+01:00", 1796583600.0), ("2026-12-06T19:00:00", 1796583600.0),
])
def test_a_time_is_unix_seconds_or_rfc_3339(raw: str, seconds: float) -> None:
    assert instant(raw, "start") == seconds


@pytest.mark.parametrize("raw", ["yesterday", "nan", "inf", "", "2026-13-01T00:00:00Z"])
def test_anything_else_is_a_400_naming_the_parameter(raw: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        instant(raw, "end")
    assert caught.value.param == "end"


def _answering(i: int) -> Answering:
    answering = Answering(f"req-{i}", "chat.completions")
    answering.model, answering.pool, answering.end_reason = "gpt-x", "openai", "stop"
    return answering


def _dropped(registry: CollectorRegistry) -> float:
    return registry.get_sample_value("switchyard_edge_usage_records_dropped_total") or 0.0


async def test_the_queue_is_bounded_and_drops_the_oldest_counting_them() -> None:
    registry = CollectorRegistry()
    recorder = UsageRecorder("edge-t", registry, bound=10)
    for i in range(15):
        recorder.record(Caller("static-1"), _answering(i), 200)
    assert recorder.pending() == 10 and _dropped(registry) == 5
    recorder.record(Caller("key_2"), _answering(15), 200)
    assert recorder.pending() == 10 and _dropped(registry) == 6
    # what the flusher publishes: the newest ten, in one message per key, each with its own Nats-Msg-Id
    batch = recorder._take()
    assert [(subject, count) for subject, _, _, count in batch] == [("sy.v1.usage.static-1", 9),
                                                                     ("sy.v1.usage.key_2", 1)]
    assert [r["request_id"] for r in decode_records(batch[0][1])] == [f"req-{i}" for i in range(6, 15)]
    assert len({msg_id for _, _, msg_id, _ in batch}) == 2


def test_recording_costs_a_tuple_and_an_append() -> None:
    """The request's share: measured, so a change that puts I/O or encoding there shows."""
    recorder = UsageRecorder("edge-t", CollectorRegistry(), bound=200_000)
    answering, caller = _answering(0), Caller("static-1")
    started = time.perf_counter()
    for _ in range(100_000):
        recorder.record(caller, answering, 200)
    per_call = (time.perf_counter() - started) / 100_000
    assert per_call < 20e-6, f"{per_call * 1e6:.2f} µs per record"


class _CountingJetStream:
    """publish_async as nats-py's: a future per message, acked a moment later."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def publish_async(self, subject: str, payload: bytes, **_: Any) -> asyncio.Future[Any]:
        self.messages.append(payload)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.002, future.set_result, None)
        return future


async def test_a_steady_flow_is_published_once_per_window_not_once_per_ack() -> None:
    """Records arriving while a batch's acks are awaited wait for the next window: at a request
    every millisecond, one message per key per window, not one per ack round trip."""
    recorder = UsageRecorder("edge-t", CollectorRegistry())
    js = _CountingJetStream()
    recorder.start(js)  # type: ignore[arg-type]  # the one method the recorder calls
    loop = asyncio.get_running_loop()
    until = loop.time() + 0.6
    sent = 0
    while loop.time() < until:
        recorder.record(Caller("static-1"), _answering(sent), 200)
        sent += 1
        await asyncio.sleep(0.001)
    await recorder.close(within=2.0)
    stored = sum(len(decode_records(m)) for m in js.messages)
    assert stored == sent and recorder.pending() == 0
    assert len(js.messages) <= 0.6 / 0.1 + 3, f"{len(js.messages)} messages for {sent} records"
