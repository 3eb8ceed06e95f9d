"""The ChatGPT web conversation stream parser, on streams written from the fact sheet (§2.4-2.5)."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from services.chatgpt_web_worker.stream import (
    ConversationStream,
    Done,
    Finished,
    Moderation,
    Native,
    StreamError,
    StreamEvent,
    Text,
    Title,
)

SLUG = "text-davinci-002-render-sha"


def message(mid: str, role: str, text: str, *, status: str | None = "in_progress", end_turn: bool | None = None,
            finish: str | None = None, recipient: str = "all", content_type: str = "text") -> dict[str, Any]:
    metadata: dict[str, Any] = {"message_type": "next", "model_slug": SLUG} if role == "assistant" else {}
    if finish is not None:
        metadata["finish_details"] = {"type": finish, "stop": "<|diff_marker|>"}
    msg: dict[str, Any] = {
        "id": mid, "author": {"role": role, "name": None, "metadata": {}}, "create_time": 1683782781.14,
        "update_time": None, "content": {"content_type": content_type, "parts": [text]}, "end_turn": end_turn,
        "weight": 1.0, "metadata": metadata, "recipient": recipient,
    }
    if status is not None:
        msg["status"] = status
    return {"message": msg, "conversation_id": "c-1", "error": None}


def sse(*events: dict[str, Any] | bytes) -> bytes:
    out = b""
    for event in events:
        out += event if isinstance(event, bytes) else b"data: " + orjson.dumps(event) + b"\n\n"
    return out


# The sheet's illustration: system and user echoed, then the assistant's cumulative text.
SHEET_EVENTS = [
    message("sys-1", "system", "", status="finished_successfully", end_turn=True),
    message("u-1", "user", "Hello", status="finished_successfully"),
    message("a-1", "assistant", ""),
    message("a-1", "assistant", "Hello"),
    message("a-1", "assistant", "Hello! How can I help"),
    message("a-1", "assistant", "Hello! How can I help you today?", status="finished_successfully", end_turn=True,
            finish="stop"),
]
SHEET_STREAM = sse(*SHEET_EVENTS, b"data: [DONE]\n\n")


def parse(data: bytes, cuts: list[int] | None = None) -> list[StreamEvent]:
    stream = ConversationStream()
    events: list[StreamEvent] = []
    start = 0
    for cut in sorted(cuts or []):
        events += stream.feed(data[start:cut])
        start = cut
    events += stream.feed(data[start:])
    events += stream.close()
    return events


def derived(events: list[StreamEvent]) -> list[StreamEvent]:
    return [e for e in events if not isinstance(e, Native)]


def test_sheet_example_gives_deltas_then_finish_then_done() -> None:
    events = parse(SHEET_STREAM)
    assert derived(events) == [
        Text("a-1", "c-1", "Hello", SLUG),
        Text("a-1", "c-1", "! How can I help", SLUG),
        Text("a-1", "c-1", " you today?", SLUG),
        Finished("a-1", "c-1", "stop", SLUG),
        Done(),
    ]
    # every JSON event is relayed as it came, before what is derived from it
    assert [e.data for e in events if isinstance(e, Native)] == SHEET_EVENTS
    assert isinstance(events[3], Native) and events[4] == Text("a-1", "c-1", "Hello", SLUG)


def test_the_conversation_id_is_learned_from_the_first_event() -> None:
    stream = ConversationStream()
    first = {"conversation_id": "c-9", "message_id": "a-0", "is_completion": False,
             "moderation_response": {"flagged": False, "blocked": False, "moderation_id": "m"}}
    later = message("a-1", "assistant", "Hi")
    del later["conversation_id"]
    events = stream.feed(sse(first, later))
    assert stream.conversation_id == "c-9"
    assert derived(events) == [Moderation("c-9", "a-0", False, False), Text("a-1", "c-9", "Hi", SLUG)]


def test_tolerated_lines_are_skipped() -> None:
    # CRLF endings, an `event: ping` with a timestamp data line, blank lines, a non-JSON line, JSON
    # that is not an object, and no blank line at all between two events
    data = (b"event: ping\r\ndata: 2023-05-11 05:26:25.127931\r\n\r\n\r\n"
            + b"data: " + orjson.dumps(message("a-1", "assistant", "Hel")) + b"\r\n"
            + b"data: {not json\n: a comment\nid: 7\nretry: 10\n"
            + b"data: 12\n"
            + b"data: " + orjson.dumps(message("a-1", "assistant", "Hello")) + b"\n"
            + b"data: [DONE]")  # no final newline: read at close
    assert derived(parse(data)) == [Text("a-1", "c-1", "Hel", SLUG), Text("a-1", "c-1", "lo", SLUG), Done()]


def test_a_bare_cr_ends_a_line() -> None:
    data = sse(message("a-1", "assistant", "Hi")).replace(b"\n", b"\r") + b"data: [DONE]\r"
    assert derived(parse(data)) == [Text("a-1", "c-1", "Hi", SLUG), Done()]


def test_rewritten_text_emits_nothing_and_resynchronises() -> None:
    data = sse(
        message("a-1", "assistant", "The cat"),
        message("a-1", "assistant", "The dog"),  # not an extension: nothing
        message("a-1", "assistant", "The dog sat"),  # extends the rewritten text
        message("a-1", "assistant", "The dog sat"),  # the same again: no empty Text
    )
    assert derived(parse(data)) == [Text("a-1", "c-1", "The cat", SLUG), Text("a-1", "c-1", " sat", SLUG)]


def test_only_visible_assistant_text_counts_and_ids_are_tracked_apart() -> None:
    data = sse(
        message("u-1", "user", "Hello"),
        message("a-1", "assistant", "search(", recipient="browser"),  # a tool call
        message("t-1", "tool", "results"),
        message("a-2", "assistant", "x = 1", content_type="code"),
        message("a-1", "assistant", "One"),
        message("a-3", "assistant", "Two"),
        message("a-1", "assistant", "One more"),  # a-1's own earlier text is the reference
    )
    assert derived(parse(data)) == [
        Text("a-1", "c-1", "One", SLUG), Text("a-3", "c-1", "Two", SLUG), Text("a-1", "c-1", " more", SLUG),
    ]


def test_finished_once_per_message_from_end_turn_or_finish_details() -> None:
    data = sse(
        # truncated: finished_successfully with finish_details but end_turn false
        message("a-1", "assistant", "Part", status="finished_successfully", end_turn=False, finish="max_tokens"),
        message("a-1", "assistant", "Part", status="finished_successfully", end_turn=True, finish="max_tokens"),
        # end_turn without finish_details (the May 2023 sample has no `status`)
        message("a-2", "assistant", "Done.", status=None, end_turn=True),
        # finished without finish_details and without end_turn (a tool hop): not the end
        message("a-3", "assistant", "hop", status="finished_successfully", end_turn=False),
    )
    assert derived(parse(data)) == [
        Text("a-1", "c-1", "Part", SLUG), Finished("a-1", "c-1", "max_tokens", SLUG),
        Text("a-2", "c-1", "Done.", SLUG), Finished("a-2", "c-1", None, SLUG),
        Text("a-3", "c-1", "hop", SLUG),
    ]


def test_title_and_moderation_events() -> None:
    data = sse(
        {"type": "title_generation", "title": "Greeting", "conversation_id": "c-1"},
        {"type": "moderation", "conversation_id": "c-1", "message_id": "a-1", "is_completion": True,
         "moderation_response": {"flagged": True, "blocked": True, "moderation_id": "modr-1"}},
        {"type": "message_stream_complete", "conversation_id": "c-1"},
    )
    events = parse(data)
    assert derived(events) == [Title("c-1", "Greeting"), Moderation("c-1", "a-1", True, True)]
    assert sum(isinstance(e, Native) for e in events) == 3


def test_errors_in_the_stream() -> None:
    data = sse(
        message("a-1", "assistant", "Hi"),
        {"message": None, "conversation_id": "c-1", "error": "Something went wrong"},
        {"message": None, "conversation_id": "c-1", "error": {"message": "quota", "code": "x"}},
        {"message": None, "conversation_id": "c-1", "error": ["odd"]},
    ) + b"internal server error\n" + b"data: Internal Server Error\n"
    assert derived(parse(data)) == [
        Text("a-1", "c-1", "Hi", SLUG), StreamError("Something went wrong"), StreamError("quota"),
        StreamError('["odd"]'), StreamError("internal server error"), StreamError("internal server error"),
    ]


def test_nothing_after_done() -> None:
    stream = ConversationStream()
    events = stream.feed(b"data: [DONE]\n\n" + sse(message("a-1", "assistant", "late")))
    assert events == [Done()] and stream.done
    assert stream.feed(sse(message("a-1", "assistant", "later"))) == []
    assert stream.close() == []


def test_a_stream_cut_short_is_not_done() -> None:
    stream = ConversationStream()
    stream.feed(sse(message("a-1", "assistant", "Hi")) + b'data: {"message": {"id"')
    assert stream.close() == []  # the half event is not JSON
    assert not stream.done


def test_utf8_split_inside_a_character() -> None:
    text = "Grüße 🌍 日本"
    data = sse(message("a-1", "assistant", text), b"data: [DONE]\n\n")
    cut = data.index("🌍".encode()) + 2  # in the middle of the 4-byte character
    assert derived(parse(data, [cut])) == [Text("a-1", "c-1", text, SLUG), Done()]


# ---- any split of the bytes gives the same events ---------------------------------------------

_texts = st.lists(st.text(alphabet=st.characters(codec="utf-8"), max_size=6),
                  min_size=1, max_size=5)


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    pieces = draw(_texts)
    parts: list[dict[str, Any] | bytes] = [message("u-1", "user", "Hello")]
    text = ""
    for piece in pieces:
        text += piece
        parts.append(message("a-1", "assistant", text))
        if draw(st.booleans()):
            parts.append(b"event: ping\ndata: 2024-01-01T00:00:00\n\n")
    parts.append(message("a-1", "assistant", text, status="finished_successfully", end_turn=True, finish="stop"))
    parts.append(b"data: [DONE]\n\n")
    data = sse(*parts)
    return data.replace(b"\n", b"\r\n") if draw(st.booleans()) else data


@settings(max_examples=200, deadline=None)
@given(data=streams(), cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=12))
def test_any_split_gives_the_same_events(data: bytes, cuts: list[int]) -> None:
    whole = parse(data)
    assert parse(data, [c % (len(data) + 1) for c in cuts]) == whole
    assert whole[-1] == Done()
    text = "".join(e.delta for e in whole if isinstance(e, Text))
    final = orjson.loads(data.split(b"data: ")[-2].strip())  # the finishing event
    assert text == final["message"]["content"]["parts"][0]


@settings(max_examples=50, deadline=None)
@given(data=streams())
def test_byte_by_byte_gives_the_same_events(data: bytes) -> None:
    assert parse(data, list(range(len(data)))) == parse(data)
