"""libs.worker_backend: what each output item becomes on the bus (before the runtime numbers it)."""

from __future__ import annotations

from libs.worker_backend import Event, Result, StreamEnd, end_reply, output_replies


def test_deltas_are_coalesced_and_offset() -> None:
    choices = [{"index": 0, "delta": {"content": "He"}}, {"index": 0, "delta": {"content": "llo"}}]
    assert output_replies(choices, 2) == [{"type": "delta", "choices": [{"index": 2, "delta": {"content": "Hello"}}]}]


def test_a_result_and_an_event_are_one_reply_each() -> None:
    assert output_replies(Result({"data": [1]}), 0) == [{"type": "result", "body": {"data": [1]}}]
    assert output_replies(Event({"type": 2}), 5) == [{"type": "event", "event": {"type": 2}}]


def test_the_end_names_the_account_only_when_there_is_one() -> None:
    usage = {"prompt_tokens": 1, "completion_tokens": 0, "total_tokens": 1}
    assert end_reply(StreamEnd(usage=usage)) == {"type": "end", "usage": usage, "system_fingerprint": None}
    assert end_reply(StreamEnd(account="a1"))["account"] == "a1"
