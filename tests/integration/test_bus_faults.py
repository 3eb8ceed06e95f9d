"""Bus-level fault injection: the test stands in for a misbehaving worker of pool `rogue`.

The test binds to the pool's durable pull consumer exactly as a worker would, takes the job the
edge published, and writes the reply stream by hand: a sequence gap, a redelivered attempt that
overtakes a stale one, a worker that falls silent after its first token, and a flood of deltas
towards a client that does not read. Every message written here conforms to proto/ (the session
wiretap checks it); only the behaviour is wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nats
import orjson
import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

import proto
from libs import wire
from libs.bus import ensure_pool_consumer
from libs.devproc import Proc
from libs.timeouts import Timeouts
from tests.conftest import AUTH_KEY, TIME_SCALE, start_edge
from tests.wiretap import Wiretap

POOL = "rogue"
MODEL = "rogue-model"
AUTH = {"authorization": f"Bearer {AUTH_KEY}"}
# The limits every service of the session runs with (SY_TIME_SCALE = TIME_SCALE).
LIMITS = Timeouts.from_env({"SY_TIME_SCALE": str(TIME_SCALE)})


def routing_config(log_dir: Path) -> str:
    # conftest's start_edge fixes SY_ROUTES itself (passing it again is a TypeError), so the route
    # comes from SWITCHYARD_CONFIG; its routes are matched before SY_ROUTES'.
    path = log_dir / "rogue-routing.toml"
    path.write_text(f'[routing]\nroutes = [{{ match = "rogue-*", pool = "{POOL}" }}]\n')
    return str(path)


@dataclass
class FakeWorker:
    """A test-controlled replica of pool `rogue`: takes jobs, publishes whatever replies it is told."""

    nc: NATS
    js: JetStreamContext
    sub: Any  # JetStreamContext.PullSubscription
    cancels: list[dict[str, Any]] = field(default_factory=list)

    async def take(self, request_id: str, within: float = 5.0) -> tuple[Msg, dict[str, Any]]:
        """The next delivery of the job of `request_id`; jobs of other requests are terminated."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                msgs = await self.sub.fetch(1, timeout=0.5)
            except nats.errors.TimeoutError:
                continue
            for msg in msgs:
                job = orjson.loads(msg.data)
                if job.get("request_id") == request_id:
                    return msg, job
                await msg.term()  # a leftover of an earlier test
        raise AssertionError(f"the edge never queued a job for {request_id}")

    async def reply(self, job: dict[str, Any], kind: str, *, attempt: int, seq: int, **fields: Any) -> None:
        message = {"type": kind, "job_id": job["job_id"], "attempt": attempt, "seq": seq, **fields}
        await self.nc.publish(job["reply"], orjson.dumps(message))

    async def start(self, job: dict[str, Any], attempt: int, worker_id: str = "rogue-1") -> None:
        await self.reply(job, "start", attempt=attempt, seq=0, worker_id=worker_id, taken_at=time.time())

    async def delta(self, job: dict[str, Any], text: str, *, attempt: int, seq: int) -> None:
        choices = [{"index": 0, "delta": {"content": text}, "finish_reason": None}]
        await self.reply(job, "delta", attempt=attempt, seq=seq, choices=choices)

    def cancels_of(self, job_id: str) -> list[dict[str, Any]]:
        return [c for c in self.cancels if c.get("job_id") == job_id]


@pytest.fixture(scope="module")
def rogue_edge(nats_server: Proc, log_dir: Path) -> Iterator[Proc]:
    edge = start_edge(nats_server.url, log_dir, name="edge-rogue", SWITCHYARD_CONFIG=routing_config(log_dir))
    yield edge
    edge.stop()


@pytest_asyncio.fixture(scope="module")
async def worker(rogue_edge: Proc, nats_server: Proc, wiretap: Wiretap) -> AsyncIterator[FakeWorker]:
    nc = await nats.connect(nats_server.url, name="fake-rogue-worker")
    js = nc.jetstream()
    durable = await ensure_pool_consumer(js, POOL, ack_wait=LIMITS.ack_wait, max_deliver=3, wait_for_stream=10)
    assert durable == "sy_v1_jobs_rogue"
    sub = await js.pull_subscribe_bind(durable=durable, stream=proto.STREAM_JOBS)
    fake = FakeWorker(nc, js, sub)

    async def on_cancel(msg: Msg) -> None:
        fake.cancels.append(orjson.loads(msg.data))

    await nc.subscribe(proto.CANCEL_SUBJECT, cb=on_cancel)
    await nc.flush()
    yield fake
    await nc.drain()


