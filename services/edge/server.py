"""The edge's uvicorn server: a graceful SIGTERM, and an end by the contract for what outlives it.

On SIGTERM, /readyz turns 503 at once while the edge keeps serving for `readiness_grace` (load
balancers and Kubernetes endpoints stop routing to it meanwhile); then uvicorn stops accepting and
lets open requests finish within its `timeout_graceful_shutdown` (the drain time). A second signal
exits at once.

Requests still open shortly before the drain time runs out are ended by the edge itself, with
503 `shutting_down`: a stream that has sent tokens gets its `length` chunk, the in-band error
event and `[DONE]`; any other request a JSON error; and their jobs are cancelled. Left to uvicorn,
they would be cancelled mid-transfer, cut with no ending at all, and a traceback logged for each.
A request still blocked after that (sending to a client that stopped reading) is stopped the way
a buffer overflow stops it (`client_too_slow`, nothing more sent) just before uvicorn would.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import types

import uvicorn

from libs.errors import ShuttingDown
from services.edge.bus_gate import RETRY_AFTER
from services.edge.state import EdgeState

log = logging.getLogger("switchyard.edge")

# Open requests are ended this long before uvicorn would cancel them: time for their tasks to send
# their last bytes and cancel their jobs, and for uvicorn (which polls every 0.1 s) to see their
# connections close. A quarter of the drain time, at most half a second.
_END_MARGIN = 0.5
# uvicorn's shutdown sleeps this long before its drain time starts counting
_UVICORN_SETTLE = 0.1


def end_margin(drain: float) -> float:
    return min(_END_MARGIN, drain / 4)


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, state: EdgeState) -> None:
        super().__init__(config)
        self.edge_state = state
        self.serving: asyncio.Task[None] | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self.serving = asyncio.current_task()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: types.FrameType | None) -> None:
        if not self.started and self.serving is not None:
            # still starting (connecting to NATS, perhaps for a while): nothing to drain, stop now
            asyncio.get_event_loop().call_soon_threadsafe(self.serving.cancel)
            return
        if self.edge_state.draining:
            super().handle_exit(sig, frame)
            return
        self.edge_state.draining = True
        grace = self.edge_state.settings.timeouts.readiness_grace
        asyncio.get_event_loop().call_later(grace, super().handle_exit, sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        drain = self.config.timeout_graceful_shutdown
        timers = []
        if drain is not None:
            loop = asyncio.get_running_loop()
            deadline = _UVICORN_SETTLE + drain  # when uvicorn cancels what is still running
            margin = end_margin(drain)
            timers = [loop.call_later(max(0.0, deadline - margin), self._end_open_requests),
                      loop.call_later(max(0.0, deadline - margin / 2), self._interrupt_blocked_requests)]
        try:
            await super().shutdown(sockets)
        finally:
            for timer in timers:
                timer.cancel()

    def _end_open_requests(self) -> None:
        dispatcher = getattr(self.edge_state, "dispatcher", None)
        if dispatcher is None:
            return
        ended = dispatcher.abort_all(ShuttingDown(
            "the gateway shut down before the answer was complete; retry the request", retry_after=RETRY_AFTER
        ))
        if ended:
            log.warning("drain time ran out: ended %d open request(s)", ended)

    def _interrupt_blocked_requests(self) -> None:
        dispatcher = getattr(self.edge_state, "dispatcher", None)
        if dispatcher is None:
            return
        stopped = dispatcher.interrupt_all()
        if stopped:
            log.warning("drain time ran out: cut %d request(s) whose clients stopped reading", stopped)
