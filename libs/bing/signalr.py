"""SignalR JSON hub protocol framing as Bing's ChatHub speaks it (fact sheet sydney.md §2.3).

Every record is one JSON object followed by the record separator 0x1E; one websocket text frame
may carry several records, so a receiver splits on it and skips the empty pieces.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from libs.bing.errors import MalformedFrame

RS = "\x1e"
HANDSHAKE = '{"protocol":"json","version":1}' + RS
PING = '{"type":6}' + RS

__all__ = ["HANDSHAKE", "PING", "RS", "MalformedFrame", "encode", "split_records"]


def encode(record: Mapping[str, Any]) -> str:
    """One record as websocket text: compact JSON, then RS."""
    return orjson.dumps(dict(record) if not isinstance(record, dict) else record).decode() + RS


def split_records(text: str) -> list[dict[str, Any]]:
    """The records of one websocket text frame, in order. Raises MalformedFrame (a ValueError) on
    a piece that is not valid JSON or not an object; the message does not quote the piece (an
    upstream may echo request data, cookies included, in what it sends)."""
    records: list[dict[str, Any]] = []
    for piece in text.split(RS):
        if not piece or piece.isspace():
            continue
        try:
            record = orjson.loads(piece)
        except orjson.JSONDecodeError:
            raise MalformedFrame(f"malformed json: a record of {len(piece)} characters is not JSON") from None
        if not isinstance(record, dict):
            raise MalformedFrame(f"malformed record: a JSON {type(record).__name__} instead of an object")
        records.append(record)
    return records
