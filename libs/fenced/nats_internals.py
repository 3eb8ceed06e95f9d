"""nats-py's private members: the only module that touches them (see libs/fenced/__init__.py).

Two hot-path savings need them, and each has a public-API twin in its caller:

- `inline_delivery` (for `libs.bus.subscribe_inline`): nats-py hands every message to a
  per-subscription task through the subscription's `_pending_queue`, one more event-loop turn
  per message; a stand-in queue handles it in the reader's own step instead.
- `Writer` (for `libs.bus_write.DirectPublisher`): a prebuilt protocol command written straight
  to the socket (`_transport`, when nothing of nats-py's `_pending` is waiting and the client's
  `_status` is connected), or appended to nats-py's own outgoing queue (`_send_command`,
  `_flush_pending`) as its `publish` would, with its errors.

Written against nats-py 2.16 (`TESTED`); tests/integration/test_bus_write.py and
test_bus_inline.py check the behaviour against the installed release in both modes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from nats import errors as nats_errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

log = logging.getLogger("switchyard.bus")

_BACKED_UP = 64 * 1024  # bytes the socket has not taken yet: above it, nats-py's flow control decides


class _Inline(asyncio.Queue[Msg]):
    """Stands in for a subscription's pending queue: what nats-py's reader puts there is handled
    at once, in the reader's own step, instead of by the subscription's task one loop turn later."""

    def __init__(self, sub: Subscription, handler: Callable[[Msg], None]) -> None:
        super().__init__()
        self._sub = sub
        self._handler = handler

    def put_nowait(self, item: Msg) -> None:
        self._sub._pending_size -= len(item.data)  # nothing stays pending
        try:
            self._handler(item)
        except Exception:  # never into nats-py's read loop
            log.exception("handling a message of %s failed", self._sub.subject)


def inline_delivery(sub: Subscription, handler: Callable[[Msg], None]) -> None:
    """Have nats-py's reader call `handler` for each message of `sub` (subscribed without a
    callback: nats-py started no task for it, only an unused iterator)."""
    sub._pending_queue = _Inline(sub, handler)


class Writer:
    """Writes prebuilt protocol commands on one connection: straight to the socket when that
    keeps the order of the connection's messages, else behind nats-py's own queue."""

    __slots__ = ("_nc", "_wrote_this_step")

    def __init__(self, nc: NATS) -> None:
        self._nc = nc
        self._wrote_this_step = False

    def write_now(self, command: bytes) -> bool:
        """Write `command` to the socket now if it is the first write of this event-loop step and
        nothing of nats-py's is still waiting to go out (so nothing is overtaken), the connection
        is up and its socket not backed up; False if it must be queued instead. Later writes of a
        busy step go out together in one write by nats-py's flusher."""
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

    async def queue(self, command: bytes) -> None:
        """Behind nats-py's queued commands, as its `publish` does (errors and buffering across a
        reconnect included)."""
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
