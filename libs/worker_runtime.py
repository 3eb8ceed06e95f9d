"""The job lifecycle every worker shares: take jobs, run them on a backend, send replies, obey cancels.

What a job produces (deltas, a unary result, native events) is the backend's side of the contract,
libs/worker_backend.py. This runtime owns the rest of proto/, the same for every worker kind:

- replies: what the job has to say at one moment (start, its outputs, end) goes out as one
  message, a JSON array when there is more than one reply (the reply subject allows batches);
- capacity: `JobPuller` never holds more jobs than `capacity`, whatever their kind;
- ack and retry: a job stays unacked (with in-progress acks) until its first output (a delta, a
  result or an event) is published; a failure before that whose error is `retryable` is nak'ed so
  another replica retries it; after it, or for any other error, the failure goes to the edge as
  an `error` reply;
- expiry: a job first delivered after its `start_by` is dropped (the edge has given up on a
  worker by then); a redelivered one runs until its `deadline`, since an earlier attempt started
  it and the edge waits for it. Every dropped job is answered with an `error` reply, so no client
  waits for a job nobody runs;
- liveness: `heartbeat` replies while the upstream is silent; first-token, idle and total limits
  (a backend awaiting a whole answer, every unary job, has the total limit only);
- cancellation: `sy.v1.cancel` aborts the job's task, which closes the upstream call;
- discovery: `announce` (models, the kinds each serves, capacity) every interval and on `discover`;
- drain: on stop, no more pulls, in-flight jobs finish under a deadline, the rest are cut;
- logs: every line about a job carries its `request_id` and `job_id` (as record extras): a retry,
  a cancel, a drop, a drain cut and a final failure are logged once each; a job that goes well is
  not logged at all (the hot path).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, cast

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import MaxPayloadError
from nats.js import JetStreamContext

import proto
from libs import wire
from libs.background import BackgroundTasks
from libs.backoff import full_jitter
from libs.bus import delivery_count, ensure_pool_consumer
from libs.bus_write import DirectPublisher, Outgoing
from libs.errors import (
    BusError,
    DeadlineExceeded,
    NoCapacity,
    SwitchyardError,
    UpstreamError,
    UpstreamTimeout,
    WorkerLost,
)
from libs.pull import JobPuller
from libs.timeouts import Timeouts
from libs.worker_backend import (
    Admission,
    Backend,
    Event,
    Meta,
    Result,
    StreamEnd,
    WholeAnswer,
    end_reply,
    meta_reply,
    output_replies,
)
from libs.worker_metrics import WorkerMetrics
from proto.messages import Announce, Job

log = logging.getLogger("switchyard.worker")


_NUMBER = (int, float)  # by exact type: a bool is not a time


def read_job(job: dict[str, Any]) -> Job:
    """The job, once the fields this runtime reads are there with their types; ValueError if not.

    A few exact-type checks rather than the whole schema: this runs for every job. The edge writes
    every job to proto/; one that is not is another version's or a stranger's, and gets a clear error.
    """
    try:
        timeouts = job["timeouts"]
        ok = (
            proto.is_reply_subject(job["reply"])  # it goes on the wire as it is
            and type(job["job_id"]) is str and job["job_id"] != ""
            and type(job["start_by"]) in _NUMBER and type(job["deadline"]) in _NUMBER
            and type(job["index_offset"]) is int
            and type(timeouts) is dict and type(timeouts["first_token"]) in _NUMBER
            and type(timeouts["idle"]) in _NUMBER and type(timeouts["heartbeat"]) in _NUMBER
            and (type(job.get("body")) is dict or type(job.get("body_ref")) is dict)
        )
    except (KeyError, TypeError):
        ok = False
    if not ok:
        raise ValueError("the job lacks a field the worker needs, or has one of the wrong type")
    return cast(Job, job)


@dataclass
class _Running:
    job: Job
    msg: Msg
    attempt: int
    task: asyncio.Task[None] | None = None
    seq: int = 0
    acked: bool = False
    started: float = field(default_factory=time.monotonic)
    last_sent: float = field(default_factory=time.monotonic)
    last_output: float | None = None  # monotonic: the last delta, result or event staged
    last_progress: float = field(default_factory=time.monotonic)  # last in-progress ack
    taken_at: float = field(default_factory=time.time)
    start_due: float = 0.0  # monotonic: `start` goes out with the first reply, or by then
    start_sent: bool = False
    stop_reason: SwitchyardError | None = None  # set before we cancel the task ourselves
    silent_stop: bool = False  # the edge asked: no reply is wanted
    whole: bool = False  # the backend awaits a whole answer (WholeAnswer): no first-token/idle limit
    outbox: list[dict[str, Any]] = field(default_factory=list)  # staged replies, sent by _flush


@dataclass
class WorkerConfig:
    worker_id: str
    pool: str
    capacity: int
    timeouts: Timeouts
    max_deliver: int = proto.MAX_DELIVER
    announce_interval: float = 2.0


class WorkerRuntime:
    def __init__(self, nc: NATS, backend: Backend, config: WorkerConfig, metrics: WorkerMetrics) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self._publisher = DirectPublisher(nc)
        self.backend = backend
        self.config = config
        self.metrics = metrics
        self.draining = False
        self.pulling = False  # its consumer exists and it asks for jobs: what readiness means
        self._jobs: dict[str, _Running] = {}
        self._puller: JobPuller | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._subs: list[Any] = []
        self._body_store: Any = None
        self._idle = asyncio.Event()  # set whenever no job is running (drain waits on it)
        self._acks = BackgroundTasks()  # terms of jobs dropped on arrival

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        t = self.config.timeouts
        durable = await ensure_pool_consumer(
            self.js, self.config.pool, ack_wait=t.ack_wait, max_deliver=self.config.max_deliver,
            wait_for_stream=max(30.0, t.queue_wait),
        )
        self._subs.append(await self.nc.subscribe(proto.CANCEL_SUBJECT, cb=self._on_cancel))
        self._subs.append(await self.nc.subscribe(proto.DISCOVER_SUBJECT, cb=self._on_discover))
        admission: Admission | None = getattr(self.backend, "admission", None)
        self._puller = JobPuller(
            self.nc, proto.STREAM_JOBS, durable, self.config.capacity, self._on_job,
            expires=max(0.25, min(5.0, t.ack_wait / 2)),
            admission=admission.available if admission is not None else None,
        )
        if admission is not None:
            admission.listen(self._puller.wake)
        await self._puller.start()
        self.pulling = True
        self.metrics.capacity.set(self.config.capacity)
        self._tasks.append(asyncio.create_task(self._announce_loop(), name="announce"))
        self._tasks.append(asyncio.create_task(self._watchdog_loop(), name="watchdog"))
        await self.announce()
        log.info("worker %s serving pool %s: %s", self.config.worker_id, self.config.pool, list(self.backend.serves))

    async def restore(self) -> None:
        """After a reconnect: the server may have restarted and lost our consumer (memory storage)
        and our pull requests; bring the consumer back (once the edge has recreated the stream)
        and ask for jobs afresh."""
        t = self.config.timeouts
        await ensure_pool_consumer(
            self.js, self.config.pool, ack_wait=t.ack_wait, max_deliver=self.config.max_deliver,
            wait_for_stream=max(30.0, t.queue_wait),
        )
        if self._puller is not None:
            self._puller.reset()
        reconnected = getattr(self.backend, "reconnected", None)  # a backend's own bus state (KV watches)
        if reconnected is not None:
            with contextlib.suppress(Exception):
                await reconnected()
        with contextlib.suppress(Exception):
            await self.announce()

    async def drain(self) -> None:
        """Stop taking work, let in-flight jobs finish within the drain deadline, cut the rest.

        Jobs our still-open pull requests deliver after this began are run too (see libs/pull.py):
        handing them back would send them to those same requests again."""
        self.draining = True
        loop = asyncio.get_running_loop()
        until = loop.time() + self.config.timeouts.drain
        if self._puller is not None:
            self._puller.stop_asking()
        with contextlib.suppress(Exception):
            await self.announce()
        if self._puller is not None:
            await self._puller.stop()
        admission: Admission | None = getattr(self.backend, "admission", None)
        if admission is not None:  # accounts held for jobs that will not come: others may use them
            with contextlib.suppress(Exception):
                await admission.stop()
        if self._jobs:
            self._idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), max(0.0, until - loop.time()))
        cut = list(self._jobs.values())
        for running in cut:
            running.stop_reason = WorkerLost("the worker shut down before the answer was complete")
            if running.task is not None:
                running.task.cancel()
        if cut:
            log.warning("drain deadline passed: cut %d in-flight job(s)", len(cut))
            await asyncio.gather(*(r.task for r in cut if r.task is not None), return_exceptions=True)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        with contextlib.suppress(Exception):
            await self.nc.flush(timeout=2)

    @property
    def in_flight(self) -> int:
        return len(self._jobs)

    # ---- discovery -------------------------------------------------------------------------

    def announcement(self) -> Announce:
        announce = self._announcement()
        accounts_state = getattr(self.backend, "accounts_state", None)
        if accounts_state is not None:
            announce["accounts"] = accounts_state()
        return announce

    def _announcement(self) -> Announce:
        return {
            "type": "announce",
            "worker_id": self.config.worker_id,
            "pool": self.config.pool,
            "models": list(self.backend.serves),
            "serves": {model: list(kinds) for model, kinds in self.backend.serves.items()},
            "capacity": self.config.capacity,
            "in_flight": self.in_flight,
            "draining": self.draining,
            "features": list(self.backend.features),
            "ttl": self.config.announce_interval * 3,
        }

    async def announce(self) -> None:
        await self.nc.publish(proto.ANNOUNCE_SUBJECT, wire.encode(self.announcement()))

    async def _announce_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.announce_interval)
            with contextlib.suppress(Exception):
                await self.announce()

    async def _on_discover(self, msg: Msg) -> None:
        with contextlib.suppress(Exception):
            await self.announce()

    # ---- jobs ------------------------------------------------------------------------------

    def _on_job(self, msg: Msg) -> None:
        try:
            raw = wire.decode(msg.data)
            attempt = delivery_count(msg.reply)
        except Exception:
            log.error("dropped a job message that could not be read")
            self._acks.start(msg.term())
            self._release()
            return
        try:
            job = read_job(raw)
        except ValueError as exc:
            self._drop_malformed(msg, raw, attempt, exc)
            return
        now = time.time()
        if now > job["deadline"]:
            self._drop(msg, job, attempt, DeadlineExceeded("the request's total time limit was reached"))
            return
        if attempt == 1 and now > job["start_by"]:
            # No worker took it within the queue wait, and none has started it: the edge gives up
            # at `start_by` too. A redelivery is different: an earlier attempt started it (or
            # was about to), the edge follows it still, and this is its retry.
            self._drop(msg, job, attempt, NoCapacity.after_queue_wait(self.config.timeouts.queue_wait))
            return
        running = _Running(job=job, msg=msg, attempt=attempt)
        # `start` tells the edge a worker has the job. Sent with the first delta it costs no
        # packet or wake-up of its own; a slow upstream gets it sent by the watchdog at the latest
        # after a heartbeat, or half the time left before the edge's queue wait runs out.
        time_left = job["start_by"] - running.taken_at
        running.start_due = running.started + min(self.config.timeouts.heartbeat, max(0.0, time_left / 2 - 0.1))
        self._jobs[job["job_id"]] = running
        self.metrics.in_flight.set(len(self._jobs))
        if attempt > 1:
            self.metrics.retries.inc()
        running.task = asyncio.create_task(self._run(running), name=f"job-{job['job_id']}")

    def _drop(self, msg: Msg, job: Job, attempt: int, err: SwitchyardError, outcome: str = "expired") -> None:
        """Do not run the job: tell the edge why (`start` then `error`, the only error from an
        attempt the edge accepts before it started), then remove it from the queue."""
        running = _Running(job=job, msg=msg, attempt=attempt)
        log.warning("dropped the job unstarted: %s: %s", err.code, err.message, extra=self._log_extra(running))
        self.metrics.count_job(outcome)
        self._acks.start(self._answer_and_term(running, err))
        self._release()

    def _drop_malformed(self, msg: Msg, raw: dict[str, Any], attempt: int, exc: ValueError) -> None:
        reply = raw.get("reply")
        if not isinstance(reply, str) or not proto.is_reply_subject(reply):  # the only place an error can go
            log.error("dropped a job message with no reply subject: %s", exc)
            self._acks.start(msg.term())
            self._release()
            return
        # the reply subject's last token is the job id the edge waits on
        job_id = raw["job_id"] if isinstance(raw.get("job_id"), str) and raw["job_id"] else reply.rsplit(".", 1)[1]
        request_id = raw.get("request_id") if isinstance(raw.get("request_id"), str) else None
        job = cast(Job, {"job_id": job_id, "request_id": request_id, "reply": reply})
        self._drop(msg, job, attempt, BusError(f"the worker could not read the job: {exc}"), "malformed")

    async def _answer_and_term(self, running: _Running, err: SwitchyardError) -> None:
        await self._send_error(running, err)
        with contextlib.suppress(Exception):
            await running.msg.term()

    def _log_extra(self, running: _Running) -> dict[str, Any]:
        """The fields of a log line about a job (built only when one is logged)."""
        job = running.job
        return {"request_id": job.get("request_id"), "job_id": job.get("job_id"), "attempt": running.attempt,
                "worker_id": self.config.worker_id}

    def _release(self) -> None:
        if not self._jobs:
            self._idle.set()
        if self._puller is not None:
            self._puller.release()

    def _stage(self, running: _Running, message: dict[str, Any]) -> None:
        """Number a reply and queue it for the next `_flush`, after the deferred `start`."""
        self._stage_start(running)
        self._number(running, message)

    def _stage_start(self, running: _Running) -> None:
        if not running.start_sent:
            running.start_sent = True
            self._number(running, {"type": "start", "worker_id": self.config.worker_id, "taken_at": running.taken_at})

    def _number(self, running: _Running, message: dict[str, Any]) -> None:
        message["job_id"] = running.job["job_id"]
        message["attempt"] = running.attempt
        message["seq"] = running.seq
        running.seq += 1
        running.outbox.append(message)

    async def _flush(self, running: _Running) -> None:
        """Send the staged replies as one message: one NATS message for the edge to handle. Once
        it carries the first delta, the job's ack goes out in the same write: from here on there
        is no retry, since tokens reached the edge."""
        out, running.outbox = running.outbox, []
        messages: list[Outgoing] = []
        if out:
            running.last_sent = time.monotonic()
            reply = running.job["reply"]
            payload = wire.encode(out[0] if len(out) == 1 else out)
            try:
                messages = [self._publisher.message(reply, payload)]
            except MaxPayloadError:  # a large whole answer, say: in parts the bus can carry
                parts = wire.fragments(payload, self.nc.max_payload, running.job["job_id"], running.attempt,
                                       out[0]["seq"])
                messages = [self._publisher.message(reply, part) for part in parts]
        if running.last_output is not None and not running.acked:
            running.acked = True
            messages.append(Outgoing(running.msg.reply, b"+ACK"))
        if messages:
            await self._publisher.publish_many(messages)

    async def _send(self, running: _Running, message: dict[str, Any]) -> None:
        self._stage(running, message)
        await self._flush(running)

    async def _ensure_started(self, running: _Running) -> None:
        """`start` on its own: the upstream is slow to send a first token (see `start_due`)."""
        self._stage_start(running)
        await self._flush(running)

    def _stage_output(self, running: _Running, item: list[dict[str, Any]] | Result | Event) -> None:
        for reply in output_replies(item, running.job["index_offset"]):
            self._stage(running, reply)
        running.last_output = time.monotonic()

    async def _run(self, running: _Running) -> None:
        job = running.job
        outcome = "ok"
        try:
            if time.monotonic() >= running.start_due:
                await self._ensure_started(running)
            body = await self._load_body(job)
            end = StreamEnd()
            async for item in self.backend.stream(job, body):
                if type(item) is list:  # chat deltas: nearly every item
                    if item:
                        self._stage_output(running, item)
                        await self._flush(running)
                elif isinstance(item, StreamEnd):
                    end = item  # its choices go out below, in one message with the end
                elif isinstance(item, WholeAnswer):
                    running.whole = True
                elif isinstance(item, Meta):
                    self._stage(running, meta_reply(item))  # travels with the first output
                elif isinstance(item, Result | Event):
                    self._stage_output(running, item)
                    await self._flush(running)
            if end.choices:
                self._stage_output(running, end.choices)
            self._stage(running, end_reply(end))
            await self._flush(running)
        except asyncio.CancelledError:
            outcome = await self._on_stopped(running)
        except SwitchyardError as err:
            outcome = await self._on_failed(running, err)
        except Exception as exc:
            log.exception("the worker failed on the job", extra=self._log_extra(running))
            outcome = await self._on_failed(running, UpstreamError(f"worker failure: {type(exc).__name__}"))
        finally:
            if self._jobs.get(job["job_id"]) is running:  # a redelivery to us may have replaced it
                del self._jobs[job["job_id"]]
            self.metrics.in_flight.set(len(self._jobs))
            self.metrics.count_job(outcome)
            if not running.acked:
                with contextlib.suppress(Exception):
                    await running.msg.term()  # finished or failed for good: never redeliver
            self._release()

    async def _on_stopped(self, running: _Running) -> str:
        if running.silent_stop:
            return "cancelled"
        err = running.stop_reason or WorkerLost("the job was interrupted")
        if isinstance(err, WorkerLost) and not running.acked and running.attempt < self.config.max_deliver:
            # shutting down before the first token: another replica takes it over at once (on its
            # last delivery JetStream would not redeliver it: the edge gets the error instead)
            running.acked = True
            log.warning("cut before its first token (%s): handing the job back to another worker",
                        "draining" if self.draining else err.message, extra=self._log_extra(running))
            with contextlib.suppress(Exception):
                await running.msg.nak()
            return "handed_back"
        await self._fail(running, err)
        return "timeout" if isinstance(err, UpstreamTimeout | DeadlineExceeded) else "cut"

    def retry_delay(self, attempt: int) -> float:
        """Backoff before another replica's try: a small share of ack_wait, so it stays well inside
        the edge's wait for a first worker (and scales with the other limits)."""
        ack_wait = self.config.timeouts.ack_wait
        return full_jitter(attempt, base=ack_wait / 50, cap=ack_wait / 5)

    async def _on_failed(self, running: _Running, err: SwitchyardError) -> str:
        self.metrics.count_upstream_error(err)
        # The error's own `retryable` decides: the same flag the edge and clients read.
        if not running.acked and err.retryable and running.attempt < self.config.max_deliver:
            running.acked = True  # nak is the answer to this delivery
            log.warning("attempt %d failed: %s: %s; handing the job back for another try",
                        running.attempt, err.code, err.message, extra=self._log_extra(running))
            with contextlib.suppress(Exception):
                # JetStream redelivers after the delay: a burst of jobs that failed together (an
                # upstream down for all of them) comes back spread out, not in one wave
                await running.msg.nak(delay=self.retry_delay(running.attempt))
            return "retried"
        await self._fail(running, err)
        return "error"

    async def _fail(self, running: _Running, err: SwitchyardError) -> None:
        """The job's final failure: logged (the formatter redacts upstream text), sent to the edge."""
        log.warning("job failed: %s: %s", err.code, err.message, extra=self._log_extra(running))
        await self._send_error(running, err)

    async def _send_error(self, running: _Running, err: SwitchyardError) -> None:
        with contextlib.suppress(Exception):
            await self._send(running, {"type": "error", "error": err.to_wire()})

    async def _load_body(self, job: Job) -> dict[str, Any]:
        if "body" in job:
            return job["body"]
        ref = job["body_ref"]
        if self._body_store is None:
            self._body_store = await self.js.object_store(ref["store"])
        result = await self._body_store.get(ref["name"])
        return wire.decode(result.data or b"")

    async def _on_cancel(self, msg: Msg) -> None:
        try:
            cancel = wire.decode(msg.data)
        except ValueError:
            return
        running = self._jobs.get(str(cancel.get("job_id")))
        if running is None or running.task is None:
            return
        attempt = cancel.get("attempt")
        if attempt is not None and attempt != running.attempt:
            return
        log.info("cancelled by the edge (%s)", cancel.get("reason"), extra=self._log_extra(running))
        running.silent_stop = True
        running.task.cancel()
        self.metrics.cancellations.inc()

    # ---- liveness and limits -----------------------------------------------------------------

    async def _watchdog_loop(self) -> None:
        t = self.config.timeouts
        tick = max(0.01, min(t.heartbeat, t.ack_wait / 3, 1.0) / 2)
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            wall = time.time()
            for running in list(self._jobs.values()):
                await self._check(running, now, wall, t)

    async def _check(self, running: _Running, now: float, wall: float, t: Timeouts) -> None:
        reason: SwitchyardError | None = None
        if wall > running.job["deadline"]:
            reason = DeadlineExceeded("the request's total time limit was reached")
        elif running.whole:
            pass  # a whole answer takes as long as the generation: only the total limit bounds it
        elif running.last_output is None and now - running.started > running.job["timeouts"]["first_token"]:
            reason = UpstreamTimeout("the upstream sent no token within the first-token limit")
        elif running.last_output is not None and now - running.last_output > running.job["timeouts"]["idle"]:
            reason = UpstreamTimeout("the upstream went silent for longer than the idle limit")
        if reason is not None and running.task is not None and running.stop_reason is None:
            running.stop_reason = reason
            running.task.cancel()
            return
        with contextlib.suppress(Exception):
            if not running.acked and now - running.last_progress > t.ack_wait / 3:
                running.last_progress = now
                await running.msg.in_progress()  # still ours: do not redeliver
            if not running.start_sent:
                if now >= running.start_due:
                    await self._ensure_started(running)
            elif now - running.last_sent >= running.job["timeouts"]["heartbeat"]:
                await self._send(running, {"type": "heartbeat"})
