"""Publishing on the hot path: NATS protocol commands built once and written to the socket at once.

nats-py's `publish` validates the subject with a regex, builds a header block one key at a time
(a `str.translate` per value), queues the command and wakes its flusher task, which writes it a
loop turn later through a stream writer's `drain`. For the one or two messages of every request
(the edge's job; a worker's reply and its ack) that is more than the rest of the publish costs.

`DirectPublisher` writes a prebuilt command straight to the connection's socket when it is the
first of its event-loop step and nothing of nats-py's own is waiting to go out, so the order of
messages on the connection stays the order in which the code published them. Otherwise the
command joins nats-py's queue like any publish (with nats-py's errors and its buffering across a
reconnect): the later commands of a busy step then go out together in one write by nats-py's
flusher, which under load is worth more than the flusher's hop (one socket write per message
made the gateway 20 % dearer at c=64). Both need nats-py's internals (libs/fenced/nats_internals.py);
where those are off (`libs.fenced.private_apis_enabled`), it publishes through nats-py's `publish`,
whose flusher also sends what one step queued in one write.

Subjects and header values go on the wire as given: they must be built by proto/ (whose tokens
are checked) or checked by the caller (`proto.is_reply_subject` for a reply subject read off the
bus).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from nats import errors as nats_errors
from nats.aio.client import Client as NATS

from libs import fenced
from libs.fenced import nats_internals

_CRLF = b"\r\n"
_HEADER_LINE = b"NATS/1.0\r\n"

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


class Outgoing(NamedTuple):
    """One message of a `DirectPublisher.publish_many`, as parts (the public path needs them)."""

    subject: str
    payload: bytes
    reply: str = ""


class DirectPublisher:
    """Publishes on one nats-py connection (see the module's docstring)."""

    __slots__ = ("_nc", "_writer")

    def __init__(self, nc: NATS) -> None:
        self._nc = nc
        self._writer = nats_internals.Writer(nc) if fenced.private_apis_enabled() else None

    @property
    def direct(self) -> bool:
        """Whether commands are written by the fast path (else by nats-py's `publish`)."""
        return self._writer is not None

    def message(self, subject: str, payload: bytes, reply: str = "") -> Outgoing:
        """A message for `publish_many`, refused (as nats-py does) above the server's max payload,
        which would otherwise make the server close the connection."""
        if len(payload) > self._nc.max_payload:
            raise nats_errors.MaxPayloadError
        return Outgoing(subject, payload, reply)

    async def publish(
        self, subject: str, payload: bytes, reply: str = "", headers: Mapping[str, str] | None = None
    ) -> None:
        """One message; raises nats-py's errors when it cannot (MaxPayloadError before anything
        is sent, ValueError for a header that could break the protocol)."""
        block = header_block(headers) if headers else b""
        if len(payload) + len(block) > self._nc.max_payload:
            raise nats_errors.MaxPayloadError
        writer = self._writer
        if writer is None:
            await self._nc.publish(subject, payload, reply, dict(headers) if headers else None)
            return
        command = pub_command(subject, payload, reply, block)
        if not writer.write_now(command):
            await writer.queue(command)

    async def publish_many(self, messages: Sequence[Outgoing]) -> None:
        """Messages (each from `message`, or known to be small) in order, in one write when it can."""
        writer = self._writer
        if writer is None:
            for m in messages:  # queued by nats-py in this step: its flusher writes them together
                await self._nc.publish(m.subject, m.payload, m.reply)
            return
        command = b"".join(itertools.starmap(pub_command, messages))  # no comprehension frame per call
        if not writer.write_now(command):
            await writer.queue(command)

    def write_now(self, command: bytes) -> bool:
        """Write at once if this is the step's first write and nothing else is waiting to go out;
        False if it must be queued instead (always, without the fast path)."""
        return self._writer is not None and self._writer.write_now(command)
