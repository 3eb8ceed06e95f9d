"""The worker contract, the same for every worker kind: cancel, drain, heartbeat, redelivery on
death before the first output, deadline, capacity, and the first output as the point of no return.

Each kind runs in real worker processes (tests/contract/fake_worker.py: the real process runtime,
libs/worker_main.run_worker, over tests/contract/fake_backend.py) on a pool of its own. The test
plays the edge: it publishes jobs to the pool's subject through JetStream, follows each job's
replies with the edge's own JobReplies, and sends `sy.v1.cancel`; the session wiretap checks every
message against proto/. What happened inside a worker (a task started, cancelled, finished; how
many ran at once) is read from the fake's events file.

A kind's workers are shared by its tests (class-scoped); the tests that end workers (drain, then
redelivery) come last and start the replicas they need.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

import proto
from libs import wire
from libs.bus import ensure_job_stream
from libs.devproc import Proc, free_port, spawn_python_service
from libs.errors import SwitchyardError
from libs.timeouts import Timeouts
from proto.messages import Job
from services.edge.replies import Deltas, Emitted, Failed, Finished, JobReplies, Outcome, Produced, Started
from tests.conftest import TIME_SCALE, service_env
from tests.contract.fake_backend import JOB_KIND, KINDS, STREAMING, model_of, word
from tests.wiretap import Wiretap

# The limits the fake workers run with (SY_TIME_SCALE = TIME_SCALE), as the edge would know them.
LIMITS = Timeouts.from_env({"SY_TIME_SCALE": str(TIME_SCALE)})
CAPACITY = 2  # WORKER_CAPACITY of every fake worker
DRAIN = 1.5  # seconds: the fake workers' drain deadline (SY_TIMEOUT_DRAIN, before the time scale)
HEARTBEAT = 0.25  # a job's own timeouts.heartbeat: unlike the workers' configured one, on purpose
CANCEL_WITHIN = 0.2  # the bound, wall clock, from publishing the cancel to the task's end
EDGE_ID = "contract"
OUTPUTS = 3  # a streaming fake's default number of outputs


def pool_name(kind: str) -> str:
    return f"contract-{kind}"


async def until(predicate: Callable[[], object], within: float, what: str) -> None:
    """Poll a condition that no message announces (a line in a file, a process's exit)."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within:.1f} s: {what}")
        await asyncio.sleep(0.01)


# ---- the edge's side: one job's replies ---------------------------------------------------------


@dataclass
class Answer:
    """Every reply of one job (all attempts), and what the edge's JobReplies made of them."""

    kind: str
    job_id: str
    follow: JobReplies
    arrived: list[tuple[float, dict[str, Any]]] = field(default_factory=list)  # (monotonic, reply)
    outcomes: list[tuple[float, Outcome]] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def feed(self, message: dict[str, Any]) -> None:
        now = time.monotonic()
        self.arrived.append((now, message))
        outcome = self.follow.accept(message)
        if outcome is None:
            return
        self.outcomes.append((now, outcome))
        if isinstance(outcome, Finished | Failed):
            self.done.set()

    async def wait(self, within: float) -> Answer:
        try:
            await asyncio.wait_for(self.done.wait(), within)
        except TimeoutError:
            raise AssertionError(f"job {self.job_id}: no end or error within {within:.1f} s; "
                                 f"replies: {[m for _, m in self.arrived]}") from None
        return self

    @property
    def error(self) -> SwitchyardError | None:
        return next((o.error for _, o in self.outcomes if isinstance(o, Failed)), None)

    @property
    def finished(self) -> bool:
        return any(isinstance(o, Finished) for _, o in self.outcomes)

    @property
    def starts(self) -> list[Started]:
        return [o for _, o in self.outcomes if isinstance(o, Started)]

    @property
    def said(self) -> str:
        """The answer as the client would get it: delta texts, event texts, or results."""
        parts: list[str] = []
        for _, outcome in self.outcomes:
            if isinstance(outcome, Deltas):
                parts.extend(str((c.get("delta") or {}).get("content") or "") for c in outcome.choices)
            elif isinstance(outcome, Emitted):
                parts.append(str(outcome.event["text"]))
            elif isinstance(outcome, Produced):
                parts.append(f"<result {sorted(outcome.body)}>")
        return "".join(parts)

    def first_output_at(self) -> float | None:
        return next((t for t, o in self.outcomes if isinstance(o, Deltas | Emitted | Produced)), None)


def expected_said(kind: str, outputs: int = OUTPUTS) -> str:
    """What one complete answer says, exactly once."""
    if kind in STREAMING:
        return "".join(word(i) for i in range(outputs))
    keys = {"embedding": ["data", "model", "object", "usage"], "image": ["created", "data"],
            "moderation": ["id", "model", "results"]}[kind]
    return f"<result {keys}>"


def assert_complete(answer: Answer, outputs: int = OUTPUTS) -> None:
    assert answer.error is None, f"job {answer.job_id} failed: {answer.error!r}"
    assert answer.finished, f"job {answer.job_id} did not end"
    assert answer.said == expected_said(answer.kind, outputs)


class Bus:
    """The test's edge connection: publishes jobs and cancels, routes replies to their Answer."""

    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self.answers: dict[str, Answer] = {}

    async def start(self) -> None:
        await self.nc.subscribe(proto.reply_wildcard(EDGE_ID), cb=self._on_reply)
        js = self.nc.jetstream()
        try:
            await js.stream_info(proto.STREAM_JOBS)
        except NotFoundError:  # no edge yet: create it as the edge does (services/edge/app.py)
            max_age = max(60.0, LIMITS.queue_wait * 4)
            await ensure_job_stream(js, max_age=max_age, duplicate_window=min(
                max_age, max(2.0, 2 * (LIMITS.confirm_window + LIMITS.publish_ack))))

    async def _on_reply(self, msg: Msg) -> None:
        answer = self.answers.get(msg.subject.rsplit(".", 1)[1])
        if answer is None:
            return
        for message in wire.decode_batch(msg.data):
            assert message["type"] != "fragment"  # the fakes' answers are small
            answer.feed(message)

    async def submit(
        self, kind: str, fake: dict[str, Any], *, heartbeat: float = LIMITS.heartbeat,
        first_token: float = LIMITS.first_token, start_by_in: float = 5.0, deadline_in: float = 20.0,
        account: str | None = None,
    ) -> Answer:
        """Publish a job as the edge would. The queue wait (start_by) is longer than the edge's
        default: jobs here may wait for a replica the test is still starting."""
        token = uuid.uuid4().hex[:20]
        now = time.time()
        body: dict[str, Any]
        if JOB_KIND[kind] == "chat":
            body = {"model": model_of(kind), "messages": [{"role": "user", "content": "hi"}], "stream": True}
        elif kind == "image":
            body = {"model": model_of(kind), "prompt": "a dot", "response_format": "b64_json"}
        else:
            body = {"model": model_of(kind), "input": "hi"}
        body["fake"] = fake
        job: Job = {
            "type": "job", "job_id": token, "request_id": f"contract-{token}", "kind": JOB_KIND[kind],
            "model": model_of(kind), "pool": pool_name(kind), "reply": proto.reply_subject(EDGE_ID, token),
            "index_offset": 0, "created": now, "start_by": now + start_by_in, "deadline": now + deadline_in,
            "timeouts": {"first_token": first_token, "idle": LIMITS.idle, "heartbeat": heartbeat},
            "body": body,
        }
        if account is not None:
            job["account"] = account
        answer = self.answers[token] = Answer(kind, token, JobReplies(token))
        await self.nc.jetstream().publish(proto.job_subject(pool_name(kind)), wire.encode(job),
                                          headers={wire.REQUEST_ID_HEADER: job["request_id"]})
        return answer

    async def cancel(self, job_id: str) -> float:
        """`sy.v1.cancel` for the job; the wall time it was published at."""
        sent = time.time()
        await self.nc.publish(proto.CANCEL_SUBJECT, wire.encode(
            {"type": "cancel", "job_id": job_id, "reason": "client_disconnected"}))
        await self.nc.flush()
        return sent


# ---- the workers' side: processes and what their fake upstream saw -------------------------------


@dataclass
class Pool:
    kind: str
    bus: Bus
    nats_url: str
    log_dir: Path
    events_file: Path
    alive: dict[str, Proc] = field(default_factory=dict)  # worker id -> its process
    started: int = 0

    @property
    def name(self) -> str:
        return pool_name(self.kind)

    def _spawn_one(self, worker_id: str) -> Proc:
        port = free_port()
        env = service_env(
            self.nats_url, PORT=str(port), WORKER_POOL=self.name, WORKER_CAPACITY=str(CAPACITY),
            WORKER_ID=worker_id, FAKE_KIND=self.kind, FAKE_EVENTS_FILE=str(self.events_file),
            SY_TIMEOUT_DRAIN=str(DRAIN / TIME_SCALE),
        )
        return spawn_python_service(worker_id, "tests.contract.fake_worker", env=env, log_dir=self.log_dir,
                                    health_url=f"http://127.0.0.1:{port}/readyz")

    async def spawn(self, n: int) -> list[str]:
        """Start n replicas at once (in threads: the bus keeps being read meanwhile)."""
        ids = [f"{self.name}-{self.started + i}" for i in range(n)]
        self.started += n
        procs = await asyncio.gather(*(asyncio.to_thread(self._spawn_one, w) for w in ids))
        self.alive.update(zip(ids, procs, strict=True))
        return ids

    async def ensure(self, n: int) -> None:
        if len(self.alive) < n:
            await self.spawn(n - len(self.alive))

    def events(self, job_id: str | None = None, event: str | None = None) -> list[dict[str, Any]]:
        if not self.events_file.exists():
            return []
        lines = [orjson.loads(line) for line in self.events_file.read_bytes().splitlines()]
        return [e for e in lines if (job_id is None or e["job_id"] == job_id)
                and (event is None or e["event"] == event)]

    async def wait_event(self, job_id: str, event: str, within: float, count: int = 1) -> list[dict[str, Any]]:
        await until(lambda: len(self.events(job_id, event)) >= count, within, f"{event} x{count} of {job_id}")
        return self.events(job_id, event)

    async def submit(self, fake: dict[str, Any], account: str | None = None, **timing: float) -> Answer:
        return await self.bus.submit(self.kind, fake, account=account, **timing)

    async def settled(self, within: float = 5.0) -> None:
        """Until the pool's consumer holds no job, waiting or unacked: from then on JetStream
        redelivers nothing (a nak'd job stays unacked until it is delivered again)."""
        js = self.bus.nc.jetstream()
        deadline = time.monotonic() + within
        while True:
            info = await js.consumer_info(proto.STREAM_JOBS, proto.consumer_name(self.name))
            if not info.num_ack_pending and not info.num_pending:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: jobs still queued or unacked after {within:.1f} s: {info}")
            await asyncio.sleep(0.02)

    def stop_all(self) -> None:
        for worker_id in list(self.alive):
            self.alive.pop(worker_id).stop(grace=DRAIN + 5)


@pytest_asyncio.fixture(scope="module")
async def bus(nats_server: Proc, wiretap: Wiretap) -> AsyncIterator[Bus]:
    client = await nats.connect(nats_server.url, name="contract-edge")
    bus = Bus(client)
    await bus.start()
    yield bus
    await client.drain()


class Pools:
    """Every kind's pool; the next kind's first replicas start while the current kind is tested
    (the tests mostly wait on timers), so the suite does not wait for them in turn."""

    def __init__(self, kinds: list[str], bus: Bus, nats_url: str, log_dir: Path) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.kinds = kinds
        self.pools = {kind: Pool(kind, bus, nats_url, log_dir, log_dir / f"{kind}.events.jsonl") for kind in kinds}
        self._first: dict[str, asyncio.Task[list[str]]] = {}

    def _prespawn(self, kind: str) -> asyncio.Task[list[str]]:
        if kind not in self._first:
            self._first[kind] = asyncio.create_task(self.pools[kind].spawn(2), name=f"spawn-{kind}")
        return self._first[kind]

    async def get(self, kind: str) -> Pool:
        await self._prespawn(kind)
        later = self.kinds[self.kinds.index(kind) + 1:]
        if later:
            self._prespawn(later[0])
        return self.pools[kind]

    async def close(self) -> None:
        await asyncio.gather(*self._first.values(), return_exceptions=True)
        for pool in self.pools.values():
            pool.stop_all()


@pytest_asyncio.fixture(scope="module")
async def pools(request: pytest.FixtureRequest, bus: Bus, nats_server: Proc, log_dir: Path) -> AsyncIterator[Pools]:
    # the kinds this session runs (`-k image` runs one), in the order pytest runs them
    selected = {item.callspec.params.get("pool") for item in request.session.items if hasattr(item, "callspec")}
    pools = Pools([k for k in KINDS if k in selected], bus, nats_server.url, log_dir / "contract")
    yield pools
    await pools.close()


@pytest_asyncio.fixture(scope="class", params=KINDS)
async def pool(request: pytest.FixtureRequest, pools: Pools, wiretap: Wiretap) -> AsyncIterator[Pool]:
    pool = await pools.get(request.param)
    yield pool
    pool.stop_all()
    ours = [v for v in wiretap.violations if pool.name in v or f".{EDGE_ID}." in v]
    assert not ours, "bus messages of the contract suite that break proto/:\n" + "\n".join(ours[:10])


def streaming_or_unary(kind: str, streaming: dict[str, Any], unary: dict[str, Any]) -> dict[str, Any]:
    return streaming if kind in STREAMING else unary


# ---- the contract ------------------------------------------------------------------------------


class TestWorkerContract:
    async def test_cancel_stops_the_upstream_task_within_200_ms_and_silences_the_job(self, pool: Pool) -> None:
        # a streaming job hangs after its first output (it was acked), a unary one before its result
        answer = await pool.submit(streaming_or_unary(pool.kind, {"hang_after": 1}, {"hang_after": 0}),
                                   heartbeat=HEARTBEAT)
        await pool.wait_event(answer.job_id, "started", within=5)
        if pool.kind in STREAMING:
            await until(lambda: answer.first_output_at() is not None, 5, "the first output")
        sent = await pool.bus.cancel(answer.job_id)
        (cancelled,) = await pool.wait_event(answer.job_id, "cancelled", within=2)
        latency = cancelled["wall"] - sent
        assert latency < CANCEL_WITHIN, f"the upstream task ended {latency * 1000:.0f} ms after the cancel"
        # no reply at all after it: not the error a cut job gets, nor a heartbeat (the worker
        # would send one each HEARTBEAT if it still ran the job); nothing announces an absence
        replies = len(answer.arrived)
        await asyncio.sleep(3 * HEARTBEAT)
        assert answer.arrived[replies:] == []
        assert not answer.done.is_set()
        await pool.settled()  # and it is never run again
        assert len(pool.events(answer.job_id, "started")) == 1

    async def test_a_job_for_an_account_reaches_the_backend_and_its_end_names_it(self, pool: Pool) -> None:
        # a follow-up in a web conversation must run on the account that holds it
        answer = await (await pool.submit({"outputs": 1}, account="acct-7")).wait(10)
        (finished,) = [o for _, o in answer.outcomes if isinstance(o, Finished)]
        assert finished.account == "acct-7"
        plain = await (await pool.submit({"outputs": 1})).wait(10)
        assert [o.account for _, o in plain.outcomes if isinstance(o, Finished)] == [None]

    async def test_heartbeats_at_the_jobs_cadence_until_a_slow_first_output(self, pool: Pool) -> None:
        slow = 1.6  # several heartbeat intervals
        answer = await (await pool.submit({"delay_first": slow}, heartbeat=HEARTBEAT)).wait(within=10)
        assert_complete(answer)
        first_output = answer.first_output_at()
        assert first_output is not None
        before = [(t, m["type"]) for t, m in answer.arrived if t < first_output]
        start_at = next(t for t, kind in before if kind == "start")
        beats = [t for t, kind in before if kind == "heartbeat"]
        # at the job's cadence: as many as fit between the start and the first output (the
        # workers' own heartbeat is twice as long), judged by count since arrival times jitter
        assert 3 <= len(beats) <= (first_output - start_at) / HEARTBEAT + 1, before
        # and never a silence the edge would take for a dead worker (3 heartbeats)
        gaps = [b - a for a, b in zip([start_at, *beats], [*beats, first_output], strict=True)]
        assert max(gaps) < 3 * HEARTBEAT, gaps

    async def test_a_job_past_its_deadline_gets_a_timeout_error_and_its_task_is_cancelled(self, pool: Pool) -> None:
        # the first-token limit is far: only the deadline can end it
        answer = await pool.submit({"hang_after": 0}, heartbeat=HEARTBEAT, first_token=30,
                                   start_by_in=0.4, deadline_in=0.7)
        deadline = time.time() + 0.7  # a hair later than the job's own
        await answer.wait(within=5)
        assert answer.error is not None and answer.error.code == "timeout"
        (cancelled,) = await pool.wait_event(answer.job_id, "cancelled", within=2)
        assert deadline - 0.05 < cancelled["wall"] < deadline + 0.5
        assert len(pool.events(answer.job_id, "started")) == 1

    async def test_a_worker_never_runs_more_jobs_than_its_capacity(self, pool: Pool, wiretap: Wiretap) -> None:
        await pool.ensure(2)
        workers = len(pool.alive)
        fake = streaming_or_unary(pool.kind, {"delay_first": 0.3, "outputs": 2, "gap": 0.2}, {"delay_first": 0.5})
        jobs = 2 * CAPACITY * workers - 1  # more than the pool runs at once: some wait in the queue
        answers = await asyncio.gather(*(pool.submit(fake) for _ in range(jobs)))
        for answer in answers:
            await answer.wait(within=10)
            assert_complete(answer, outputs=2)
        ids = {a.job_id for a in answers}
        started = [e for e in pool.events(event="started") if e["job_id"] in ids]
        finished = [e for e in pool.events(event="finished") if e["job_id"] in ids]
        assert len(started) == len(finished) == jobs
        by_worker: dict[str, int] = {}
        for event in started:
            by_worker[event["worker_id"]] = max(by_worker.get(event["worker_id"], 0), event["concurrent"])
        assert max(by_worker.values()) == CAPACITY, by_worker  # filled up to its capacity ...
        assert all(n <= CAPACITY for n in by_worker.values()), by_worker  # ... and never beyond
        # the rest waited in the queue, and ran once slots came free
        first_free = min(e["mono"] for e in finished)
        assert sum(e["mono"] >= first_free for e in started) >= jobs - CAPACITY * workers
        announced = {a["capacity"] for a in wiretap.find("switchyard.v1.announce", pool=pool.name)}
        assert announced == {CAPACITY}

    async def test_the_first_output_is_the_point_of_no_return(self, pool: Pool) -> None:
        after = await pool.submit({"fail": "upstream_error", "retryable": True, "fail_after": 1})
        before = await pool.submit({"tries": {"1": {"fail": "upstream_error", "retryable": True}}})
        final = await pool.submit({"fail": "upstream_bad_request", "retryable": False})
        for answer in (after, before, final):
            await answer.wait(within=10)
        # after the first output: the error goes to the client, after what it already got
        assert after.error is not None and after.error.code == "upstream_error"
        assert after.said == expected_said(pool.kind, 1)
        assert [s.attempt for s in after.starts] == [1]
        # before it: another try answers, whole
        assert_complete(before)
        assert before.starts[-1].attempt == 2
        assert [e["try"] for e in pool.events(before.job_id, "failed")] == [1]
        assert [e["try"] for e in pool.events(before.job_id, "finished")] == [2]
        # a failure no retry can mend ends the job at once
        assert final.error is not None and final.error.code == "upstream_bad_request"
        assert final.said == ""
        # nothing is redelivered later either
        await pool.settled()
        for answer in (after, final):
            assert len(pool.events(answer.job_id, "started")) == 1

    async def test_drain_finishes_in_flight_jobs_cuts_the_rest_at_its_deadline_and_stops_pulling(
        self, pool: Pool
    ) -> None:
        await pool.ensure(2)
        holders = dict(pool.alive)
        assert len(holders) * CAPACITY == 4  # the four jobs below fill every slot
        finishing = streaming_or_unary(pool.kind, {"delay_first": 0.3, "gap": 0.2}, {"delay_first": 0.7})
        answers = [
            await pool.submit(finishing),  # in flight at the SIGTERM, done well within the drain deadline
            await pool.submit(finishing),
            await pool.submit({"hang_after": 1}),  # past its first output at the drain deadline: cut
            await pool.submit({"tries": {"1": {"hang_after": 0}}}),  # none yet at the deadline: handed back
        ]
        f1, f2, cut, handed = answers
        for answer in answers:
            await pool.wait_event(answer.job_id, "started", within=5)
        await until(lambda: cut.first_output_at() is not None, 5, "the first output of the job to cut")
        term_wall, term_at = time.time(), time.monotonic()
        for proc in holders.values():
            proc.signal(signal.SIGTERM)
        late = await pool.submit({})
        await f1.wait(within=5)
        await f2.wait(within=5)
        for answer in (f1, f2):
            assert_complete(answer)
            assert [e["wall"] > term_wall for e in pool.events(answer.job_id, "finished")] == [True]  # ran on
            assert answer.outcomes[-1][0] < term_at + DRAIN
        # the drained workers have free slots now and take no job: the late one waits ...
        await asyncio.sleep(0.2)  # a worker still pulling would ask at once on each freed slot
        assert pool.events(late.job_id, "started") == []
        # ... for a replica that is not draining
        fresh = set(await pool.spawn(2))
        for answer in (cut, handed, late):
            await answer.wait(within=10)
        for worker_id, proc in holders.items():
            assert await asyncio.to_thread(proc.popen.wait, 5) == 0, proc.log()[-2000:]
            del pool.alive[worker_id]
        # cut at the drain deadline, with an error, after the output the client already had
        assert cut.error is not None and cut.error.code == "worker_lost"
        assert cut.said == expected_said(pool.kind, 1)
        assert cut.outcomes[-1][0] >= term_at + DRAIN * 0.9
        assert [e["worker_id"] in holders for e in pool.events(cut.job_id, "cancelled")] == [True]
        # handed back before its first output: a fresh replica's attempt answers it whole
        assert_complete(handed)
        assert handed.starts[-1].attempt == 2 and handed.starts[-1].worker_id in fresh
        assert [e["worker_id"] in holders for e in pool.events(handed.job_id, "cancelled")] == [True]
        assert_complete(late)
        assert [s.worker_id in fresh for s in late.starts] == [True]

    async def test_a_worker_killed_before_the_first_output_is_replaced_by_another_replicas_attempt(
        self, pool: Pool
    ) -> None:
        await pool.ensure(2)
        assert len(pool.alive) * CAPACITY == 4  # the four jobs below fill every slot: no pull is open
        # slow on the first try: the victim's jobs have no output when it dies, and the survivor
        # frees its slots only after JetStream redelivered them, so no dead pull can take one
        fake = {"tries": {"1": {"delay_first": 1.2}}}
        answers = [await pool.submit(fake) for _ in range(4)]
        for answer in answers:
            await pool.wait_event(answer.job_id, "started", within=5)
        victim = pool.events(answers[0].job_id, "started")[0]["worker_id"]
        proc = pool.alive.pop(victim)
        proc.signal(signal.SIGKILL)
        await asyncio.to_thread(proc.popen.wait, 5)
        (survivor,) = pool.alive
        for answer in answers:
            await answer.wait(within=10)
            assert_complete(answer)  # exactly one complete answer, whatever the attempts
            ran_on = [e["worker_id"] for e in pool.events(answer.job_id, "started")]
            if ran_on[0] == victim:
                assert ran_on == [victim, survivor]
                assert [(s.attempt, s.worker_id) for s in answer.starts][-1] == (2, survivor)
            else:
                assert ran_on == [survivor] and [s.attempt for s in answer.starts] == [1]
        assert sum(pool.events(a.job_id, "started")[0]["worker_id"] == victim for a in answers) == CAPACITY
