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
    """What `JobRoute.answer` learnt on the way, for the request's accounting: the metrics, the
    caller's limits and its usage record (ledger.py).

    A route sets `model`, `pool` and the reservation through `JobRoute.open_exchange`, and the
    tokens it delivered as it answers; `account` comes from the workers' `end` replies (the
    exchange). `end_reason` is set by a route that knows better than the status (`length`)."""

    __slots__ = (
        "account", "admission", "completion_tokens", "end_reason", "exchange", "headers", "model", "model_label",
        "pool", "prompt_tokens", "request_id", "reserve_output", "reserve_prompt", "route", "started_at",
        "tokens_estimated",
    )

    def __init__(self, request_id: str = "", route: str = "") -> None:
        self.request_id = request_id  # for the usage record
        self.route = route
        self.started_at = time.time()  # wall clock, unix seconds: the usage record's started_at
        self.model_label = "unknown"
        self.model = ""  # as the client asked for it
        self.pool = ""
        self.account: str | None = None  # the upstream account that answered (its name, never a secret)
        # what the request may cost, as far as the edge can tell beforehand: its prompt (an estimate
        # from the body's size) and the output it asks for at most (None: it sets no maximum)
        self.reserve_prompt = 0
        self.reserve_output: int | None = None
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.tokens_estimated = True  # False only when every job reported the upstream's own usage
        self.end_reason: str | None = None  # stop, length, client_gone, upstream_error, timeout
        self.admission: object | None = None  # what the limits reserved (ledger.py), settled at the end
        self.headers: list[tuple[bytes, bytes]] = []  # added to the response's head, whatever it is
        self.exchange: Exchange | None = None


_TIMEOUT_CODES = frozenset({"timeout", "upstream_timeout"})


def failure_reason(error: SwitchyardError) -> str:
    return "timeout" if error.code in _TIMEOUT_CODES else "upstream_error"


def end_reason(answering: Answering, status: int, error: SwitchyardError | None) -> str:
    """Why the request ended, for its usage record (the route's own word first)."""
    if status == 499:
        return "client_gone"
    if error is not None:
        return failure_reason(error)
    if answering.end_reason is not None:
        return answering.end_reason
    return "stop" if status < 400 else "upstream_error"


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

    async def open_exchange(
        self, scope: Scope, answering: Answering, *, streamed: bool, model: str, pool: str,
        reserve_prompt: int = 0, reserve_output: int | None = None,
    ) -> Exchange:
        """The request's exchange, once the caller's limits admit it (ledger.py): every route opens
        its exchange here, after validating its body and before publishing its first job."""
        answering.model, answering.pool = model, pool
        answering.reserve_prompt, answering.reserve_output = reserve_prompt, reserve_output
        await self.state.ledger.admit(scope, answering)
        exchange = answering.exchange = self.state.dispatcher.exchange(scope[REQUEST_ID_KEY], streamed=streamed)
        return exchange

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = self.state
        started = time.perf_counter()
        status = 500
        answering = Answering(scope[REQUEST_ID_KEY], self.route_name)
        failure: SwitchyardError | None = None
        state.metrics.in_flight.inc()

        async def send_with_headers(message: Message) -> None:
            # the limits' headers go on every answer, errors included: added once admission set them
            if message["type"] == "http.response.start" and answering.headers:
                message = {**message, "headers": [*message.get("headers", []), *answering.headers]}
            await send(message)

        try:
            status = await self.answer(scope, receive, send_with_headers, answering)
        except SwitchyardError as err:
            status = err.status
            failure = err
            state.metrics.errors.labels(code=err.code).inc()
            await send_error(send_with_headers, err)
        except Exception:
            # a bug of ours: still an OpenAI-shaped 500 (if nothing was sent yet), and a log line to find it by
            log.exception("request failed unexpectedly", extra={"request_id": scope[REQUEST_ID_KEY]})
            status = 500
            state.metrics.errors.labels(code="internal_error").inc()
            with contextlib.suppress(Exception):
                await send_error(send_with_headers, SwitchyardError(
                    f"The gateway failed unexpectedly; request id {scope[REQUEST_ID_KEY]} is in its logs."
                ))
        finally:
            state.metrics.in_flight.dec()
            self._count_request(answering.model_label, status)
            self._latency.observe(time.perf_counter() - started)
            if answering.exchange is not None:  # admitted: a job was (about to be) published
                if answering.account is None:
                    answering.account = answering.exchange.account
                answering.end_reason = end_reason(answering, status, failure)
                state.ledger.finish(scope, answering, status)


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
