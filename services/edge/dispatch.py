"""The edge's bus side: publish jobs, route every reply to its request, enforce the time limits.

One wildcard subscription (`sy.v1.reply.<edge>.*`) per edge process carries the replies of all
requests; the last subject token picks the request's `Exchange`. JetStream's acknowledgement of
each published job arrives the same way (`sy.v1.puback.<edge>.*`) instead of being awaited: the
request goes straight on to wait for its replies, and a refusal or a missing acknowledgement
still ends it with 503 `bus_unavailable`.

Once JetStream has confirmed a job of a pool, the pool's next jobs within `confirm_window` are
published without asking (no reply subject, so JetStream stays silent) and with a `Nats-Msg-Id`.
One of these not started within the window is published again, the same id now asking for the
acknowledgement: JetStream's de-duplication answers with the stored copy's sequence, or stores
it now if the first was lost; a refusal is a 503 as before. A busy pool so pays one confirmation
per window instead of one per job, and a lost job is still noticed within a window.

An exchange holds one or more jobs (n > 1 fanned out) and a bounded buffer: a client that reads
slower than the worker writes overflows it and gets a typed error instead of an unbounded queue
or a silent truncation. Replies for a job no exchange waits for get one `orphaned` cancel.

Once a job's first token is out there is no retry, so its worker's death must end it fast: the
job's deadline is then also its worker's presumed death (`liveness.py`, from the announcements
workers send anyway; nothing more per token).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

import proto
from libs import wire
from libs.background import BackgroundTasks
from libs.bus import subscribe_inline
from libs.bus_write import DirectPublisher
from libs.errors import (
    AccountsBusy,
    BusError,
    BusUnavailable,
    ClientTooSlow,
    DeadlineExceeded,
    NoCapacity,
    ReplyGap,
    SwitchyardError,
    UpstreamTimeout,
    WorkerLost,
)
from libs.ids import new_id
from libs.timeouts import Timeouts
from proto.messages import Job
from services.edge.bus_gate import BusGate
from services.edge.liveness import WorkerLiveness
from services.edge.metrics import EdgeMetrics
from services.edge.replies import (
    Alive,
    Deltas,
    Described,
    Emitted,
    Failed,
    Finished,
    Fragments,
    JobReplies,
    Produced,
    Stale,
    Started,
)
from services.edge.routing import RoutingTable

log = logging.getLogger("switchyard.edge.dispatch")

_DISCONNECTED = ("", b"")  # sentinel put in an exchange's inbox when the client goes away
_ABORTED = ("", b"aborted")  # sentinel put in an exchange's inbox when the edge ends it (`Exchange.abort`)
_MSG_ID = "Nats-Msg-Id"  # JetStream de-duplicates by it (the stream's duplicate window)
_CANCELLED_MEMORY = 4096  # job ids cancelled lately: late replies of theirs need no second cancel


class ClientGone(Exception):
    """The client disconnected; the request ends quietly."""


@dataclass(frozen=True)
class KeepAlive:
    """Nothing arrived for a keep-alive interval (streaming responses send an SSE comment)."""


@dataclass
class _JobState:
    job_id: str  # also the reply subject's last token
    replies: JobReplies
    created: float  # monotonic
    created_at: float  # unix seconds, comparable with a worker's taken_at
    pool: str = ""
    stream_seq: int | None = None
    # kept while the job is blind (published without asking for JetStream's acknowledgement):
    # it is published again, under the same Nats-Msg-Id, to confirm or to remove it
    payload: bytes = b""
    confirm_asked: float = 0.0  # monotonic: when the acknowledgement was asked for
    started: float | None = None
    holder: str = ""  # the worker_id of the attempt followed (from its `start`)
    attempt: int = 0  # that attempt's number (JetStream's delivery count)
    last_message: float = 0.0
    streaming: bool = False
    done: bool = False
    body_ref: str | None = None
    refused: SwitchyardError | None = None  # JetStream did not store the job
    fragments: Fragments | None = None  # parts of a reply payload too large for one message

    @property
    def blind(self) -> bool:
        return bool(self.payload)


class _Inbox:
    """One request's replies in arrival order: a bounded FIFO read by the request's task alone.

    asyncio.Queue does this with a dozen Python calls per item (waiter lists for many readers
    and writers, task counting); one reader and writers that never wait need three."""

    __slots__ = ("_items", "_limit", "_waiter")

    def __init__(self, limit: int) -> None:
        self._items: deque[tuple[str, bytes]] = deque()
        self._limit = limit
        self._waiter: asyncio.Future[bool] | None = None

    def put(self, item: tuple[str, bytes]) -> bool:
        """Add an item; False (and nothing added) when full."""
        if len(self._items) >= self._limit:
            return False
        self._items.append(item)
        _settle(self._waiter, True)
        return True

    def force(self, item: tuple[str, bytes]) -> None:
        """Add an item even when full: the reader takes it after what is already there."""
        self._items.append(item)
        _settle(self._waiter, True)

    def take(self) -> tuple[str, bytes] | None:
        return self._items.popleft() if self._items else None

    async def wait(self, until: float) -> bool:
        """True once there is an item to take; False when the loop's clock reached `until` first.

        A timer that settles the waiter, rather than `asyncio.timeout`, which takes four Python
        calls and a task lookup to set up and tear down on every wait."""
        if self._items:
            return True
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_at(until, _settle, waiter, False)
        try:
            return await waiter
        finally:
            timer.cancel()
            self._waiter = None


def _settle(waiter: asyncio.Future[bool] | None, arrived: bool) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(arrived)


@dataclass
class Exchange:
    """One client request's jobs and the replies they send back."""

    dispatcher: Dispatcher
    request_id: str
    buffer: int
    deadline: float  # monotonic: the whole request ends by then
    # A stream's jobs must send a first delta within the first-token limit. A non-stream request
    # may be answered whole (a worker calls its upstream non-streamed), which takes as long as
    # the generation: the total limit bounds it, and heartbeats show the worker is alive.
    streamed: bool = True
    inbox: _Inbox = field(init=False)
    jobs: dict[str, _JobState] = field(default_factory=dict)
    overflowed: bool = False
    disconnected: bool = False
    aborted: SwitchyardError | None = None  # the edge ended the request (it shuts down)
    owner: asyncio.Task[Any] | None = None  # the request's task, stopped when its buffer overflows
    account: str | None = None  # the upstream account that answered, from a job's `end` (usage records)

    def __post_init__(self) -> None:
        self.inbox = _Inbox(self.buffer)

    def feed(self, token: str, payload: bytes) -> None:
        if self.overflowed:
            return
        if not self.inbox.put((token, payload)):
            # The request's task may be blocked in `send` on a client that stopped reading, where
            # it would never look at the queue again: interrupt it (see `take_overflow`).
            self.overflowed = True
            if self.owner is not None:
                self.owner.cancel()

    def take_overflow(self) -> bool:
        """After a CancelledError: True if it was our overflow interrupt (now absorbed)."""
        if not self.overflowed or self.owner is None or self.owner is not asyncio.current_task():
            return False
        self.owner.uncancel()
        return True

    def refuse(self, token: str, error: SwitchyardError) -> None:
        """JetStream did not store this job: the request fails with `error` (see `events`)."""
        job = self.jobs.get(token)
        if job is None or job.done:
            return
        job.refused = error
        self.inbox.put((token, b""))

    def client_gone(self) -> None:
        self.disconnected = True
        self.inbox.put(_DISCONNECTED)

    def abort(self, error: SwitchyardError) -> None:
        """End the request with `error` (see `events`); close() then cancels its jobs."""
        if self.aborted is None:
            self.aborted = error
            self.inbox.force(_ABORTED)

    def interrupt(self) -> None:
        """Stop the request's task wherever it waits (in `send`, on a client that stopped reading)
        as a buffer overflow does: the route ends it as `client_too_slow`, sending nothing more."""
        if self.owner is not None and not self.owner.done() and not self.overflowed:
            self.overflowed = True
            self.owner.cancel()

    # ---- the event loop of one request -----------------------------------------------------

    async def events(
        self, keepalive: float | None = None,
    ) -> AsyncIterator[Described | Deltas | Produced | Emitted | Finished | KeepAlive]:
        """The jobs' outputs (deltas, results, native events) and per-job Finished events in arrival
        order; raises SwitchyardError on failure."""
        t = self.dispatcher.timeouts
        loop = asyncio.get_running_loop()
        last_yield = loop.time()
        inbox = self.inbox
        if self.dispatcher.closing is not None:  # jobs submitted while Dispatcher.abort_all ran
            raise self.dispatcher.closing
        while not all(j.done for j in self.jobs.values()):
            item = inbox.take()
            if item is None:
                wake = self._next_deadline(t)  # monotonic, the loop's clock too
                if keepalive is not None:
                    wake = min(wake, last_yield + keepalive)
                if not await inbox.wait(wake):
                    now = loop.time()
                    await self._expire(now, t)
                    if keepalive is not None and now >= last_yield + keepalive:
                        last_yield = now
                        yield KeepAlive()
                    continue
                item = inbox.take()
                assert item is not None  # one reader: what woke it is still there
            token, payload = item
            if self.overflowed:
                raise ClientTooSlow("the client read the stream too slowly; its buffer overflowed")
            if not token:
                if payload and self.aborted is not None:  # _ABORTED
                    raise self.aborted
                raise ClientGone()
            job = self.jobs.get(token)
            if job is None:
                continue
            if job.refused is not None:
                job.done = True
                raise job.refused
            try:
                # a worker sends what it has at one moment as one message: a list of replies
                messages = wire.decode_batch(payload)
                if messages[0].get("type") == "fragment":  # one part of a payload above the max payload
                    if job.fragments is None:
                        job.fragments = Fragments()
                    whole = job.fragments.add(messages[0])  # ReplyGap if a part is missing
                    job.last_message = loop.time()
                    if whole is None:
                        continue
                    messages = wire.decode_batch(whole)
            except ValueError:  # the job stays open, so close() cancels the worker
                raise ReplyGap("a reply from the worker could not be read") from None
            now = loop.time()
            job.last_message = now
            for message in messages:
                outcome = job.replies.accept(message)
                if isinstance(outcome, Deltas):
                    if not job.streaming:
                        job.streaming = True
                        self.dispatcher.metrics.ttft.observe(now - job.created)
                    last_yield = now
                    yield outcome
                elif isinstance(outcome, Started):
                    if job.started is None:
                        self.dispatcher.metrics.queue_wait.observe(max(0.0, outcome.taken_at - job.created_at))
                    job.started = now
                    job.holder = outcome.worker_id
                    job.attempt = outcome.attempt
                    if outcome.attempt > 1:
                        self.dispatcher.metrics.retries.inc()
                elif isinstance(outcome, Finished):
                    job.done = True
                    if outcome.account:
                        self.account = outcome.account
                    yield outcome
                elif isinstance(outcome, Described):
                    yield outcome
                elif isinstance(outcome, Produced | Emitted):
                    if not job.streaming:
                        job.streaming = True
                        self.dispatcher.metrics.ttft.observe(now - job.created)
                    last_yield = now
                    yield outcome
                elif isinstance(outcome, Failed):
                    # a lost reply means the worker is still streaming: leave the job for close() to cancel
                    job.done = not isinstance(outcome.error, ReplyGap)
                    raise outcome.error
                elif isinstance(outcome, Stale):
                    await self.dispatcher.cancel(job.job_id, "stale_attempt", attempt=outcome.attempt)
                elif isinstance(outcome, Alive):
                    pass

    def _job_deadline(self, job: _JobState, t: Timeouts) -> float:
        if job.started is None:
            if job.blind:  # unconfirmed: confirmed once the window has passed (see `_expire`)
                return job.created + min(t.confirm_window, t.queue_wait)
            if job.stream_seq is None:  # not yet confirmed stored
                return min(job.confirm_asked + t.publish_ack, job.created + t.queue_wait)
            return job.created + t.queue_wait
        if not job.streaming:
            # A dead worker's job comes back after ack_wait, then waits for a free worker again.
            silent_for = t.ack_wait + t.queue_wait + t.worker_silence
            waiting = job.last_message + silent_for
            if self.streamed:
                waiting = min(waiting, job.started + t.first_token + t.worker_silence + t.ack_wait)
            if job.attempt >= proto.MAX_DELIVER:
                # the last delivery: JetStream brings no other, so its worker's death ends the job
                waiting = min(waiting, self.dispatcher.liveness.presumed_dead_at(job.holder, job.last_message))
            return waiting
        # After the first token there is no retry: its worker's death ends it. (Before it, JetStream
        # redelivers a dead worker's job after ack_wait, and another worker may still answer.)
        silent = job.last_message + min(t.worker_silence + t.idle, t.worker_silence * 2)
        return min(silent, self.dispatcher.liveness.presumed_dead_at(job.holder, job.last_message))

    def _next_deadline(self, t: Timeouts) -> float:
        pending = [self._job_deadline(j, t) for j in self.jobs.values() if not j.done]
        return min([self.deadline, *pending])

    async def _expire(self, now: float, t: Timeouts) -> None:
        """A limit passed: raise its error, or first confirm jobs published without confirmation."""
        if now >= self.deadline:
            raise DeadlineExceeded("the request's total time limit was reached")
        for job in self.jobs.values():
            if job.blind and job.started is None and not job.done and now >= self._job_deadline(job, t):
                await self.dispatcher.confirm(job, self.request_id)
        if not self.dispatcher.gate.open:  # announcements cannot arrive: no worker counts as unheard
            self.dispatcher.liveness.pardon(now)
        for job in self.jobs.values():
            if job.done or now < self._job_deadline(job, t):
                continue
            if job.started is None and job.stream_seq is None and now >= job.confirm_asked + t.publish_ack:
                # Lost with a broken connection, most likely. Should the job have been stored
                # after all, the worker that takes it is stopped by its first reply, which
                # reaches no exchange here and draws an `orphaned` cancel.
                raise BusUnavailable("the bus did not confirm it had queued the request", retry_after=1)
            if job.started is None:
                self.dispatcher.metrics.no_capacity.inc()
                accounts = self.dispatcher.routing.accounts(job.pool)
                if accounts is not None:  # a pool of web accounts: none freed in time
                    raise AccountsBusy.after_queue_wait(t.queue_wait, accounts["retry_at"], time.time())
                raise NoCapacity.after_queue_wait(t.queue_wait)
            if self.streamed and not job.streaming and job.last_message - job.started > t.first_token:
                raise UpstreamTimeout("the upstream sent no token within the first-token limit")
            raise WorkerLost("the worker handling this request stopped responding")

    async def close(self) -> None:
        """Forget the jobs; cancel the ones still running (disconnects, errors, timeouts)."""
        for job in self.jobs.values():  # first stop routing replies here (and overflow interrupts)
            self.dispatcher.forget(job.job_id)
        for job in self.jobs.values():
            if not job.done:
                reason = "client_disconnected" if self.disconnected else "edge_error"
                unconfirmed = job.blind and job.started is None
                # A worker may take an unconfirmed job after this cancel went out: its first reply
                # then draws an `orphaned` cancel, so the job is not remembered as cancelled.
                await self.dispatcher.cancel(job.job_id, reason, remember=not unconfirmed)
                if job.stream_seq is not None and job.started is None:
                    self.dispatcher.discard_queued(job.stream_seq)
                elif unconfirmed:
                    self.dispatcher.discard_unconfirmed(job, self.request_id)
            if job.body_ref:
                self.dispatcher.discard_body(job.body_ref)


