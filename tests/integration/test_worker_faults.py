"""The worker runtime under faults, through real processes: a worker killed before its job's first
token, jobs a worker must drop, a worker draining under a stream of jobs, and what its logs say."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import nats
import openai
import orjson
import pytest_asyncio
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

import proto
from libs import wire
from libs.devproc import Proc
from libs.errors import BusError, DeadlineExceeded, NoCapacity, SwitchyardError
from libs.timeouts import Timeouts
from services.edge.replies import Failed, JobReplies, Started
from tests.conftest import AUTH_KEY, TIME_SCALE, Stack, start_edge, start_worker_proc, wait_for_models
from tests.wiretap import Wiretap

AUTH = {"authorization": f"Bearer {AUTH_KEY}"}
# The limits every service of the session runs with (SY_TIME_SCALE = TIME_SCALE).
LIMITS = Timeouts.from_env({"SY_TIME_SCALE": str(TIME_SCALE)})


@pytest_asyncio.fixture
async def bus(stack: Stack) -> AsyncIterator[NATS]:
    client = await nats.connect(stack.nats_url, name="test-worker-faults")
    yield client
    await client.drain()


async def wait_until(predicate: Callable[[], object], within: float, step: float = 0.01) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(step)


def starts_of(wiretap: Wiretap, request_id: str) -> list[dict[str, Any]]:
    jobs = {j["job_id"] for j in wiretap.find("switchyard.v1.job", request_id=request_id)}
    return [m for m in wiretap.find("switchyard.v1.reply", type="start") if m["job_id"] in jobs]


def log_lines(proc: Proc) -> list[dict[str, Any]]:
    """The JSON lines of a process's log (it also prints a plain `ready` line)."""
    lines = []
    for line in proc.log().splitlines():
        if line.startswith("{"):
            lines.append(orjson.loads(line))
    return lines


def lines_about(proc: Proc, request_id: str) -> list[dict[str, Any]]:
    return [line for line in log_lines(proc) if line.get("request_id") == request_id]


# ---- a worker dies before the first token ----------------------------------------------------


async def test_a_job_whose_worker_dies_before_its_first_token_is_retried_past_the_queue_wait(
    start_worker: Callable[..., Proc], stack: Stack, wiretap: Wiretap
) -> None:
    """The first token comes after the queue wait; the worker holding the job is killed at an age
    where JetStream redelivers it after `start_by` (queue wait - ack wait): the redelivery is the
    job's retry, and the client gets the whole answer."""
    workers = {name: start_worker(name=name, pool="fragile", models="fragile-late", capacity=1)
               for name in ("fragile-late-a", "fragile-late-b")}
    await wait_for_models(stack, {"fragile-late"})
    request_id = f"late-kill-{uuid.uuid4().hex[:8]}"
    async with openai.AsyncOpenAI(base_url=stack.base_url, api_key=AUTH_KEY, max_retries=0, timeout=30) as sdk:

        async def ask() -> tuple[str, str | None]:
            stream = await sdk.chat.completions.create(
                model="fragile-late", stream=True, extra_headers={"x-request-id": request_id},
                messages=[{"role": "user", "content": "x [sandbox tokens=4 first_token_ms=2000]"}],
            )
            text, finish = "", None
            async for chunk in stream:
                for choice in chunk.choices:
                    text += choice.delta.content or ""
                    finish = choice.finish_reason or finish
            return text, finish

        asked = time.monotonic()
        answer = asyncio.create_task(ask())
        await wait_until(lambda: starts_of(wiretap, request_id), within=5)
        job = wiretap.find("switchyard.v1.job", request_id=request_id)[0]
        # Killed at this age, the job's last in-progress ack is at most ack_wait / 3 old: JetStream
        # redelivers it at least 2/3 ack_wait later, past `start_by`.
        kill_age = LIMITS.queue_wait - LIMITS.ack_wait / 2
        await asyncio.sleep(max(0.0, job["created"] + kill_age - time.time()))
        assert not [m for m in wiretap.find("switchyard.v1.reply", type="delta") if m["job_id"] == job["job_id"]]
        victim = str(starts_of(wiretap, request_id)[0]["worker_id"])
        workers[victim].signal(signal.SIGKILL)
        killed = time.monotonic()
        text, finish = await answer
        done = time.monotonic()
    starts = starts_of(wiretap, request_id)
    assert [s["attempt"] for s in starts] == [1, 2]
    assert starts[1]["worker_id"] != victim
    assert starts[1]["taken_at"] > job["start_by"]  # the case that used to be dropped
    assert finish == "stop" and len(text.split()) == 4
    print(f"killed before the first token: answered {done - asked:.2f}s after asking, {done - killed:.2f}s after")


# ---- jobs a worker drops are answered --------------------------------------------------------


