"""Server-sent events framing, with no I/O: encoding for the edge, incremental decoding for workers."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Event:
    data: str
    event: str = "message"
    id: str | None = None


class SSEDecoder:
    """Feed bytes as they arrive; get complete events back (WHATWG event-stream rules).

    Handles CRLF/CR/LF line endings, multi-line data, comments, and lines split across chunks.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None

    def feed(self, chunk: bytes) -> Iterator[Event]:
        self._buffer += chunk
        while True:
            line, sep, rest = self._split_line(self._buffer)
            if not sep:
                return
            self._buffer = rest
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

    @staticmethod
    def _split_line(buffer: bytes) -> tuple[bytes, bool, bytes]:
        lf = buffer.find(b"\n")
        cr = buffer.find(b"\r")
        if cr != -1 and (lf == -1 or cr < lf):
            if cr == len(buffer) - 1:  # a CR at the end may be the first half of CRLF
                return b"", False, buffer
            end = cr + 2 if buffer[cr + 1 : cr + 2] == b"\n" else cr + 1
            return buffer[:cr], True, buffer[end:]
        if lf == -1:
            return b"", False, buffer
        return buffer[:lf], True, buffer[lf + 1 :]

    def _line(self, raw: bytes) -> Event | None:
        if not raw:
            if not self._data and not self._event:
                return None
            event = Event(data="\n".join(self._data), event=self._event or "message", id=self._id)
            self._data, self._event = [], ""
            return event
        line = raw.decode("utf-8", errors="replace")
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id":
            self._id = value
        return None
