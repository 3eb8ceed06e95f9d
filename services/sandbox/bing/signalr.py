"""SignalR JSON hub framing (sheet §2.3): records end with 0x1E; one websocket frame may hold several."""

from __future__ import annotations

from typing import Any

import orjson

RS = "\x1e"
HANDSHAKE_OK = "{}" + RS
PING = '{"type":6}' + RS


class FrameError(ValueError):
    """A frame the hub cannot read: the connection ends with a type:7 close naming why."""


def encode(*records: dict[str, Any]) -> str:
    """One websocket text frame carrying `records`, each terminated by RS."""
    return "".join(orjson.dumps(r).decode() + RS for r in records)


def split(text: str) -> list[dict[str, Any]]:
    """The records of a frame. Every record must be terminated (SignalR); empty pieces are skipped."""
    if not text.endswith(RS):
        raise FrameError("a record is not terminated by 0x1E")
    out: list[dict[str, Any]] = []
    for piece in text.split(RS):
        if not piece.strip():
            continue
        try:
            record = orjson.loads(piece)
        except orjson.JSONDecodeError:
            raise FrameError(f"a record is not JSON: {piece[:80]!r}") from None
        if not isinstance(record, dict):
            raise FrameError("a record is not a JSON object")
        out.append(record)
    return out


def is_handshake(record: dict[str, Any]) -> bool:
    return record.get("protocol") == "json" and record.get("version") == 1


def close(error: str, allow_reconnect: bool = True) -> str:
    return encode({"type": 7, "error": error, "allowReconnect": allow_reconnect})
