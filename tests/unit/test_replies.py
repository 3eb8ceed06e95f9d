"""services.edge.replies: fencing of stale attempts and sequence checks of a job's reply stream."""

from __future__ import annotations

from typing import Any

import pytest

from libs.errors import (
    DeadlineExceeded,
    NoCapacity,
    ReplyGap,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
    WorkerLost,
)
from services.edge import replies
from services.edge.replies import Alive, Deltas, Failed, Finished, Fragments, JobReplies, Stale, Started

JOB = "job-1"


def start(attempt: int = 1, worker: str = "w1") -> dict[str, Any]:
    return {"type": "start", "job_id": JOB, "attempt": attempt, "seq": 0, "worker_id": worker}


def delta(attempt: int, seq: int, content: str = "x") -> dict[str, Any]:
    return {
        "type": "delta",
        "job_id": JOB,
        "attempt": attempt,
        "seq": seq,
        "choices": [{"index": 0, "delta": {"content": content}}],
    }


def heartbeat(attempt: int, seq: int) -> dict[str, Any]:
    return {"type": "heartbeat", "job_id": JOB, "attempt": attempt, "seq": seq}


def end(attempt: int, seq: int, **extra: Any) -> dict[str, Any]:
    return {"type": "end", "job_id": JOB, "attempt": attempt, "seq": seq, **extra}


def error(attempt: int, seq: int, wire: dict[str, Any]) -> dict[str, Any]:
    return {"type": "error", "job_id": JOB, "attempt": attempt, "seq": seq, "error": wire}


def started(attempt: int = 1, worker: str = "w1") -> JobReplies:
    replies = JobReplies(JOB)
    assert replies.accept(start(attempt, worker)) == Started(attempt, worker)
    return replies


def test_fresh_state() -> None:
    replies = JobReplies(JOB)
    assert (replies.attempt, replies.locked, replies.next_seq, replies.done) == (0, False, 0, False)


def test_start_is_started_with_attempt_and_worker() -> None:
    replies = JobReplies(JOB)
    assert replies.accept(start(1, "worker-a")) == Started(1, "worker-a")
    assert replies.attempt == 1
    assert replies.next_seq == 1
    assert not replies.locked


def test_start_without_worker_id_gives_empty_worker() -> None:
    replies = JobReplies(JOB)
    assert replies.accept({"type": "start", "attempt": 1, "seq": 0}) == Started(1, "")


def test_full_happy_path() -> None:
    replies = started()
    assert replies.accept(delta(1, 1, "He")) == Deltas([{"index": 0, "delta": {"content": "He"}}])
    assert replies.locked
    assert replies.accept(heartbeat(1, 2)) == Alive()
    assert replies.accept(delta(1, 3, "llo")) == Deltas([{"index": 0, "delta": {"content": "llo"}}])
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert replies.accept(end(1, 4, usage=usage, system_fingerprint="fp_1")) == Finished(usage, "fp_1")
    assert replies.done


def test_end_without_usage() -> None:
    replies = started()
    assert replies.accept(end(1, 1)) == Finished(None, None)


def test_delta_with_null_choices_is_empty_list() -> None:
    replies = started()
    assert replies.accept({"type": "delta", "attempt": 1, "seq": 1, "choices": None}) == Deltas([])


def test_heartbeat_does_not_lock() -> None:
    replies = started()
    assert replies.accept(heartbeat(1, 1)) == Alive()
    assert not replies.locked
    # so a newer attempt may still take over
    assert replies.accept(start(2, "w2")) == Started(2, "w2")


@pytest.mark.parametrize(
    ("seq", "expected_in_message"),
    [(2, "got 2"), (5, "got 5"), (0, "got 0"), (1, None)],
)
def test_sequence_gap_fails_with_reply_gap(seq: int, expected_in_message: str | None) -> None:
    replies = started()
    outcome = replies.accept(delta(1, seq))
    if expected_in_message is None:
        assert isinstance(outcome, Deltas)
        return
    assert isinstance(outcome, Failed)
    assert isinstance(outcome.error, ReplyGap)
    assert outcome.error.status == 502
    assert outcome.error.code == "reply_gap"
    assert expected_in_message in outcome.error.message
    assert replies.done
    assert replies.accept(delta(1, seq + 1)) is None


