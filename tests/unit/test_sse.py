"""libs.sse: SSE encoding constants and the incremental decoder (WHATWG event-stream rules)."""

from __future__ import annotations

import orjson
import pytest

from libs.sse import DONE, HEADERS, KEEPALIVE, Event, SSEDecoder, data_event


def decode_all(stream: bytes, chunk_size: int | None = None, *, close: bool = True) -> list[Event]:
    decoder = SSEDecoder()
    events: list[Event] = []
    if chunk_size is None:
        events += decoder.feed(stream)
    else:
        for start in range(0, len(stream), chunk_size):
            events += decoder.feed(stream[start : start + chunk_size])
    if close:
        events += decoder.close()
    return events


# ---- encoding ------------------------------------------------------------------------------


def test_constants() -> None:
    assert DONE == b"data: [DONE]\n\n"
    assert KEEPALIVE == b": keep-alive\n\n"
    assert (b"content-type", b"text/event-stream; charset=utf-8") in HEADERS
    assert (b"cache-control", b"no-cache") in HEADERS


@pytest.mark.parametrize(
    "payload",
    [{"a": 1}, {"choices": [{"delta": {"content": "line1\nline2"}}]}, [1, 2], "text", {"emoji": "🚀 é"}],
)
def test_data_event_is_one_json_line(payload: object) -> None:
    raw = data_event(payload)
    assert raw.startswith(b"data: ")
    assert raw.endswith(b"\n\n")
    assert raw.count(b"\n") == 2  # newlines inside strings are escaped by JSON
    assert orjson.loads(raw[len(b"data: ") : -2]) == payload


def test_encoded_events_round_trip_through_the_decoder() -> None:
    payloads = [{"i": i, "text": "a\nb" * i} for i in range(5)]
    stream = KEEPALIVE + b"".join(data_event(p) for p in payloads) + KEEPALIVE + DONE
    events = decode_all(stream, chunk_size=1)
    assert [e.data for e in events] == [*(orjson.dumps(p).decode() for p in payloads), "[DONE]"]
    assert all(e.event == "message" and e.id is None for e in events)


# ---- decoding ------------------------------------------------------------------------------

STREAM = b"data: one\n\nevent: update\ndata: two\nid: 7\n\n: comment\ndata: three\ndata: four\n\n"
EXPECTED = [Event("one"), Event("two", "update", "7"), Event("three\nfour", "message", "7")]


@pytest.mark.parametrize("chunk_size", [None, 1, 2, 3, 5, 7, 64])
@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_events_across_chunk_boundaries_and_line_endings(chunk_size: int | None, newline: bytes) -> None:
    stream = STREAM.replace(b"\n", newline)
    assert decode_all(stream, chunk_size) == EXPECTED


@pytest.mark.parametrize("chunk_size", [None, 1, 2])
def test_mixed_line_endings(chunk_size: int | None) -> None:
    stream = b"data: a\r\ndata: b\rdata: c\n\r\ndata: d\r\r"
    assert decode_all(stream, chunk_size) == [Event("a\nb\nc"), Event("d")]


def test_lf_events_are_delivered_without_close() -> None:
    decoder = SSEDecoder()
    assert list(decoder.feed(b"data: x\n")) == []
    assert list(decoder.feed(b"\n")) == [Event("x")]
    assert list(decoder.close()) == []


def test_crlf_split_between_chunks_is_one_line_ending() -> None:
    decoder = SSEDecoder()
    assert list(decoder.feed(b"data: a\r")) == []
    assert list(decoder.feed(b"\ndata: b\r")) == []
    assert list(decoder.feed(b"\n\r")) == []
    assert list(decoder.feed(b"\n")) == [Event("a\nb")]


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        (b": just a comment\n\n", []),
        (b":\n\n", []),
        (b": keep-alive\n\ndata: x\n\n", [Event("x")]),
        (b"data: a\n: interleaved comment\ndata: b\n\n", [Event("a\nb")]),
        (b"\n\n\n", []),
    ],
)
def test_comments_and_blank_lines(stream: bytes, expected: list[Event]) -> None:
    assert decode_all(stream, 1) == expected


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        (b"data:no-space\n\n", [Event("no-space")]),
        (b"data:  two-spaces\n\n", [Event(" two-spaces")]),
        (b"data\n\n", [Event("")]),
        (b"data:\n\n", [Event("")]),
        (b"data: a:b:c\n\n", [Event("a:b:c")]),
        (b"data: \ndata: \n\n", [Event("\n")]),
        (b"unknown: field\ndata: x\nretry: 100\n\n", [Event("x")]),
        (b'data: {"a": 1}\n\n', [Event('{"a": 1}')]),
    ],
)
def test_field_parsing(stream: bytes, expected: list[Event]) -> None:
    assert decode_all(stream) == expected


def test_event_type_resets_but_id_persists() -> None:
    stream = b"event: a\nid: 1\ndata: x\n\ndata: y\n\nid: 2\nevent: b\ndata: z\n\n"
    assert decode_all(stream) == [Event("x", "a", "1"), Event("y", "message", "1"), Event("z", "b", "2")]


def test_utf8_split_inside_a_character() -> None:
    stream = "data: héllo 🚀 wörld\n\n".encode()
    assert decode_all(stream, chunk_size=1) == [Event("héllo 🚀 wörld")]


def test_invalid_utf8_is_replaced_not_raised() -> None:
    assert decode_all(b"data: \xff\xfe\n\n") == [Event("\ufffd\ufffd")]


@pytest.mark.parametrize(
    "stream",
    [b"data: last", b"data: last\n", b"data: last\r\n", b"data: last\r"],
)
@pytest.mark.parametrize("chunk_size", [None, 1])
def test_close_flushes_final_event_without_blank_line(stream: bytes, chunk_size: int | None) -> None:
    assert decode_all(stream, chunk_size, close=False) == []
    assert decode_all(stream, chunk_size) == [Event("last")]


def test_close_with_nothing_pending() -> None:
    decoder = SSEDecoder()
    assert list(decoder.close()) == []
    assert list(decoder.feed(b"data: a\n\n")) == [Event("a")]
    assert list(decoder.close()) == []


def test_close_with_only_a_partial_comment() -> None:
    assert decode_all(b"data: a\n\n: partial comm") == [Event("a")]


def test_feed_is_lazy_generator_but_buffer_survives_between_calls() -> None:
    decoder = SSEDecoder()
    first = list(decoder.feed(b"data: a\n\ndata: b"))
    assert first == [Event("a")]
    assert list(decoder.feed(b"\n\n")) == [Event("b")]
