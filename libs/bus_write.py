"""Publishing on the hot path: NATS protocol commands built once and written to the socket at once.

nats-py's `publish` validates the subject with a regex, builds a header block one key at a time
(a `str.translate` per value), queues the command and wakes its flusher task, which writes it a
loop turn later through a stream writer's `drain`. For the one or two messages of every request
(the edge's job; a worker's reply and its ack) that is more than the rest of the publish costs.

`DirectPublisher.publish` writes a prebuilt command straight to the connection's transport when
it is the first of its event-loop step and nothing of nats-py's own is waiting to go out, so the
order of messages on the connection stays the order in which the code published them. Otherwise
the command joins nats-py's queue like any publish (with nats-py's errors and its buffering across
a reconnect): the later commands of a busy step then go out together in one write by nats-py's
flusher, which under load is worth more than the flusher's hop (one socket write per message
made the gateway 20 % dearer at c=64).

Subjects and header values go on the wire as given: they must be built by proto/ (whose tokens
are checked) or checked by the caller (`proto.is_reply_subject` for a reply subject read off the
bus). Relies on nats-py's private `_pending`, `_status`, `_transport` and `_max_payload` (pinned in
requirements.lock; tests/integration/test_bus_write.py checks it against the installed one).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from typing import Any

from nats import errors as nats_errors
from nats.aio.client import Client as NATS

_CRLF = b"\r\n"
_HEADER_LINE = b"NATS/1.0\r\n"
_BACKED_UP = 64 * 1024  # bytes the socket has not taken yet: above it, nats-py's flow control decides


_NAME = re.compile(r"[!-9;-~]+")  # printable ASCII but `:`
_checked_names: set[str] = set()  # header names are a few constants: each is checked once


def header_block(headers: Mapping[str, str]) -> bytes:
    """NATS message headers (`NATS/1.0`, `Name: value` lines, a blank line)."""
    text = ""
    for name, value in headers.items():
        if name not in _checked_names:
            if not _NAME.fullmatch(name):
                raise ValueError(f"not a valid NATS header name: {name!r}")
            _checked_names.add(name)
        text += f"{name}: {value}\r\n"
    if text.count("\n") != len(headers) or text.count("\r") != len(headers):
        raise ValueError("a NATS header value holds a line break")
    return b"".join((_HEADER_LINE, text.encode(), _CRLF))


def pub_command(subject: str, payload: bytes, reply: str = "", headers: bytes = b"") -> bytes:
    """A PUB (or, with a header block, HPUB) command carrying `payload`."""
    if headers:
        size = len(headers)
        return b"".join((f"HPUB {subject} {reply} {size} {size + len(payload)}\r\n".encode(), headers, payload, _CRLF))
    return b"".join((f"PUB {subject} {reply} {len(payload)}\r\n".encode(), payload, _CRLF))


class DirectPublisher:
    """Writes prebuilt commands on one nats-py connection (see the module's docstring)."""

    __slots__ = ("_nc", "_wrote_this_step")

    def __init__(self, nc: NATS) -> None:
        self._nc = nc
        self._wrote_this_step = False

    def command(self, subject: str, payload: bytes, reply: str = "", headers: bytes = b"") -> bytes:
        """`pub_command`, refused (as nats-py does) above the server's max payload, which would
        otherwise make the server close the connection."""
        if len(payload) + len(headers) > self._nc._max_payload:
            raise nats_errors.MaxPayloadError
        return pub_command(subject, payload, reply, headers)

    async def publish(self, command: bytes) -> None:
        """Send one or more concatenated commands; raises nats-py's errors when it cannot."""
        if not self.write_now(command):
            await self._queue(command)

    def write_now(self, command: bytes) -> bool:
        """Write at once if this is the step's first write and nothing else is waiting to go out;
        False if it must be queued instead."""
        nc = self._nc
        if self._wrote_this_step or nc._pending or nc._status != NATS.CONNECTED:
            return False
        writer = getattr(nc._transport, "_io_writer", None)
        if writer is None:  # a transport without a stream writer (websocket): nats-py's way
            return False
        transport: Any = writer.transport
        if transport.is_closing() or transport.get_write_buffer_size() > _BACKED_UP:
            return False
        transport.write(command)  # (nats-py's `stats` do not count these: nothing here reads them)
        self._wrote_this_step = True
        asyncio.get_running_loop().call_soon(self._next_step)
        return True

    def _next_step(self) -> None:
        self._wrote_this_step = False

    async def _queue(self, command: bytes) -> None:
        """Behind nats-py's queued commands, as its `publish` does (errors included)."""
        nc = self._nc
        if nc.is_closed:
            raise nats_errors.ConnectionClosedError
        if nc.is_draining_pubs:
            raise nats_errors.ConnectionDrainingError
        if not nc.is_connected and (
            nc._max_pending_size <= 0 or len(command) + nc._pending_data_size > nc._max_pending_size
        ):
            raise nats_errors.OutboundBufferLimitError
        await nc._send_command(command)
        if nc._flush_queue is not None and nc._flush_queue.empty():
            await nc._flush_pending()