def test_missing_seq_is_a_gap() -> None:
    replies = started()
    outcome = replies.accept({"type": "delta", "attempt": 1, "choices": []})
    assert isinstance(outcome, Failed) and isinstance(outcome.error, ReplyGap)


def test_duplicate_seq_is_a_gap() -> None:
    replies = started()
    assert isinstance(replies.accept(delta(1, 1)), Deltas)
    outcome = replies.accept(delta(1, 1))
    assert isinstance(outcome, Failed) and isinstance(outcome.error, ReplyGap)


def test_newer_attempt_takes_over_before_any_delta() -> None:
    replies = started(1, "w1")
    assert replies.accept(heartbeat(1, 1)) == Alive()
    assert replies.accept(start(2, "w2")) == Started(2, "w2")
    assert replies.attempt == 2
    assert replies.next_seq == 1
    # the old attempt is now stale, whatever it says
    assert replies.accept(delta(1, 2)) == Stale(1)
    assert replies.accept(heartbeat(1, 2)) == Stale(1)
    assert replies.accept(end(1, 2)) == Stale(1)
    assert replies.accept(error(1, 2, {"code": "upstream_error", "message": "x", "retryable": True})) == Stale(1)
    assert replies.accept(start(1, "w1")) == Stale(1)
    # the new one proceeds from seq 1
    assert isinstance(replies.accept(delta(2, 1)), Deltas)
    assert replies.accept(end(2, 2)) == Finished(None, None)


def test_newer_attempt_after_a_delta_is_stale() -> None:
    replies = started(1, "w1")
    assert isinstance(replies.accept(delta(1, 1)), Deltas)
    assert replies.locked
    assert replies.accept(start(2, "w2")) == Stale(2)
    assert replies.attempt == 1
    assert replies.accept(delta(2, 1)) == Stale(2)
    assert replies.accept(heartbeat(2, 2)) == Stale(2)
    # the locked attempt keeps its own sequence
    assert isinstance(replies.accept(delta(1, 2)), Deltas)
    assert replies.accept(end(1, 3)) == Finished(None, None)


def test_older_attempt_start_after_takeover_is_stale() -> None:
    replies = started(3, "w3")
    assert replies.accept(start(2, "w2")) == Stale(2)
    assert replies.attempt == 3


def test_repeated_start_of_current_attempt_is_ignored() -> None:
    replies = started(1)
    assert replies.accept(start(1)) is None
    assert replies.next_seq == 1
    assert isinstance(replies.accept(delta(1, 1)), Deltas)
    assert replies.accept(start(1)) is None


def test_messages_before_any_start_are_stale() -> None:
    replies = JobReplies(JOB)
    assert replies.accept(delta(1, 1)) == Stale(1)
    assert replies.accept(heartbeat(2, 1)) == Stale(2)
    assert not replies.locked


def test_messages_without_attempt_for_another_attempt_are_ignored() -> None:
    replies = started(1)
    assert replies.accept({"type": "delta", "seq": 1, "choices": []}) is None


def test_unknown_type_consumes_a_seq_and_says_nothing() -> None:
    replies = started()
    assert replies.accept({"type": "mystery", "attempt": 1, "seq": 1}) is None
    assert replies.next_seq == 2
    assert isinstance(replies.accept(delta(1, 2)), Deltas)


@pytest.mark.parametrize(
    ("wire", "cls", "status", "retry_after"),
    [
        ({"code": "rate_limit_exceeded", "message": "slow down", "retryable": True, "retry_after": 7},
         UpstreamRateLimited, 429, 7.0),
        ({"code": "upstream_timeout", "message": "t", "retryable": True}, UpstreamTimeout, 504, None),
        ({"code": "upstream_bad_request", "message": "b", "retryable": False}, UpstreamBadRequest, 400, None),
        ({"code": "worker_lost", "message": "gone", "retryable": False}, WorkerLost, 502, None),
        ({"code": "no_capacity", "message": "full", "retryable": False, "retry_after": 2.5}, NoCapacity, 503, 2.5),
        ({"code": "timeout", "message": "late", "retryable": False}, DeadlineExceeded, 504, None),
        ({"code": "something_new", "message": "?", "retryable": False}, UpstreamError, 502, None),
        ({}, UpstreamError, 502, None),
    ],
)  # fmt: skip
def test_error_is_rebuilt_from_wire(wire: dict[str, Any], cls: type, status: int, retry_after: float | None) -> None:
    replies = started()
    outcome = replies.accept(error(1, 1, wire))
    assert isinstance(outcome, Failed)
    assert type(outcome.error) is cls
    assert outcome.error.status == status
    assert outcome.error.retry_after == retry_after
    if "message" in wire:
        assert outcome.error.message == wire["message"]
    assert replies.done


