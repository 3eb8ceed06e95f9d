"""SignalR JSON framing as the ChatHub speaks it (sydney.md §2.3)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from libs.bing.signalr import HANDSHAKE, PING, RS, MalformedFrame, encode, split_records


def test_constants_are_the_sheet_records() -> None:
    assert RS == "\x1e"
    assert HANDSHAKE.endswith("\x1e")
    assert orjson.loads(HANDSHAKE[:-1]) == {"protocol": "json", "version": 1}
    assert PING == '{"type":6}\x1e'


def test_encode_is_compact_json_then_rs_in_key_order() -> None:
    text = encode({"type": 4, "target": "chat", "arguments": [{"text": "héllo <&>"}]})
    assert text == '{"type":4,"target":"chat","arguments":[{"text":"héllo <&>"}]}\x1e'


def test_several_records_in_one_frame_and_empty_pieces_skipped() -> None:
    frame = (
        '{"type":2,"invocationId":"0","item":{"result":{"value":"Success"}}}\x1e{"type":3,"invocationId":"0"}\x1e\x1e'
    )
    assert split_records(frame) == [
        {"type": 2, "invocationId": "0", "item": {"result": {"value": "Success"}}},
        {"type": 3, "invocationId": "0"},
    ]
    assert split_records("{}\x1e") == [{}]
    assert split_records("") == []
    assert split_records("\x1e\x1e") == []


def test_a_record_without_trailing_rs_is_still_read() -> None:
    assert split_records('{"type":6}') == [{"type": 6}]


@pytest.mark.parametrize("frame", ['{"type":1\x1e', '{"type":6}\x1e_U=secret-cookie\x1e', "[1,2]\x1e", '"x"\x1e', "7"])
def test_invalid_json_or_non_objects_are_malformed(frame: str) -> None:
    with pytest.raises(MalformedFrame) as caught:
        split_records(frame)
    assert isinstance(caught.value, ValueError)
    assert "secret" not in str(caught.value)


def test_encode_split_round_trip() -> None:
    records: list[dict[str, Any]] = [{"type": 6}, {"type": 1, "arguments": [{"messages": [{"text": "a\x1fb"}]}]}]
    assert split_records("".join(encode(r) for r in records)) == records
