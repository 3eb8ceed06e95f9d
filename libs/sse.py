"""Server-sent events framing, with no I/O: encoding for the edge, incremental decoding for workers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import orjson

DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"
HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx and friends must not buffer the stream
]


def data_event(payload: object) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


class Event(NamedTuple):
    data: str
    event: str = "message"
    id: str | None = None


class SSEDecoder:
    """Feed bytes as they arrive; get complete events back (WHATWG event-stream rules).

    Handles CRLF/CR/LF line endings, multi-line data, comments, and lines (or UTF-8 characters)
    split across chunks. It is on every worker's per-token path, so a chunk is split into lines
    in one pass rather than line by line.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None

    def feed(self, chunk: bytes) -> Iterator[Event]:
        buffer = self._buffer + chunk
        held = b""
        if b"\r" in buffer:
            if buffer.endswith(b"\r"):  # maybe the first half of a CRLF: decide when more comes
                buffer, held = buffer[:-1], b"\r"
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = buffer.split(b"\n")
        self._buffer = lines.pop() + held
        for line in lines:
            event = self._line(line)
            if event is not None:
                yield event

    def close(self) -> Iterator[Event]:
        """End of stream: a pending event without its blank line is still delivered."""
        if self._buffer:
            event = self._line(self._buffer.rstrip(b"\r"))
            self._buffer = b""
            if event is not None:
                yield event
        event = self._line(b"")
        if event is not None:
            yield event

    def _line(self, raw: bytes) -> Event | None:
        if not raw:
            if not self._data and not self._event:
                return None
            event = Event("\n".join(self._data), self._event or "message", self._id)
            self._data, self._event = [], ""
            return event
        if raw.startswith(b"data: "):  # by far the most common line
            self._data.append(raw[6:].decode("utf-8", errors="replace"))
            return None
        if raw.startswith(b":"):
            return None
        field, _, value = raw.decode("utf-8", errors="replace").partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id":
            self._id = value
        return None
