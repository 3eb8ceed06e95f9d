"""libs.coalesce: merging the deltas a worker has in hand into as few bus messages as possible."""

from __future__ import annotations

from typing import Any

import pytest

from libs.coalesce import coalesce


def chat(index: int, content: str | None = None, **extra: Any) -> dict[str, Any]:
    delta: dict[str, Any] = {} if content is None else {"content": content}
    delta.update(extra.pop("delta", {}))
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": None, **extra}


def text(index: int, value: str, **extra: Any) -> dict[str, Any]:
    return {"index": index, "text": value, "logprobs": None, "finish_reason": None, **extra}


def test_empty_input_gives_no_messages() -> None:
    assert coalesce([]) == []
    assert coalesce([], offset=3) == []


def test_plain_chat_deltas_of_one_index_are_concatenated() -> None:
    out = coalesce([chat(0, "Hel"), chat(0, "lo"), chat(0, ", "), chat(0, "world")])
    assert out == [[{"index": 0, "delta": {"content": "Hello, world"}, "logprobs": None, "finish_reason": None}]]


def test_plain_text_completion_chunks_of_one_index_are_concatenated() -> None:
    out = coalesce([text(0, "a"), text(0, "b"), text(0, "c")])
    assert out == [[{"index": 0, "text": "abc", "logprobs": None, "finish_reason": None}]]


def test_minimal_choices_without_null_keys_still_merge() -> None:
    out = coalesce([{"index": 0, "delta": {"content": "x"}}, {"index": 0, "delta": {"content": "y"}}])
    assert out == [[{"index": 0, "delta": {"content": "xy"}}]]
    out = coalesce([{"index": 1, "text": "x"}, {"index": 1, "text": "y"}])
    assert out == [[{"index": 1, "text": "xy"}]]


def test_empty_string_content_counts_as_plain_text() -> None:
    out = coalesce([chat(0, ""), chat(0, "a"), chat(0, "")])
    assert out == [[chat(0, "a")]]


@pytest.mark.parametrize("offset", [0, 1, 5])
def test_offset_reindexes_every_choice(offset: int) -> None:
    out = coalesce([chat(0, "a"), chat(1, "b"), chat(0, "c", finish_reason="stop")], offset=offset)
    flat = [c for message in out for c in message]
    assert [c["index"] for c in flat] == [offset, offset + 1, offset]


def test_offset_does_not_mutate_the_input() -> None:
    raw = [chat(0, "a"), chat(0, "b")]
    snapshot = [dict(c) for c in raw]
    out = coalesce(raw, offset=4)
    assert raw == snapshot
    assert out == [[chat(4, "ab")]]


def test_missing_index_is_treated_as_zero_plus_offset() -> None:
    out = coalesce([{"delta": {"content": "a"}}], offset=2)
    assert out == [[{"delta": {"content": "a"}, "index": 2}]]


@pytest.mark.parametrize(
    "rich",
    [
        pytest.param(chat(0, delta={"role": "assistant"}), id="role"),
        pytest.param(chat(0, "x", delta={"role": "assistant"}), id="role+content"),
        pytest.param(
            chat(0, delta={"tool_calls": [{"index": 0, "function": {"arguments": "{"}}]}),
            id="tool_calls",
        ),
        pytest.param(chat(0, "x", finish_reason="stop"), id="finish_reason"),
        pytest.param(chat(0, "x", logprobs={"content": [{"token": "x", "logprob": -0.1}]}), id="logprobs"),
        pytest.param(chat(0, delta={"refusal": "no"}), id="refusal"),
        pytest.param({"index": 0, "delta": {"content": None}}, id="null-content"),
    ],
)
def test_non_plain_chat_delta_is_never_merged(rich: dict[str, Any]) -> None:
    out = coalesce([chat(0, "a"), rich, chat(0, "b")])
    # same index three times, the middle one non-plain: three separate messages, order kept
    assert out == [[chat(0, "a")], [rich], [chat(0, "b")]]


@pytest.mark.parametrize(
    "rich",
    [
        pytest.param(text(0, "x", finish_reason="length"), id="finish_reason"),
        pytest.param(text(0, "x", logprobs={"tokens": ["x"], "token_logprobs": [-0.1]}), id="logprobs"),
        pytest.param({"index": 0, "text": "x", "extra": 1}, id="unknown-key"),
    ],
)
def test_non_plain_text_completion_is_never_merged(rich: dict[str, Any]) -> None:
    out = coalesce([text(0, "a"), rich])
    assert out == [[text(0, "a")], [rich]]


def test_plain_text_after_a_rich_entry_starts_a_new_entry() -> None:
    role = chat(0, delta={"role": "assistant"})
    out = coalesce([role, chat(0, "a"), chat(0, "b"), chat(0, "c")])
    assert out == [[role], [chat(0, "abc")]]


def test_different_indexes_share_one_message() -> None:
    out = coalesce([chat(0, "a"), chat(1, "b"), chat(2, "c")])
    assert out == [[chat(0, "a"), chat(1, "b"), chat(2, "c")]]


def test_interleaved_indexes_are_not_merged_across_each_other() -> None:
    # only consecutive fragments of one index merge; order of the stream is preserved
    out = coalesce([chat(0, "a"), chat(1, "b"), chat(0, "c"), chat(1, "d")])
    assert out == [[chat(0, "a"), chat(1, "b")], [chat(0, "c"), chat(1, "d")]]


def test_finish_after_text_makes_two_messages_for_one_index() -> None:
    finish = chat(0, finish_reason="stop")
    out = coalesce([chat(0, "Hi"), chat(0, "!"), finish])
    assert out == [[chat(0, "Hi!")], [finish]]


def test_tool_call_fragments_stay_separate() -> None:
    f1 = chat(0, delta={"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": ""}}]})
    f2 = chat(0, delta={"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]})
    f3 = chat(0, delta={"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]})
    out = coalesce([f1, f2, f3])
    assert out == [[f1], [f2], [f3]]


@pytest.mark.parametrize(
    "choices",
    [
        [chat(0, "a"), chat(1, "b"), chat(0, "c", finish_reason="stop"), chat(1, "d"), chat(1, finish_reason="stop")],
        [chat(i % 3, str(i)) for i in range(20)],
        [chat(0, delta={"role": "assistant"}), chat(0, "x"), chat(0, "y"), chat(0, finish_reason="stop")],
        [text(0, "a"), text(1, "b"), text(1, "c"), text(0, "d", finish_reason="stop")],
    ],
)
@pytest.mark.parametrize("offset", [0, 2])
def test_at_most_one_entry_per_index_per_message_and_text_preserved(choices: list[dict[str, Any]], offset: int) -> None:
    out = coalesce(choices, offset=offset)
    for message in out:
        indexes = [c["index"] for c in message]
        assert len(indexes) == len(set(indexes))
    flat = [c for message in out for c in message]

    def content(c: dict[str, Any]) -> str:
        return (c.get("delta") or {}).get("content") or c.get("text") or ""

    for index in {c["index"] for c in choices}:
        want = "".join(content(c) for c in choices if c["index"] == index)
        got = "".join(content(c) for c in flat if c["index"] == index + offset)
        assert got == want
    finishes = [(c["index"], c["finish_reason"]) for c in flat if c.get("finish_reason")]
    assert finishes == [(c["index"] + offset, c["finish_reason"]) for c in choices if c.get("finish_reason")]
