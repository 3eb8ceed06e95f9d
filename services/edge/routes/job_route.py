"""What every route that answers with worker jobs shares: accounting, errors, the disconnect watch.

A route reads and validates its body, routes the model to a pool and answers from the jobs'
replies (`answer`); this base counts the request (route, bounded model label, status), times it,
and turns any failure into an OpenAI-shaped error: a `SwitchyardError` with its own status, anything
else a logged 500 naming the request id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from libs.errors import ClientTooSlow, SwitchyardError
from services.edge.asgi_io import send_error
from services.edge.dispatch import ClientGone, Exchange
from services.edge.middleware import REQUEST_ID_KEY
from services.edge.state import EdgeState

log = logging.getLogger("switchyard.edge.generation")

# Disconnects are watched for only once a request has run this long: most non-stream answers are
# done sooner, and skip the watcher task. A disconnect before then is seen as soon as it starts
# (uvicorn keeps the state), well inside the 200 ms in which the upstream call must be cancelled.
_WATCH_AFTER = 0.02


class Answering:
    """What `JobRoute.answer` learnt on the way, for the request's accounting."""

    __slots__ = ("model_label",)

    def __init__(self) -> None:
        self.model_label = "unknown"


class JobRoute:
    route_name: str

    def __init__(self, state: EdgeState, route_name: str) -> None:
        self.state = state
        self.route_name = route_name
        self._latency = state.metrics.latency.labels(route=route_name)
        self._requests: dict[tuple[str, str], Any] = {}  # (model label, status) → counter child

    def _count_request(self, model_label: str, status: int) -> None:
        key = (model_label, str(status))
        child = self._requests.get(key)
        if child is None:  # bounded: model labels are configured or live models, or "other"
            child = self._requests[key] = self.state.metrics.requests.labels(
                route=self.route_name, model=model_label, status=key[1]
            )
        child.inc()

    async def answer(self, scope: Scope, receive: Receive, send: Send, answering: Answering) -> int:
        """Answer the request; the HTTP status sent. Errors may be raised before anything was sent."""
        raise NotImplementedError

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = self.state
        started = time.perf_counter()
        status = 500
        answering = Answering()
        state.metrics.in_flight.inc()
        try:
            status = await self.answer(scope, receive, send, answering)
        except SwitchyardError as err:
            status = err.status
            state.metrics.errors.labels(code=err.code).inc()
            await send_error(send, err)
        except Exception:
            # a bug of ours: still an OpenAI-shaped 500 (if nothing was sent yet), and a log line to find it by
            log.exception("request failed unexpectedly", extra={"request_id": scope[REQUEST_ID_KEY]})
            status = 500
            state.metrics.errors.labels(code="internal_error").inc()
            with contextlib.suppress(Exception):
                await send_error(send, SwitchyardError(
                    f"The gateway failed unexpectedly; request id {scope[REQUEST_ID_KEY]} is in its logs."
                ))
        finally:
            state.metrics.in_flight.dec()
            self._count_request(answering.model_label, status)
            self._latency.observe(time.perf_counter() - started)


async def _watch_disconnect(receive: Receive, exchange: Exchange) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            exchange.client_gone()
            return


class DisconnectWatch:
    """Tells `exchange` when the client goes away: from `_WATCH_AFTER` on, by a task reading `receive`."""

    __slots__ = ("_exchange", "_later", "_receive", "_watcher")

    def __init__(self, receive: Receive, exchange: Exchange) -> None:
        self._receive = receive
        self._exchange = exchange
        self._watcher: asyncio.Task[None] | None = None
        self._later = asyncio.get_running_loop().call_later(_WATCH_AFTER, self._watch)

    def _watch(self) -> None:
        self._watcher = asyncio.ensure_future(_watch_disconnect(self._receive, self._exchange))

    async def stop(self) -> None:
        self._later.cancel()
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher


async def answer_exchange(
    state: EdgeState, send: Send, exchange: Exchange, watch: DisconnectWatch,
    respond: Callable[[Send], Awaitable[int]],
) -> int:
    """Run `respond` (it publishes the jobs and answers through the `send` it is given) with the
    endings every job route shares: a client gone is 499 with nothing sent; a client too slow to
    read (its buffer overflowed) is `client_too_slow`, said only if the head has not gone out (then
    the socket is blocked and nothing more is sent); the watch and the exchange are closed always."""
    started = False

    async def tracked_send(message: Message) -> None:
        nonlocal started
        started = started or message["type"] == "http.response.start"
        await send(message)

    try:
        return await respond(tracked_send)
    except ClientGone:
        return 499  # nginx's "client closed request"; nothing can be sent
    except asyncio.CancelledError:
        if not exchange.take_overflow():
            raise
        err = ClientTooSlow("the client read the stream too slowly; its buffer overflowed")
        state.metrics.errors.labels(code=err.code).inc()
        if not started:
            await send_error(send, err)
        return err.status
    finally:
        await watch.stop()
        await exchange.close()
