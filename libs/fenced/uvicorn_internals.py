"""The edge's HTTP/1.1 protocol: uvicorn's httptools protocol, subclassed (private API, fenced).

uvicorn's `HttpToolsProtocol` is not a public API: its parser callbacks, `transport`, `cycle`,
`flow`, `connections` and `send_400_response` are internals, which is why this lives here and is
used only when `private_apis_enabled()` (services/edge/__main__.py; the public path is stock
`http="h11"` with uvicorn's public limits). It adds two things:

- `HeadWithBody`: a response's head goes out with the start of its body, in one write.
- A guard on what a client may hold before it has sent a complete request (`ConnectionLimits`,
  libs/http_limits.py): head bytes and header count (431), a head that takes too long and a
  body slower than a minimum rate (408), and a cap on open connections (the oldest idle
  connection is closed for a new one; with none idle the new one gets a 503). uvicorn has none
  of these: it buffers any head, and holds a silent connection forever.

Hot-path cost: a request pays a few attribute writes and one `loop.time()`; the timers are one
sweep per server every fraction of the head timeout, not a timer per request.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from libs.http_limits import ConnectionLimits

_HEAD_END = b"\r\n\r\n"
_LINGER = 1.0  # after a 431, read and drop what the client still sends this long, so it reads the answer


class HeadWithBody:
    """Sends a response's head together with the start of its body.

    uvicorn writes the status line and headers as soon as the app sends `http.response.start`, and
    the body with the next `send`: two socket writes, two TCP segments, per response. On loopback
    a write also runs the receiver's side of TCP in the sender's context, so the second one costs
    the edge about as much again as the first. This stands in for the connection's transport
    (everything but `write` and `close` passes through), holds a head back until the body's first
    write (which an ASGI app sends right after it, in the same step) and sends both as one; a
    head not followed by a body in the same loop step goes out on its own at the next step.
    """

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


def error_response(status: int, reason: str, code: str, message: str, *, retry_after: int | None = None) -> bytes:
    """A complete `connection: close` response with an OpenAI-style error body, built once."""
    kind = "server_error" if status >= 500 else "invalid_request_error"
    body = orjson.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}})
    head = [f"HTTP/1.1 {status} {reason}", "content-type: application/json", f"content-length: {len(body)}",
            "connection: close"]
    if retry_after is not None:
        head.append(f"retry-after: {retry_after}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class _Answers:
    """The guard's responses for one set of limits, prebuilt (a refusal costs one write)."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.head_too_large = error_response(
            431, "Request Header Fields Too Large", "request_header_fields_too_large",
            f"The request's head is larger than this server's limit of {limits.max_header_bytes} bytes "
            "(MAX_HEADER_BYTES).")
        self.too_many_headers = error_response(
            431, "Request Header Fields Too Large", "request_header_fields_too_large",
            f"The request has more header fields than this server's limit of {limits.max_headers} (MAX_HEADERS).")
        self.head_timeout = error_response(
            408, "Request Timeout", "request_timeout",
            f"The request's head did not arrive within {limits.head_timeout:g} s (SY_TIMEOUT_REQUEST_HEAD).")
        self.body_too_slow = error_response(
            408, "Request Timeout", "request_timeout",
            f"The request's body arrived slower than {limits.min_body_rate:g} bytes per second (MIN_BODY_RATE).")
        self.busy = error_response(
            503, "Service Unavailable", "too_many_connections",
            "The server is at its connection limit (MAX_CONNECTIONS); retry shortly.", retry_after=1)


class EdgeHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with `HeadWithBody` and the pre-request guard.

    `guarded_protocol(limits)` makes the class a server uses (its limits, and its own record of
    idle connections and sweep); this base carries the defaults.
    """

    limits: ClassVar[ConnectionLimits] = ConnectionLimits()
    answers: ClassVar[_Answers] = _Answers(limits)
    # connections with no request running (before a head is complete, or idle between keep-alive
    # requests), oldest first: the first to close when a new connection needs the room
    idle: ClassVar[dict[EdgeHttpProtocol, None]] = {}
    sweeping: ClassVar[set[int]] = set()  # id() of each server's `connections` that a sweep is scheduled for

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.raw: asyncio.Transport | None = None
        self.head_left: int | None = None  # bytes the current head may still take; None: not in a head
        self.head_since: float | None = None  # when the head's time began; None: not timed
        self.in_head = False  # a byte of the current head arrived
        self.body_since: float | None = None  # when the body's time began; None: no body arriving
        self.body_bytes = 0
        self.refused = False

    # ---- connection --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        cls = type(self)
        if len(self.connections) >= cls.limits.max_connections:
            victim = next(iter(cls.idle), None)
            if victim is None:  # every connection is busy with a request: refuse this one, cheaply
                self.refused = True
                self.head_left = 0  # anything that still arrives is dropped unparsed
                transport.write(cls.answers.busy)
                transport.close()
                return
            victim.refuse(cls.answers.busy if victim.in_head else None)
        self.raw = transport
        super().connection_made(HeadWithBody(transport, self.loop))  # type: ignore[arg-type]
        self.head_left = cls.limits.max_header_bytes
        self.head_since = self.loop.time()
        cls.idle[self] = None
        if id(self.connections) not in cls.sweeping:
            cls.sweeping.add(id(self.connections))
            self.loop.call_later(cls.sweep_interval(), cls.sweep, self.loop, self.connections)

    def connection_lost(self, exc: Exception | None) -> None:
        type(self).idle.pop(self, None)
        self.head_since = self.body_since = None
        if self.raw is None:  # refused at connect: uvicorn never saw it
            return
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        left = self.head_left
        if left is not None:
            if len(data) > left:
                self.head_overflow(data, left)
                return
            self.head_left = left - len(data)
        elif self.body_since is not None:
            self.body_bytes += len(data)
        super().data_received(data)

    def head_overflow(self, data: bytes, left: int) -> None:
        """More bytes than the head may still take: parse those it may take; if the head ended
        within them, go on with the rest (a body, say), else refuse with a 431."""
        if self.refused:
            return
        self.head_left = 0
        super().data_received(data[:left])
        if self.refused:
            return
        if self.head_left is None:  # the head ended within its limit
            self.data_received(data[left:])
        else:
            self.refuse(type(self).answers.head_too_large, linger=True)

    def send_400_response(self, msg: str) -> None:
        if not self.refused:  # a refusal inside a parser callback has answered already
            super().send_400_response(msg)

    # ---- parser callbacks --------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.in_head = True
        if self.head_since is None:  # a keep-alive request: its head's time starts at its first byte
            self.head_since = self.loop.time()

    def on_headers_complete(self) -> None:
        cls = type(self)
        if len(self.headers) > cls.limits.max_headers:
            self.refuse(cls.answers.too_many_headers)
            raise _Refused  # stops the parser; send_400_response stays silent
        self.head_left = None
        self.head_since = None
        self.in_head = False
        self.body_since = self.loop.time()
        self.body_bytes = 0
        cls.idle.pop(self, None)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.body_since = None
        self.head_left = type(self).limits.max_header_bytes  # the next bytes are the next request's head
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # starts a pipelined request, if one is waiting
        raw = self.raw  # the socket's transport itself: HeadWithBody would add a call layer
        if not self.refused and self.cycle.response_complete and raw is not None and not raw.is_closing():
            type(self).idle[self] = None

    # ---- the guard ---------------------------------------------------------------------------

    def refuse(self, answer: bytes | None, *, linger: bool = False) -> None:
        """Answer (when given) and close. `linger`: the client may still be sending; drop what it
        sends for a moment after our half-close, so that closing with unread data (a reset) does
        not destroy the answer before the client has read it."""
        self.refused = True
        self.head_left = 0  # every later byte goes to head_overflow, which drops it
        self.head_since = self.body_since = None
        type(self).idle.pop(self, None)
        transport = self.raw
        if transport is None or transport.is_closing():
            return
        if answer is not None:
            transport.write(answer)
        if linger and transport.can_write_eof():
            transport.write_eof()
            self.loop.call_later(_LINGER, transport.close)  # or sooner, at the client's EOF
        else:
            transport.close()

    @classmethod
    def sweep_interval(cls) -> float:
        return min(1.0, max(0.05, cls.limits.head_timeout / 4))

    @classmethod
    def sweep(cls, loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
        """Close the connections whose head is late or whose body is too slow; runs while any are open."""
        if connections:  # scheduled first: a failure below must not end the sweeps
            loop.call_later(cls.sweep_interval(), cls.sweep, loop, connections)
        else:
            cls.sweeping.discard(id(connections))
        now = loop.time()
        limits = cls.limits
        for conn in list(connections):
            if not isinstance(conn, EdgeHttpProtocol):
                continue
            cycle = conn.cycle
            head_since = conn.head_since
            if head_since is not None:
                # a pipelined head behind a response still going out is judged once that is done
                if now - head_since > limits.head_timeout and (cycle is None or cycle.response_complete):
                    conn.refuse(cls.answers.head_timeout if conn.in_head else None)
                continue
            body_since = conn.body_since
            if body_since is not None and not conn.flow.read_paused and (
                now > body_since + limits.head_timeout + conn.body_bytes / limits.min_body_rate
            ):
                # answered already (a 401 needs no body, say): just close, a second answer would be bogus
                answered = cycle is not None and cycle.response_started
                conn.refuse(None if answered else cls.answers.body_too_slow)


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a refused request."""


def guarded_protocol(limits: ConnectionLimits) -> type[EdgeHttpProtocol]:
    """The protocol class for one server: its limits, idle connections and sweep of its own."""
    return type("GuardedEdgeHttpProtocol", (EdgeHttpProtocol,), {
        "limits": limits, "answers": _Answers(limits), "idle": {}, "sweeping": set(),
    })