def make_job(pool: str, edge: str, **patch: Any) -> dict[str, Any]:
    token = uuid.uuid4().hex[:16]
    now = time.time()
    job: dict[str, Any] = {
        "type": "job", "job_id": token, "request_id": f"drop-{token}", "kind": "chat", "model": "drops-model",
        "pool": pool, "reply": proto.reply_subject(edge, token), "index_offset": 0, "created": now,
        "start_by": now + LIMITS.queue_wait, "deadline": now + LIMITS.total,
        "timeouts": {"first_token": LIMITS.first_token, "idle": LIMITS.idle, "heartbeat": LIMITS.heartbeat},
        "body": {"model": "drops-model", "messages": [{"role": "user", "content": "hi"}]},
    }
    job.update(patch)
    return job


async def test_a_dropped_job_ends_its_request_at_once_with_an_error(
    start_worker: Callable[..., Proc], stack: Stack, bus: NATS, wiretap: Wiretap
) -> None:
    """The test stands in for the edge: it queues jobs a worker must drop (too late to start, past
    its deadline, unreadable) and reads the replies with the edge's own reply logic."""
    worker = start_worker(name="drops-1", pool="drops", models="drops-model", capacity=2)
    await wait_for_models(stack, {"drops-model"})
    edge = "drop-test-edge"
    replies: dict[str, list[dict[str, Any]]] = {}

    async def on_reply(msg: Msg) -> None:
        replies.setdefault(msg.subject.rsplit(".", 1)[1], []).extend(wire.decode_batch(msg.data))

    await bus.subscribe(proto.reply_wildcard(edge), cb=on_reply)
    now = time.time()
    cases: list[tuple[dict[str, Any], type[SwitchyardError]]] = [
        (make_job("drops", edge, created=now - 2 * LIMITS.queue_wait, start_by=now - LIMITS.queue_wait), NoCapacity),
        (make_job("drops", edge, deadline=now - 0.01), DeadlineExceeded),
        (make_job("drops", edge, timeouts={"first_token": 1}), BusError),  # unreadable (no `idle`)
    ]
    wiretap.tolerate(proto.job_subject("drops"))  # the unreadable job breaks proto/ on purpose
    js = bus.jetstream()
    sent = time.monotonic()
    for job, _ in cases:
        await js.publish(proto.job_subject("drops"), orjson.dumps(job))
    await wait_until(lambda: all(len(replies.get(job["job_id"], [])) >= 2 for job, _ in cases), within=3)
    answered = time.monotonic() - sent
    for job, error in cases:
        follow = JobReplies(job["job_id"])
        outcomes = [follow.accept(message) for message in replies[job["job_id"]]]
        assert isinstance(outcomes[0], Started) and isinstance(outcomes[1], Failed), outcomes
        assert type(outcomes[1].error) is error
    assert answered < LIMITS.queue_wait  # at once, not after the edge's own limit
    print(f"dropped jobs answered within {answered:.3f}s")
    for job, error in cases:  # one line each, with the ids
        lines = lines_about(worker, job["request_id"])
        assert len(lines) == 1 and lines[0]["job_id"] == job["job_id"], lines
        assert error.code in lines[0]["msg"] and lines[0]["msg"].startswith("dropped")


# ---- a draining worker never burns a job's deliveries ------------------------------------------


async def test_a_draining_worker_runs_what_it_asked_for_and_burns_no_delivery(
    private_nats: Proc, sandbox: Proc, log_dir: Path
) -> None:
    """SIGTERM on one of two workers of a pool just after it asked for jobs, then a burst of jobs
    larger than the other (idle) worker's capacity: every request is answered, and JetStream never
    reports a job that ran out of deliveries. (A private server: the test watches pull requests.)"""
    run_dir = log_dir / "drain-burst"
    edge = start_edge(private_nats.url, run_dir, name="edge-drain-burst")
    # Pull requests live ack_wait / 2: 1 s here, time enough for the burst to meet the open one.
    slow = {"SY_TIMEOUT_ACK_WAIT": "20"}
    # Room for many deliveries on the draining worker's open request: each job handed back there
    # would come back to it until its deliveries ran out.
    draining = start_worker_proc(private_nats.url, sandbox.url, run_dir, name="burst-a", pool="tight",
                                 models="tight-burst", capacity=32, **slow)
    other = start_worker_proc(private_nats.url, sandbox.url, run_dir, name="burst-b", pool="tight",
                              models="tight-burst", capacity=2, **slow)
    bus = await nats.connect(private_nats.url)
    try:
        await wait_for_models(Stack(private_nats.url, edge.url, sandbox.url, run_dir), {"tight-burst"})
        exhausted: list[bytes] = []
        pulls: list[dict[str, Any]] = []

        async def on_advisory(msg: Msg) -> None:
            exhausted.append(msg.data)

        async def on_pull(msg: Msg) -> None:
            pulls.append(orjson.loads(msg.data))

        consumer = proto.consumer_name("tight")
        await bus.subscribe(f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{proto.STREAM_JOBS}.{consumer}",
                            cb=on_advisory)
        await bus.subscribe(f"$JS.API.CONSUMER.MSG.NEXT.{proto.STREAM_JOBS}.{consumer}", cb=on_pull)
        await bus.flush()
        # the draining worker's idle pull request asks for its whole capacity: it was just made
        await wait_until(lambda: any(p.get("batch") == 32 for p in pulls), within=5)
        draining.signal(signal.SIGTERM)
        async with httpx.AsyncClient(base_url=edge.url + "/v1", headers=AUTH, timeout=30) as http:

            async def one(i: int) -> int:
                text = f"job {i} [sandbox tokens=2 latency_ms=300]"
                body = {"model": "tight-burst", "messages": [{"role": "user", "content": text}]}
                return (await http.post("/chat/completions", json=body)).status_code

            statuses = await asyncio.gather(*(one(i) for i in range(6)))
        assert draining.popen.wait(timeout=10) == 0
        await bus.flush()
        assert exhausted == []
        assert statuses == [200] * 6
    finally:
        await bus.close()
        for proc in (draining, other, edge):
            proc.stop()


