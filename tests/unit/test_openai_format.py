"""services.edge.openai_format.ResponseBuilder: the OpenAI shapes clients see."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from services.edge.openai_format import ResponseBuilder


def chat(index: int, content: str | None = None, finish: str | None = None, **delta: Any) -> dict[str, Any]:
    d = dict(delta)
    if content is not None:
        d["content"] = content
    return {"index": index, "delta": d, "logprobs": None, "finish_reason": finish}


def text(index: int, value: str, finish: str | None = None, logprobs: Any = None) -> dict[str, Any]:
    return {"index": index, "text": value, "logprobs": logprobs, "finish_reason": finish}


# ---- identity ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "prefix", "obj"),
    [("chat", "chatcmpl-", "chat.completion.chunk"), ("completion", "cmpl-", "text_completion")],
)
def test_id_prefix_and_object(kind: Any, prefix: str, obj: str) -> None:
    before = int(time.time())
    builder = ResponseBuilder(kind, "m1", 1)
    assert re.fullmatch(re.escape(prefix) + r"[0-9a-f]{32}", builder.id)
    assert before <= builder.created <= int(time.time())
    first = builder.chunk([chat(0, "a")] if kind == "chat" else [text(0, "a")])
    second = builder.chunk([chat(0, "b")] if kind == "chat" else [text(0, "b")])
    closing = builder.closing_chunk()
    assert closing is not None
    for chunk in (first, second, closing, builder.usage_chunk()):
        assert chunk["id"] == builder.id
        assert chunk["object"] == obj
        assert chunk["model"] == "m1"
        assert chunk["created"] == builder.created


def test_ids_differ_between_builders() -> None:
    assert ResponseBuilder("chat", "m", 1).id != ResponseBuilder("chat", "m", 1).id


# ---- streaming: role -----------------------------------------------------------------------


def test_role_added_to_first_delta_of_each_index_only() -> None:
    builder = ResponseBuilder("chat", "m", 2)
    c1 = builder.chunk([chat(0, "a"), chat(1, "b")])
    assert [c["delta"] for c in c1["choices"]] == [
        {"role": "assistant", "content": "a"},
        {"role": "assistant", "content": "b"},
    ]
    c2 = builder.chunk([chat(0, "c", role="assistant"), chat(1, "d")])
    assert [c["delta"] for c in c2["choices"]] == [{"content": "c"}, {"content": "d"}]


def test_role_first_in_delta_and_worker_role_normalised() -> None:
    builder = ResponseBuilder("chat", "m", 1)
    c = builder.chunk([chat(0, "hi", role="bot")])
    delta = c["choices"][0]["delta"]
    assert delta == {"role": "assistant", "content": "hi"}
    assert next(iter(delta)) == "role"


def test_role_tracked_per_index_across_chunks() -> None:
    builder = ResponseBuilder("chat", "m", 3)
    assert builder.chunk([chat(1, "x")])["choices"][0]["delta"] == {"role": "assistant", "content": "x"}
    assert builder.chunk([chat(0, "y")])["choices"][0]["delta"] == {"role": "assistant", "content": "y"}
    assert builder.chunk([chat(1, "z")])["choices"][0]["delta"] == {"content": "z"}
    assert builder.chunk([chat(2)])["choices"][0]["delta"] == {"role": "assistant"}


def test_stream_choice_shape() -> None:
    builder = ResponseBuilder("chat", "m", 1)
    lp = {"content": [{"token": "a", "logprob": -0.5}]}
    choice = builder.chunk([{"index": 0, "delta": {"content": "a"}, "logprobs": lp}])["choices"][0]
    assert choice == {"index": 0, "delta": {"role": "assistant", "content": "a"}, "logprobs": lp, "finish_reason": None}


def test_input_choice_is_not_mutated() -> None:
    builder = ResponseBuilder("chat", "m", 1)
    raw = chat(0, "a")
    builder.chunk([raw])
    assert raw["delta"] == {"content": "a"}


def test_delivered_chars_counts_content_and_text() -> None:
    builder = ResponseBuilder("chat", "m", 2)
    builder.chunk([chat(0, "abc"), chat(1, "de")])
    builder.chunk([chat(0, None, "stop")])
    assert builder.delivered_chars == 5
    completion = ResponseBuilder("completion", "m", 1)
    completion.chunk([text(0, "hello")])
    assert completion.delivered_chars == 5


def test_completion_chunk_shape() -> None:
    builder = ResponseBuilder("completion", "m", 1)
    chunk = builder.chunk([{"index": 0, "text": None}])
    assert chunk["choices"] == [{"index": 0, "text": "", "logprobs": None, "finish_reason": None}]


# ---- streaming: finish / closing / usage ---------------------------------------------------


def test_finish_tracking() -> None:
    builder = ResponseBuilder("chat", "m", 3)
    builder.chunk([chat(0, "a"), chat(1, "b", "stop")])
    assert builder.finished == {1: "stop"}
    builder.chunk([chat(2, None, "tool_calls")])
    assert builder.finished == {1: "stop", 2: "tool_calls"}


def test_closing_chunk_finishes_only_open_choices() -> None:
    builder = ResponseBuilder("chat", "m", 3)
    builder.chunk([chat(0, "a"), chat(1, "b", "stop")])
    closing = builder.closing_chunk("length")
    assert closing is not None
    assert closing["choices"] == [
        {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"},
        {"index": 2, "delta": {"role": "assistant"}, "logprobs": None, "finish_reason": "length"},
    ]
    assert builder.finished == {0: "length", 1: "stop", 2: "length"}
    assert builder.closing_chunk() is None


def test_closing_chunk_default_reason_is_length() -> None:
    builder = ResponseBuilder("completion", "m", 2)
    builder.chunk([text(1, "x", "stop")])
    closing = builder.closing_chunk()
    assert closing is not None
    assert closing["choices"] == [{"index": 0, "text": "", "logprobs": None, "finish_reason": "length"}]


def test_closing_chunk_none_when_all_finished() -> None:
    builder = ResponseBuilder("chat", "m", 2)
    builder.chunk([chat(0, "a", "stop"), chat(1, "b", "length")])
    assert builder.closing_chunk() is None
    assert builder.closing_chunk("stop") is None


def test_closing_chunk_with_custom_reason() -> None:
    builder = ResponseBuilder("chat", "m", 1)
    closing = builder.closing_chunk("content_filter")
    assert closing is not None
    assert closing["choices"][0]["finish_reason"] == "content_filter"


def test_usage_chunk_has_empty_choices_and_a_copy_of_usage() -> None:
    builder = ResponseBuilder("chat", "m", 1)
    builder.add_usage({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7})
    chunk = builder.usage_chunk()
    assert chunk["choices"] == []
    assert chunk["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    chunk["usage"]["prompt_tokens"] = 99
    assert builder.usage["prompt_tokens"] == 3


@pytest.mark.parametrize(
    ("usages", "total", "estimated"),
    [
        ([], {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}, False),
        (
            [{"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}],
            {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
            False,
        ),
        (
            [
                {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
                {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30, "estimated": True},
                {"prompt_tokens": 100, "completion_tokens": 200, "total_tokens": 300, "estimated": False},
            ],
            {"prompt_tokens": 111, "completion_tokens": 222, "total_tokens": 333},
            True,
        ),
        ([None], {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}, True),
        ([{}], {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}, True),
        (
            [{"prompt_tokens": 5, "completion_tokens": None, "total_tokens": 5}, None],
            {"prompt_tokens": 5, "completion_tokens": 0, "total_tokens": 5},
            True,
        ),
    ],
)
def test_add_usage_sums_and_tracks_estimated(usages: list[Any], total: dict[str, int], estimated: bool) -> None:
    builder = ResponseBuilder("chat", "m", 2)
    for usage in usages:
        builder.add_usage(usage)
    assert builder.usage == total
    assert builder.usage_estimated is estimated
    assert builder.response()["usage"] == total


# ---- non-stream assembly -------------------------------------------------------------------


def test_chat_response_assembly() -> None:
    builder = ResponseBuilder("chat", "gpt-x", 2)
    builder.absorb([chat(0, "Hel", role="assistant"), chat(1, "Wor")])
    builder.absorb([chat(0, "lo"), chat(1, "ld")])
    builder.absorb([chat(0, None, "stop"), chat(1, None, "length")])
    builder.add_usage({"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6})
    body = builder.response()
    assert body["id"] == builder.id
    assert body["object"] == "chat.completion"
    assert body["model"] == "gpt-x"
    assert "system_fingerprint" not in body
    assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6}
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        },
        {
            "index": 1,
            "message": {"role": "assistant", "content": "World", "refusal": None},
            "logprobs": None,
            "finish_reason": "length",
        },
    ]


def test_system_fingerprint_in_response_when_set() -> None:
    builder = ResponseBuilder("chat", "m", 1)
    builder.system_fingerprint = "fp_abc"
    assert builder.response()["system_fingerprint"] == "fp_abc"


def test_missing_choice_gets_empty_content_and_stop() -> None:
    builder = ResponseBuilder("chat", "m", 2)
    builder.absorb([chat(0, "a", "stop")])
    choice = builder.response()["choices"][1]
    assert choice == {
        "index": 1,
        "message": {"role": "assistant", "content": "", "refusal": None},
        "logprobs": None,
        "finish_reason": "stop",
    }


def test_tool_calls_merged_by_index() -> None:
    builder = ResponseBuilder("chat", "m", 1)
    builder.absorb(
        [
            chat(
                0,
                role="assistant",
                tool_calls=[
                    {
                        "index": 0,
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ""},
                    },
                ],
            )
        ]
    )
    builder.absorb([chat(0, tool_calls=[{"index": 0, "function": {"arguments": '{"city":'}}])])
    builder.absorb(
        [
            chat(
                0,
                tool_calls=[
                    {
                        "index": 1,
                        "id": "call_b",
                        "type": "function",
                        "function": {"name": "get_time", "arguments": "{}"},
                    },
                ],
            )
        ]
    )
    builder.absorb([chat(0, tool_calls=[{"index": 0, "function": {"arguments": ' "Paris"}'}}])])
    builder.absorb([chat(0, None, "tool_calls")])
    choice = builder.response()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] is None
    assert message["tool_calls"] == [
        {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
    ]
    assert message["refusal"] is None
    assert message["role"] == "assistant"


def test_tool_calls_sorted_by_index_even_if_seen_out_of_order() -> None:
    builder = ResponseBuilder("chat", "m", 1)
    builder.absorb([chat(0, tool_calls=[{"index": 2, "id": "c2", "function": {"name": "b", "arguments": "2"}}])])
    builder.absorb([chat(0, tool_calls=[{"index": 0, "id": "c0", "function": {"name": "a", "arguments": "0"}}])])
    calls = builder.response()["choices"][0]["message"]["tool_calls"]
    assert [c["id"] for c in calls] == ["c0", "c2"]
    assert all(c["type"] == "function" for c in calls)


def test_text_and_tool_calls_keep_content() -> None:
    builder = ResponseBuilder("chat", "m", 1)
    builder.absorb([chat(0, "Let me check.")])
    builder.absorb([chat(0, tool_calls=[{"index": 0, "id": "c", "function": {"name": "f", "arguments": "{}"}}])])
    message = builder.response()["choices"][0]["message"]
    assert message["content"] == "Let me check."
    assert len(message["tool_calls"]) == 1


def test_refusal_assembled() -> None:
    builder = ResponseBuilder("chat", "m", 1)
    builder.absorb([chat(0, refusal="I can't "), chat(0, refusal="help.")])
    message = builder.response()["choices"][0]["message"]
    assert message["refusal"] == "I can't help."
    assert message["content"] == ""


def test_chat_logprobs_concatenated() -> None:
    builder = ResponseBuilder("chat", "m", 1)
    a = {"token": "a", "logprob": -0.1, "top_logprobs": []}
    b = {"token": "b", "logprob": -0.2, "top_logprobs": []}
    builder.absorb([{"index": 0, "delta": {"content": "a"}, "logprobs": {"content": [a]}}])
    builder.absorb([{"index": 0, "delta": {"content": "b"}, "logprobs": {"content": [b]}}])
    assert builder.response()["choices"][0]["logprobs"] == {"content": [a, b]}


def test_completion_response_assembly() -> None:
    builder = ResponseBuilder("completion", "davinci", 3)
    builder.absorb([text(0, "Once"), text(2, "Roses")])
    builder.absorb([text(0, " upon", "length"), text(2, " are red", "stop")])
    body = builder.response()
    assert body["object"] == "text_completion"
    assert body["id"].startswith("cmpl-")
    assert body["choices"] == [
        {"index": 0, "text": "Once upon", "logprobs": None, "finish_reason": "length"},
        {"index": 1, "text": "", "logprobs": None, "finish_reason": "stop"},
        {"index": 2, "text": "Roses are red", "logprobs": None, "finish_reason": "stop"},
    ]


def test_completion_logprobs_of_a_single_chunk() -> None:
    builder = ResponseBuilder("completion", "m", 1)
    lp = {"tokens": ["Hi"], "token_logprobs": [-0.1], "top_logprobs": [{"Hi": -0.1}], "text_offset": [0]}
    builder.absorb([text(0, "Hi", "stop", logprobs=lp)])
    assert builder.response()["choices"][0]["logprobs"] == lp


def test_completion_logprobs_of_a_streamed_answer_cover_the_whole_text() -> None:
    """Workers always stream from the upstream, so a non-stream completion with logprobs arrives in
    several chunks, each with the logprobs of its own tokens. The final choice must describe every
    token of `text`, not only those of the first chunk."""
    builder = ResponseBuilder("completion", "m", 1)
    builder.absorb(
        [
            text(
                0,
                "Hello",
                logprobs={
                    "tokens": ["Hello"],
                    "token_logprobs": [-0.1],
                    "top_logprobs": [{"Hello": -0.1}],
                    "text_offset": [0],
                },
            )
        ]
    )
    builder.absorb(
        [
            text(
                0,
                " world",
                "stop",
                logprobs={
                    "tokens": [" world"],
                    "token_logprobs": [-0.2],
                    "top_logprobs": [{" world": -0.2}],
                    "text_offset": [5],
                },
            )
        ]
    )
    choice = builder.response()["choices"][0]
    assert choice["text"] == "Hello world"
    assert choice["logprobs"]["tokens"] == ["Hello", " world"]
    assert choice["logprobs"]["token_logprobs"] == [-0.1, -0.2]
    assert choice["logprobs"]["text_offset"] == [0, 5]


def test_a_delta_field_openai_does_not_define_reaches_the_message_last_value_kept() -> None:
    builder = ResponseBuilder("chat", "m", 1)
    builder.absorb([{"index": 0, "delta": {"role": "assistant", "content": "Hi", "search_results": [1]}}])
    builder.absorb([{"index": 0, "delta": {"suggested_responses": ["a"], "search_results": [2]}}])
    builder.absorb([{"index": 0, "delta": {"content": "!", "role": "assistant"}, "finish_reason": "stop"}])
    message = builder.response()["choices"][0]["message"]
    assert message["content"] == "Hi!"
    assert message["search_results"] == [2] and message["suggested_responses"] == ["a"]
    assert set(message) == {"role", "content", "refusal", "search_results", "suggested_responses"}