def test_rate_limit_error_keeps_retry_after_header() -> None:
    replies = started()
    wire = {"code": "rate_limit_exceeded", "message": "slow down", "retryable": True, "retry_after": 7}
    outcome = replies.accept(error(1, 1, wire))
    assert isinstance(outcome, Failed)
    assert outcome.error.headers() == {"retry-after": "7", "retry-after-ms": "7000"}
    assert outcome.error.body()["error"]["code"] == "rate_limit_exceeded"


def test_error_with_null_error_field() -> None:
    replies = started()
    outcome = replies.accept({"type": "error", "attempt": 1, "seq": 1, "error": None})
    assert isinstance(outcome, Failed)
    assert type(outcome.error) is UpstreamError
    assert outcome.error.message == "upstream failure"


@pytest.mark.parametrize(
    "finisher",
    [
        pytest.param(lambda: end(1, 2), id="end"),
        pytest.param(lambda: error(1, 2, {"code": "upstream_error", "message": "m", "retryable": True}), id="error"),
        pytest.param(lambda: delta(1, 9), id="gap"),
    ],
)
def test_nothing_after_done(finisher: Any) -> None:
    replies = started()
    assert isinstance(replies.accept(delta(1, 1)), Deltas)
    assert isinstance(replies.accept(finisher()), Finished | Failed)
    assert replies.done
    for late in (delta(1, 2), delta(1, 3), heartbeat(1, 3), end(1, 3), start(2, "w2"), delta(2, 1)):
        assert replies.accept(late) is None


def fragment(part: int, data: str, *, last: bool = False, attempt: int = 1) -> dict[str, Any]:
    return {"type": "fragment", "job_id": "j", "attempt": attempt, "seq": 1, "part": part, "last": last, "data": data}


def test_fragments_join_once_the_last_part_is_in_per_attempt() -> None:
    fragments = Fragments()
    assert fragments.add(fragment(0, '{"a":')) is None
    assert fragments.add(fragment(0, "[1,", attempt=2)) is None  # another attempt's parts stay apart
    assert fragments.add(fragment(1, ' "ü"}', last=True)) == '{"a": "ü"}'.encode()
    assert fragments.add(fragment(1, "2]", last=True, attempt=2)) == b"[1,2]"
    assert fragments.parts == {} and fragments.sizes == {}


@pytest.mark.parametrize("broken", [
    fragment(1, "x"),  # part 0 never came
    {**fragment(0, "x"), "data": 7},
    {**fragment(0, "x"), "attempt": "1"},
])
def test_a_missing_or_unreadable_part_is_a_reply_gap(broken: dict[str, Any]) -> None:
    with pytest.raises(ReplyGap):
        Fragments().add(broken)


def test_a_fragmented_payload_past_the_limit_is_a_reply_gap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replies, "FRAGMENTED_LIMIT", 10)
    fragments = Fragments()
    assert fragments.add(fragment(0, "12345")) is None
    with pytest.raises(ReplyGap):
        fragments.add(fragment(1, "678901"))


@pytest.mark.parametrize(
    ("message", "outcome"),
    [
        ({"type": "result", "body": {"object": "list", "data": []}}, replies.Produced({"object": "list", "data": []})),
        ({"type": "event", "event": {"type": 1, "arguments": []}}, replies.Emitted({"type": 1, "arguments": []})),
    ],
)
def test_a_result_or_an_event_is_an_output_that_locks_the_attempt(
    message: dict[str, Any], outcome: replies.Outcome
) -> None:
    followed = started(1)
    assert followed.accept({**message, "job_id": JOB, "attempt": 1, "seq": 1}) == outcome
    assert followed.locked
    # an output was forwarded: a newer attempt may no longer take over
    assert followed.accept(start(2, "w2")) == Stale(2)
    assert followed.accept(end(1, 2, account="acct-7")) == Finished(None, None, "acct-7")