class Dispatcher:
    def __init__(
        self,
        nc: NATS,
        routing: RoutingTable,
        timeouts: Timeouts,
        metrics: EdgeMetrics,
        *,
        edge_id: str,
        inline_limit: int,
        reply_buffer: int,
    ) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self._publisher = DirectPublisher(nc)
        self.routing = routing
        self.timeouts = timeouts
        self.metrics = metrics
        self.edge_id = proto.check_token(edge_id)
        # the job's envelope must fit beside the body in one bus message, whatever INLINE_BODY_BYTES says
        self.inline_limit = min(inline_limit, nc.max_payload // 2)
        self.reply_buffer = reply_buffer
        self._exchanges: dict[str, Exchange] = {}
        self._prefix_len = len(proto.reply_subject(edge_id, ""))
        self._puback_prefix_len = len(proto.puback_subject(edge_id, ""))
        self._subs: list[Any] = []
        self._store: Any = None
        self._background = BackgroundTasks()
        self._cancelled: dict[str, None] = {}  # insertion-ordered: the oldest is forgotten first
        self._confirmed_until: dict[str, float] = {}  # pool -> monotonic end of its confirm window
        self.liveness = WorkerLiveness()
        self.gate = BusGate(nc)
        self.closing: SwitchyardError | None = None  # set by abort_all: the edge shuts down

    async def start(self) -> None:
        # every reply is routed to its request as nats-py reads it: no queue, no task hop
        self._subs.append(await subscribe_inline(self.nc, proto.reply_wildcard(self.edge_id), self._on_reply))
        self._subs.append(await self.nc.subscribe(proto.puback_wildcard(self.edge_id), cb=self._on_puback))
        self._subs.append(await self.nc.subscribe(proto.ANNOUNCE_SUBJECT, cb=self._on_announce))
        await self.nc.publish(proto.DISCOVER_SUBJECT, wire.encode({"type": "discover", "edge_id": self.edge_id}))

    async def stop(self) -> None:
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        await self._background.wait()

    def _on_reply(self, msg: Msg) -> None:
        token = msg.subject[self._prefix_len:]
        exchange = self._exchanges.get(token)
        if exchange is not None:
            exchange.feed(token, msg.data)
        elif token not in self._cancelled:
            # A worker streams a job no request here waits for (its PubAck was lost and the
            # request gave up, say): stop it once, so it stops spending upstream quota.
            self._remember_cancel(token)  # now: its next replies may be read before the cancel goes out
            self._background.start(self.cancel(token, "orphaned", remember=False))

    async def restore(self, recreate: Callable[[], Awaitable[None]]) -> None:
        """After a reconnect: hold jobs back until `recreate` has made the work queue again (the
        server may have lost it), then confirm every job again, as the server may have lost what
        it stored; and give workers time to be heard from again."""
        self._confirmed_until.clear()
        await self.gate.restore(recreate)
        self.liveness.pardon(time.monotonic())

    async def _on_puback(self, msg: Msg) -> None:
        token = msg.subject[self._puback_prefix_len:]
        exchange = self._exchanges.get(token)
        job = exchange.jobs.get(token) if exchange is not None else None
        if exchange is None or job is None:
            return
        if not msg.data:  # a NATS status: 503 means no stream listens on the pool's subject
            status = (msg.headers or {}).get("Status", "?")
            self._refuse(exchange, job, BusUnavailable(
                f"no work queue took the request (NATS status {status}); the bus may be restarting", retry_after=1
            ))
            return
        try:
            ack = orjson.loads(msg.data)
            error = ack.get("error")
            seq = None if error else int(ack["seq"])
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
            error, seq = {"description": "an unreadable acknowledgement"}, None
        if seq is None:
            description = str(error.get("description", "refused") if isinstance(error, dict) else error)[:200]
            self._refuse(exchange, job, self._refusal(job, description))
            return
        job.stream_seq = seq
        if self.timeouts.confirm_window > 0:
            self._confirmed_until[job.pool] = time.monotonic() + self.timeouts.confirm_window

    def _refusal(self, job: _JobState, description: str) -> SwitchyardError:
        if "maximum messages per subject" not in description:
            return BusUnavailable(f"the bus refused the request: {description}", retry_after=1)
        # the pool's queue is full (MAX_QUEUED_PER_POOL): said at once, not after a queue wait
        self.metrics.no_capacity.inc()
        wait = self.timeouts.queue_wait
        accounts = self.routing.accounts(job.pool)
        if accounts is not None:
            return AccountsBusy.after_queue_wait(wait, accounts["retry_at"], time.time())
        return NoCapacity("this model's queue is full (MAX_QUEUED_PER_POOL); retry later", retry_after=max(1.0, wait))

    def _refuse(self, exchange: Exchange, job: _JobState, error: SwitchyardError) -> None:
        self._confirmed_until.pop(job.pool, None)  # refused: ask again for every job of the pool
        exchange.refuse(job.job_id, error)

    async def _on_announce(self, msg: Msg) -> None:
        try:
            announce = wire.decode(msg.data)
            self.routing.observe(announce)  # type: ignore[arg-type]
            self.liveness.observe(str(announce["worker_id"]), float(announce["ttl"]), time.monotonic())
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed announcement")

    def abort_all(self, error: SwitchyardError) -> int:
        """End every open request with `error` now, and every one submitted from now on: the edge
        shuts down. Each request's task sends the error by the contract (a status before the first
        token, in-band after it) and cancels its jobs. Returns how many requests were ended."""
        self.closing = error
        exchanges = self._open_exchanges()
        for exchange in exchanges:
            exchange.abort(error)
        return len(exchanges)

    def interrupt_all(self) -> int:
        """Stop the tasks of requests still open after `abort_all` (blocked sending to clients that
        stopped reading): uvicorn would cancel them a moment later, a traceback for each."""
        exchanges = self._open_exchanges()
        for exchange in exchanges:
            exchange.interrupt()
        return len(exchanges)

    def _open_exchanges(self) -> list[Exchange]:
        """Each open request once (one with n jobs is in `_exchanges` n times)."""
        return list({id(e): e for e in self._exchanges.values()}.values())

    def forget(self, token: str) -> None:
        self._exchanges.pop(token, None)

    def exchange(self, request_id: str, *, streamed: bool = True) -> Exchange:
        exchange = Exchange(self, request_id, self.reply_buffer, time.monotonic() + self.timeouts.total, streamed)
        exchange.owner = asyncio.current_task()
        return exchange

    async def submit(
        self, exchange: Exchange, *, kind: str, model: str, pool: str, body: dict[str, Any], index_offset: int = 0,
        access_token: str | None = None, cookies: str | None = None,
    ) -> None:
        """Publish one job of this exchange to its pool's work queue. `access_token`, `cookies`: the
        caller's own upstream credential (go-chatgpt-api's routes; SydneyQt's routes and the Cookie
        header for pools with the `cookies` feature), carried in the job, never logged."""
        t = self.timeouts
        if self.closing is not None:
            raise self.closing
        if not self.gate.open:  # disconnected: 503 at once; restoring after a reconnect: wait for it
            await self.gate.admit(t.publish_ack)
        token = new_id()
        now = time.time()
        job: Job = {
            "type": "job", "job_id": token, "request_id": exchange.request_id, "kind": kind,  # type: ignore[typeddict-item]
            "model": model, "pool": pool, "reply": proto.reply_subject(self.edge_id, token),
            "index_offset": index_offset, "created": now, "start_by": now + t.queue_wait,
            "deadline": now + t.total,
            "timeouts": {"first_token": t.first_token, "idle": t.idle, "heartbeat": t.heartbeat},
        }
        if access_token:
            job["access_token"] = access_token
        if cookies:
            job["cookies"] = cookies
        created = time.monotonic()
        state = _JobState(job_id=token, replies=JobReplies(token), created=created, created_at=now, pool=pool,
                          confirm_asked=created)
        encoded_body = orjson.dumps(body)
        if len(encoded_body) > self.inline_limit:
            await self._store_body(token, encoded_body)
            job["body_ref"] = {"store": proto.BODY_STORE, "name": token, "size": len(encoded_body)}
            state.body_ref = token
            payload = wire.encode(job)
        else:
            # splice the already-encoded body instead of encoding it twice
            payload = wire.encode(job)[:-1] + b',"body":' + encoded_body + b"}"
        exchange.jobs[token] = state
        self._exchanges[token] = exchange
        blind = created < self._confirmed_until.get(pool, 0.0)
        if blind:
            state.payload = payload
        try:
            await self._publish_job(state, payload, exchange.request_id, ask=not blind)
        except Exception as exc:
            state.done = True
            raise BusUnavailable(
                f"could not queue the request ({type(exc).__name__}); the bus may be restarting", retry_after=1
            ) from exc

    @staticmethod
    def _job_headers(job: _JobState, request_id: str) -> dict[str, str]:
        headers = {wire.REQUEST_ID_HEADER: request_id}
        if job.blind:  # JetStream de-duplicates its copies (to confirm or remove it) by this id
            headers[_MSG_ID] = job.job_id
        return headers

    async def _publish_job(self, job: _JobState, payload: bytes, request_id: str, *, ask: bool) -> None:
        """`ask`: JetStream's acknowledgement comes back to `_on_puback` (nothing waits for it
        here). Without, JetStream stays silent, and the job is blind until confirmed."""
        reply = proto.puback_subject(self.edge_id, job.job_id) if ask else ""
        await self._publisher.publish(proto.job_subject(job.pool), payload, reply, self._job_headers(job, request_id))

    async def confirm(self, job: _JobState, request_id: str) -> None:
        """Publish a blind job again, the same Nats-Msg-Id asking for the acknowledgement now."""
        job.confirm_asked = time.monotonic()
        with contextlib.suppress(Exception):  # else no acknowledgement: the publish-ack limit gives a 503
            await self._publish_job(job, job.payload, request_id, ask=True)
        job.payload = b""  # confirmed from here on (or refused)

    async def _store_body(self, name: str, data: bytes) -> None:
        if self._store is None:
            self._store = await self.js.object_store(proto.BODY_STORE)
        try:
            await self._store.put(name, data)
        except Exception as exc:
            raise BusError(f"could not store the request body: {type(exc).__name__}") from exc

    async def cancel(self, job_id: str, reason: str, attempt: int | None = None, *, remember: bool = True) -> None:
        message: dict[str, Any] = {"type": "cancel", "job_id": job_id, "reason": reason}
        if remember:
            self._remember_cancel(job_id)
        if attempt is not None:
            message["attempt"] = attempt
        self.metrics.cancellations.labels(reason=reason).inc()
        with contextlib.suppress(Exception):
            await self.nc.publish(proto.CANCEL_SUBJECT, wire.encode(message))

    def _remember_cancel(self, job_id: str) -> None:
        self._cancelled[job_id] = None
        if len(self._cancelled) > _CANCELLED_MEMORY:
            del self._cancelled[next(iter(self._cancelled))]

    def discard_queued(self, stream_seq: int) -> None:
        """Remove a job nobody started from the work queue, so no worker wastes upstream quota on it."""
        async def delete() -> None:
            with contextlib.suppress(Exception):
                await self.js.delete_msg(proto.STREAM_JOBS, stream_seq)
        self._background.start(delete())

    def discard_unconfirmed(self, job: _JobState, request_id: str) -> None:
        """Remove a job published without confirmation: publishing it again under its Nats-Msg-Id
        gives the stored copy's sequence (or stores it, if it was lost), which is then deleted."""
        payload, headers = job.payload, self._job_headers(job, request_id)

        async def delete() -> None:
            with contextlib.suppress(Exception):
                ack = await self.nc.request(
                    proto.job_subject(job.pool), payload, timeout=self.timeouts.publish_ack, headers=headers
                )
                await self.js.delete_msg(proto.STREAM_JOBS, int(orjson.loads(ack.data)["seq"]))
        self._background.start(delete())

    def discard_body(self, name: str) -> None:
        async def delete() -> None:
            with contextlib.suppress(Exception):
                await self._store.delete(name)
        self._background.start(delete())