def chat_body(text: str = "hello") -> dict[str, Any]:
    return {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": text}]}


async def stream_raw(edge: Proc, request_id: str) -> tuple[int, bytes]:
    """POST a streaming chat request and read the whole raw SSE body."""
    headers = {**AUTH, "x-request-id": request_id}
    async with (
        httpx.AsyncClient(timeout=30) as http,
        http.stream("POST", edge.url + "/v1/chat/completions", json=chat_body(), headers=headers) as response,
    ):
        return response.status_code, b"".join([part async for part in response.aiter_raw()])


def sse_events(raw: bytes) -> list[bytes]:
    return [e.removeprefix(b"data: ") for e in raw.split(b"\n\n") if e.startswith(b"data: ")]


def streamed_text(events: list[bytes]) -> str:
    text = ""
    for event in events:
        if event == b"[DONE]":
            continue
        for choice in orjson.loads(event).get("choices") or []:
            text += (choice.get("delta") or {}).get("content") or ""
    return text


def assert_in_band_error(raw: bytes, code: str) -> list[bytes]:
    """The tail after the first token: a finish_reason "length" chunk, the error event, [DONE]."""
    events = sse_events(raw)
    assert events[-1] == b"[DONE]", raw[-500:]
    error = orjson.loads(events[-2])["error"]
    assert error["code"] == code, error
    assert set(error) == {"message", "type", "param", "code"}
    closing = orjson.loads(events[-3])
    assert [c["finish_reason"] for c in closing["choices"]] == ["length"]
    return events


async def wait_for(predicate: Any, within: float, step: float = 0.02) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(step)


def request_id(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


# ---- sequence gap ----------------------------------------------------------------------------


async def test_reply_gap_ends_the_stream_in_band(rogue_edge: Proc, worker: FakeWorker) -> None:
    rid = request_id("gap")
    client = asyncio.create_task(stream_raw(rogue_edge, rid))
    msg, job = await worker.take(rid)
    attempt = msg.metadata.num_delivered
    assert attempt == 1 and job["pool"] == POOL and job["model"] == MODEL
    await worker.start(job, attempt)
    await worker.delta(job, "hi", attempt=attempt, seq=1)
    await worker.delta(job, " AFTER-GAP", attempt=attempt, seq=3)  # seq 2 never arrives
    await msg.ack()
    status, raw = await asyncio.wait_for(client, 5)
    assert status == 200
    events = assert_in_band_error(raw, "reply_gap")
    assert streamed_text(events) == "hi"  # nothing after the gap reaches the client
    assert b"AFTER-GAP" not in raw
    # the worker whose reply was lost is still streaming: the edge stops it
    await wait_for(lambda: worker.cancels_of(job["job_id"]), within=2)


# ---- attempt fencing -------------------------------------------------------------------------


async def test_stale_attempt_is_fenced_and_cancelled(rogue_edge: Proc, worker: FakeWorker) -> None:
    rid = request_id("fence")
    client = asyncio.create_task(stream_raw(rogue_edge, rid))
    first, job = await worker.take(rid)
    assert first.metadata.num_delivered == 1
    await worker.start(job, 1, worker_id="rogue-old")
    # the first delivery is given up before its first token: JetStream redelivers it
    await first.nak()
    second, again = await worker.take(rid)
    assert again["job_id"] == job["job_id"]
    assert second.metadata.num_delivered == 2
    await worker.start(job, 2, worker_id="rogue-new")
    await worker.delta(job, "fresh", attempt=2, seq=1)
    await worker.delta(job, "STALE", attempt=1, seq=1)  # the old attempt still talks
    await worker.delta(job, " answer", attempt=2, seq=2)
    await worker.reply(job, "end", attempt=2, seq=3, usage=None)
    await second.ack()
    status, raw = await asyncio.wait_for(client, 5)
    assert status == 200
    events = sse_events(raw)
    assert events[-1] == b"[DONE]" and b'"error"' not in raw
    assert streamed_text(events) == "fresh answer"
    assert b"STALE" not in raw
    await wait_for(lambda: worker.cancels_of(job["job_id"]), within=2)
    await asyncio.sleep(0.2)  # nothing else may follow
    assert worker.cancels_of(job["job_id"]) == [
        {"type": "cancel", "job_id": job["job_id"], "reason": "stale_attempt", "attempt": 1}
    ]


# ---- a worker that falls silent ----------------------------------------------------------------


async def test_worker_silent_after_first_token_is_worker_lost(rogue_edge: Proc, worker: FakeWorker) -> None:
    rid = request_id("silent")
    client = asyncio.create_task(stream_raw(rogue_edge, rid))
    msg, job = await worker.take(rid)
    attempt = msg.metadata.num_delivered
    await worker.start(job, attempt)
    await worker.delta(job, "hi", attempt=attempt, seq=1)
    await worker.nc.flush()
    last_message = time.monotonic()
    await msg.ack()
    # dispatch.py _job_deadline, streaming phase: silence allowed after the last message
    allowed = min(LIMITS.worker_silence + LIMITS.idle, LIMITS.worker_silence * 2)
    status, raw = await asyncio.wait_for(client, allowed + 5)
    waited = time.monotonic() - last_message
    assert status == 200
    events = assert_in_band_error(raw, "worker_lost")
    assert streamed_text(events) == "hi"
    assert allowed * 0.9 <= waited <= allowed + 2.0
    # the edge also tells whoever still holds the job to stop
    await wait_for(lambda: worker.cancels_of(job["job_id"]), within=2)
    assert all(c["reason"] in ("edge_error", "deadline") for c in worker.cancels_of(job["job_id"]))


# ---- a client that does not read ---------------------------------------------------------------


def raw_streaming_post(port: int, request_id: str) -> socket.socket:
    """A streaming POST by hand on a socket with a tiny receive buffer, which the test never reads."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: it sets the TCP window
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    body = orjson.dumps(chat_body())
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
        f"authorization: Bearer {AUTH_KEY}\r\ncontent-type: application/json\r\n"
        f"x-request-id: {request_id}\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    return sock


async def error_count(http: httpx.AsyncClient, edge: Proc, code: str) -> float:
    text = (await http.get(edge.url + "/metrics")).text
    found = re.search(rf'^switchyard_edge_errors_total\{{code="{code}"\}} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def test_client_too_slow_overflows_its_buffer(
    nats_server: Proc, log_dir: Path, rogue_edge: Proc, worker: FakeWorker
) -> None:
    edge = start_edge(
        nats_server.url, log_dir, name="edge-rogue-slow", REPLY_BUFFER="8", SWITCHYARD_CONFIG=routing_config(log_dir)
    )
    sock: socket.socket | None = None
    try:
        port = int(edge.url.rsplit(":", 1)[1])
        rid = request_id("slow")
        sock = raw_streaming_post(port, rid)
        msg, job = await worker.take(rid)
        attempt = msg.metadata.num_delivered
        await msg.ack()
        await worker.start(job, attempt)
        seq = 1
        # Phase 1, paced so the edge keeps up: about 6.5 MB of deltas, more than the unread socket,
        # the kernel's send buffer (tcp_wmem max 4 MiB) and uvicorn's write buffer hold, so the
        # edge's send() ends up blocked on the client.
        big = "x" * 16_384
        for _ in range(400):
            await worker.delta(job, big, attempt=attempt, seq=seq)
            seq += 1
            await asyncio.sleep(0.002)
        # Phase 2: a burst far beyond the request's buffer of 8 messages.
        small = "y" * 500
        for _ in range(2_000):
            await worker.delta(job, small, attempt=attempt, seq=seq)
            seq += 1
        await worker.nc.flush()
        async with httpx.AsyncClient(timeout=5) as http:
            deadline = time.monotonic() + 5
            while await error_count(http, edge, "client_too_slow") < 1:
                assert time.monotonic() < deadline, (
                    "the edge never recorded client_too_slow for a client that stopped reading"
                )
                await asyncio.sleep(0.1)
        # the job is cancelled while the client is still connected: its worker must stop streaming
        await wait_for(lambda: worker.cancels_of(job["job_id"]), within=3)
    finally:
        if sock is not None:
            sock.close()
        edge.stop()


# ---- orphaned replies ------------------------------------------------------------------------


async def test_replies_no_request_waits_for_get_one_cancel(rogue_edge: Proc, worker: FakeWorker) -> None:
    # A worker streaming a job this edge has no request for (its request gave up before the
    # job's PubAck came back, or ended long ago): the edge stops it once, however many replies.
    token = uuid.uuid4().hex
    job = {"job_id": token, "reply": proto.reply_subject("edge-rogue", token)}
    await worker.start(job, 1)
    for seq in range(1, 6):
        await worker.delta(job, "nobody listens", attempt=1, seq=seq)
    await wait_for(lambda: worker.cancels_of(token), within=2)
    await asyncio.sleep(0.3)  # any further cancel would have arrived by now
    assert worker.cancels_of(token) == [{"type": "cancel", "job_id": token, "reason": "orphaned"}]


async def test_a_blind_job_answered_after_its_client_left_draws_an_orphaned_cancel(
    nats_server: Proc, log_dir: Path, worker: FakeWorker
) -> None:
    # A job published inside a confirm window whose client leaves before any reply: the edge
    # cancels it but does not remember the cancel (a worker may take the job after the cancel
    # went out), so the first reply that arrives later still draws an `orphaned` cancel.
    edge = start_edge(nats_server.url, log_dir, name="edge-rogue-window", SY_TIMEOUT_CONFIRM_WINDOW="30",
                      SWITCHYARD_CONFIG=routing_config(log_dir))
    try:
        first_id, blind_id = request_id("window-open"), request_id("window-blind")
        first = asyncio.create_task(stream_raw(edge, first_id))
        first_msg, first_job = await worker.take(first_id)  # stored and confirmed: the window opens
        blind = asyncio.create_task(stream_raw(edge, blind_id))
        msg, job = await worker.take(blind_id)
        assert (msg.headers or {}).get("Nats-Msg-Id") == job["job_id"]  # it went out unconfirmed
        blind.cancel()  # the client leaves before any reply
        with contextlib.suppress(asyncio.CancelledError):
            await blind
        await wait_for(lambda: worker.cancels_of(job["job_id"]), within=3)
        assert [c["reason"] for c in worker.cancels_of(job["job_id"])] == ["client_disconnected"]
        await worker.start(job, 1)  # the worker that holds it answers regardless
        await wait_for(lambda: len(worker.cancels_of(job["job_id"])) == 2, within=3)
        assert worker.cancels_of(job["job_id"])[1]["reason"] == "orphaned"
        await msg.term()
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first
        await first_msg.term()
        assert first_job["job_id"] != job["job_id"]
    finally:
        edge.stop()


async def first_token_sent(
    edge: Proc, worker: FakeWorker, name: str, text: str
) -> tuple[asyncio.Task[tuple[int, bytes]], dict[str, Any]]:
    """A streaming request whose job the fake worker took, started, answered one delta of and acked."""
    rid = request_id(name)
    client = asyncio.create_task(stream_raw(edge, rid))
    msg, job = await worker.take(rid)
    await worker.start(job, 1)
    await worker.delta(job, text, attempt=1, seq=1)
    await msg.ack()
    return client, job


async def test_a_finished_request_sends_no_cancel(rogue_edge: Proc, worker: FakeWorker) -> None:
    client, job = await first_token_sent(rogue_edge, worker, "finished", "done")
    await worker.reply(job, "end", attempt=1, seq=2, usage=None, system_fingerprint=None)
    status, raw = await asyncio.wait_for(client, 5)
    assert status == 200 and streamed_text(sse_events(raw)) == "done"
    await asyncio.sleep(0.3)
    assert worker.cancels_of(job["job_id"]) == []


# ---- batches and unreadable replies ------------------------------------------------------------


async def test_a_batch_of_replies_is_one_answer(rogue_edge: Proc, worker: FakeWorker) -> None:
    rid = request_id("batch")
    client = asyncio.create_task(stream_raw(rogue_edge, rid))
    msg, job = await worker.take(rid)
    base = {"job_id": job["job_id"], "attempt": 1}
    batch = [
        {**base, "seq": 0, "type": "start", "worker_id": "rogue-1", "taken_at": time.time()},
        {**base, "seq": 1, "type": "delta", "choices": [{"index": 0, "delta": {"content": "one "}}]},
        {**base, "seq": 2, "type": "delta", "choices": [{"index": 0, "delta": {"content": "message"}}]},
        {**base, "seq": 3, "type": "delta", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {**base, "seq": 4, "type": "end", "usage": None, "system_fingerprint": None},
    ]
    await worker.nc.publish(job["reply"], orjson.dumps(batch))
    await msg.ack()
    status, raw = await asyncio.wait_for(client, 5)
    events = sse_events(raw)
    assert status == 200 and streamed_text(events) == "one message" and events[-1] == b"[DONE]"
    # each reply of the batch is still its own chunk: the finish keeps a chunk of its own
    finishes = [c["finish_reason"] for e in events[:-1] for c in orjson.loads(e)["choices"]]
    assert finishes == [None, None, "stop"]


def fragmented_answer(job: dict[str, Any], text: str) -> list[bytes]:
    """Delta, finish and end of attempt 1 (after a start), cut into fragments of at most 600 bytes."""
    base = {"job_id": job["job_id"], "attempt": 1}
    batch = [
        {**base, "seq": 1, "type": "delta", "choices": [{"index": 0, "delta": {"content": text}}]},
        {**base, "seq": 2, "type": "delta", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {**base, "seq": 3, "type": "end", "usage": None, "system_fingerprint": None},
    ]
    return wire.fragments(orjson.dumps(batch), 600, job["job_id"], 1, 1)


async def test_fragments_are_joined_into_one_answer(rogue_edge: Proc, worker: FakeWorker) -> None:
    rid = request_id("fragments")
    client = asyncio.create_task(stream_raw(rogue_edge, rid))
    msg, job = await worker.take(rid)
    await worker.start(job, 1)
    text = 'a "long" answer, ü 😀 ' * 40
    parts = fragmented_answer(job, text)
    assert len(parts) > 3
    for part in parts:
        await worker.nc.publish(job["reply"], part)
    await msg.ack()
    status, raw = await asyncio.wait_for(client, 5)
    events = sse_events(raw)
    assert status == 200 and streamed_text(events) == text and events[-1] == b"[DONE]"


async def test_a_lost_fragment_is_a_reply_gap_and_a_cancel(
    rogue_edge: Proc, worker: FakeWorker, wiretap: Wiretap
) -> None:
    client, job = await first_token_sent(rogue_edge, worker, "fragment-gap", "fine so far")
    wiretap.tolerate(job["reply"])  # a missing part breaks the contract: the point here
    parts = fragmented_answer(job, "never whole " * 40)
    for part in parts[:1] + parts[2:]:  # part 1 is lost
        await worker.nc.publish(job["reply"], part)
    status, raw = await asyncio.wait_for(client, 5)
    assert status == 200
    events = assert_in_band_error(raw, "reply_gap")
    assert streamed_text(events) == "fine so far"
    assert b"never whole" not in raw
    await wait_for(lambda: worker.cancels_of(job["job_id"]), within=2)


@pytest.mark.parametrize("payload", [b"not json", b"[]", b"[1, 2]", b'"text"'])
async def test_an_unreadable_reply_is_a_typed_error_and_a_cancel(
    rogue_edge: Proc, worker: FakeWorker, wiretap: Wiretap, payload: bytes
) -> None:
    client, job = await first_token_sent(rogue_edge, worker, "unreadable", "fine so far")
    wiretap.tolerate(job["reply"])  # breaking the contract is the point here
    await worker.nc.publish(job["reply"], payload)
    status, raw = await asyncio.wait_for(client, 5)
    assert status == 200
    events = assert_in_band_error(raw, "reply_gap")
    assert streamed_text(events) == "fine so far"
    await wait_for(lambda: worker.cancels_of(job["job_id"]), within=2)