# ---- one request through the worker's logs ----------------------------------------------------


async def test_every_worker_log_line_about_a_job_names_its_request_and_job(
    private_nats: Proc, sandbox: Proc, log_dir: Path
) -> None:
    """A retried then failed job, a cancelled one, and two cut by a drain (one before its first
    token, one after): each event is one line of the worker's log, with `request_id` and `job_id`."""
    run_dir = log_dir / "worker-logs"
    edge = start_edge(private_nats.url, run_dir, name="edge-logs")
    worker = start_worker_proc(private_nats.url, sandbox.url, run_dir, name="logs-a", pool="fragile",
                               models="fragile-logs", capacity=4, SY_TIMEOUT_DRAIN="3")
    bus = await nats.connect(private_nats.url)
    jobs: dict[str, str] = {}  # request id -> job id
    replies: list[dict[str, Any]] = []

    async def on_job(msg: Msg) -> None:
        job = orjson.loads(msg.data)
        jobs[job["request_id"]] = job["job_id"]

    async def on_reply(msg: Msg) -> None:
        replies.extend(wire.decode_batch(msg.data))

    def seen(request_id: str, kind: str) -> bool:
        return any(r["type"] == kind and r["job_id"] == jobs.get(request_id) for r in replies)

    def lines_of(request_id: str) -> list[dict[str, Any]]:
        return lines_about(worker, request_id)

    await bus.subscribe(proto.job_subject("fragile"), cb=on_job)
    await bus.subscribe(proto.reply_wildcard("edge-logs"), cb=on_reply)
    await bus.flush()
    try:
        await wait_for_models(Stack(private_nats.url, edge.url, sandbox.url, run_dir), {"fragile-logs"})
        async with httpx.AsyncClient(base_url=edge.url + "/v1", headers=AUTH, timeout=30) as http:

            def body(text: str, stream: bool = False) -> dict[str, Any]:
                return {"model": "fragile-logs", "stream": stream, "messages": [{"role": "user", "content": text}]}

            failed = await http.post("/chat/completions", json=body("x [sandbox status=500]"),
                                     headers={"x-request-id": "logs-500"})
            assert failed.status_code == 502
            async with http.stream("POST", "/chat/completions", headers={"x-request-id": "logs-cancel"},
                                   json=body("x [sandbox tokens=50 token_delay_ms=100]", stream=True)) as response:
                async for _ in response.aiter_raw():
                    break  # the client leaves after the first bytes
            await wait_until(lambda: lines_of("logs-cancel"), within=5)

            async def read_all(request_id: str, text: str) -> None:
                async with http.stream("POST", "/chat/completions", headers={"x-request-id": request_id},
                                       json=body(text, stream=True)) as response:
                    async for _ in response.aiter_raw():
                        pass

            cut = [asyncio.create_task(read_all("logs-cut-mid", "x [sandbox tokens=100 token_delay_ms=100]")),
                   asyncio.create_task(read_all("logs-cut-early", "x [sandbox tokens=3 first_token_ms=5000]"))]
            await wait_until(lambda: seen("logs-cut-mid", "delta") and seen("logs-cut-early", "start"), within=5)
            worker.signal(signal.SIGTERM)
            assert worker.popen.wait(timeout=10) == 0
            for task in cut:
                task.cancel()
            await asyncio.gather(*cut, return_exceptions=True)
    finally:
        await bus.close()
        worker.stop()
        edge.stop()

    lines = log_lines(worker)
    for line in lines:  # a line that names a job in any way names it in the fields
        if any(job_id in orjson.dumps(line).decode() for job_id in jobs.values()):
            assert line.get("request_id") and line.get("job_id"), line
    for request_id, job_id in jobs.items():
        assert all(line["job_id"] == job_id for line in lines_of(request_id))
    retried = lines_of("logs-500")
    assert [line["attempt"] for line in retried] == [1, 2, 3]
    assert all("handing the job back for another try" in line["msg"] for line in retried[:2])
    assert retried[2]["msg"].startswith("job failed: upstream_error: ")
    assert [line["msg"] for line in lines_of("logs-cancel")] == ["cancelled by the edge (client_disconnected)"]
    [mid] = lines_of("logs-cut-mid")
    assert mid["msg"].startswith("job failed: worker_lost: ")
    [early] = lines_of("logs-cut-early")
    assert "handing the job back to another worker" in early["msg"]
