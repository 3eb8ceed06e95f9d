"""uvicorn's httptools protocol, sending a response's head together with the start of its body.

uvicorn writes the status line and headers as soon as the app sends `http.response.start`, and
the body with the next `send`: two socket writes, two TCP segments, per response. On loopback a
write also runs the receiver's side of TCP in the sender's context, so the second one costs the
edge about as much again as the first. `HeadWithBody` holds a head back until the body's first
write (which an ASGI app sends right after it, in the same step) and sends both as one; a head
not followed by a body in the same loop step goes out on its own at the next step.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_HEAD_END = b"\r\n\r\n"


class HeadWithBody:
    """Stands in for the connection's transport; everything but `write` and `close` passes through."""

    __slots__ = ("_head", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._head: bytes | None = None

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head + data)
        elif data.startswith(b"HTTP/1.1 ") and data.endswith(_HEAD_END) and not self._transport.is_closing():
            self._head = data
            self._loop.call_soon(self._flush)  # a body normally follows at once; if not, the head goes alone
        else:
            self._transport.write(data)

    def _flush(self) -> None:
        head = self._head
        if head is not None:
            self._head = None
            if not self._transport.is_closing():
                self._transport.write(head)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class EdgeHttpProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(HeadWithBody(transport, self.loop))  # type: ignore[arg-type]
