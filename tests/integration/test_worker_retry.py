"""Whether a failed job is handed back for another try follows the error's own `retryable`, for
every class of the error tree: the runtime in this process, on a real nats-server, with a backend
that fails each job with the error it is told to."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import nats
import orjson
from prometheus_client import CollectorRegistry

import proto
from libs import wire
from libs.bus import ensure_job_stream
from libs.devproc import Proc
from libs.errors import ModelNotFound, SwitchyardError
from libs.timeouts import Timeouts
from libs.worker_backend import Item
from libs.worker_metrics import WorkerMetrics
from libs.worker_runtime import WorkerConfig, WorkerRuntime
from proto.messages import Feature, Job, Kind
from tests.conftest import TIME_SCALE

LIMITS = Timeouts.from_env({"SY_TIME_SCALE": str(TIME_SCALE)})
MAX_DELIVER = 3


def error_classes() -> list[type[SwitchyardError]]:
    found: list[type[SwitchyardError]] = [SwitchyardError]
    for cls in found:  # breadth-first over the whole tree
        found.extend(sub for sub in cls.__subclasses__() if sub not in found)
    return found


def instance(cls: type[SwitchyardError]) -> SwitchyardError:
    return ModelNotFound("m") if cls is ModelNotFound else cls("the upstream said no")


class FailingBackend:
    """Fails the job whose prompt names an error class with that class; counts the calls."""

    def __init__(self) -> None:
        self.serves: dict[str, list[Kind]] = {"retry-model": ["chat"]}
        self.features: list[Feature] = ["chat"]
        self.calls: dict[str, int] = {}
        self.by_name = {cls.__name__: cls for cls in error_classes()}

    async def stream(self, job: Job, body: dict[str, Any]) -> AsyncIterator[Item]:
        name = body["messages"][0]["content"]
        self.calls[name] = self.calls.get(name, 0) + 1
        raise instance(self.by_name[name])
        yield []  # an async generator, as backends are

    async def aclose(self) -> None:
        pass


async def test_redelivery_follows_retryable_for_every_error_class(private_nats: Proc) -> None:
    nc = await nats.connect(private_nats.url)
    await ensure_job_stream(nc.jetstream(), max_age=60, duplicate_window=2)
    backend = FailingBackend()
    runtime = WorkerRuntime(nc, backend, WorkerConfig(
        worker_id="retry-worker", pool="retry", capacity=8, timeouts=LIMITS, max_deliver=MAX_DELIVER,
    ), WorkerMetrics(CollectorRegistry(), "retry"))
    errors: dict[str, dict[str, Any]] = {}  # job id -> its error reply
    names: dict[str, str] = {}  # job id -> error class name

    async def on_reply(msg: Any) -> None:
        for message in wire.decode_batch(msg.data):
            if message["type"] == "error":
                errors[message["job_id"]] = message

    naks: list[bytes] = []  # what the worker answers JetStream for a delivery it hands back

    async def on_ack(msg: Any) -> None:
        if msg.data.startswith(b"-NAK"):
            naks.append(msg.data)

    await nc.subscribe(proto.reply_wildcard("retry-edge"), cb=on_reply)
    await nc.subscribe("$JS.ACK.>", cb=on_ack)
    await runtime.start()
    try:
        for cls in error_classes():
            token = uuid.uuid4().hex[:16]
            names[token] = cls.__name__
            now = time.time()
            job = {
                "type": "job", "job_id": token, "request_id": f"retry-{token}", "kind": "chat",
                "model": "retry-model", "pool": "retry", "reply": proto.reply_subject("retry-edge", token),
                "index_offset": 0, "created": now, "start_by": now + LIMITS.queue_wait, "deadline": now + 60,
                "timeouts": {"first_token": 5, "idle": 5, "heartbeat": LIMITS.heartbeat},
                "body": {"model": "retry-model", "messages": [{"role": "user", "content": cls.__name__}]},
            }
            await nc.jetstream().publish(proto.job_subject("retry"), wire.encode(job))
        for _ in range(500):  # bounded: about 5 s
            if len(errors) == len(names):
                break
            await asyncio.sleep(0.01)
    finally:
        await runtime.drain()
        await nc.close()
    assert len(errors) == len(names), sorted(set(names.values()) - {names[j] for j in errors})
    # every hand-back asks JetStream to wait a jittered while before the next try
    retried = sum(MAX_DELIVER - 1 for name in names.values() if backend.by_name[name].retryable)
    assert len(naks) == retried
    delays = [orjson.loads(nak.removeprefix(b"-NAK "))["delay"] for nak in naks if nak != b"-NAK"]
    assert len(delays) >= retried - 1  # a draw of exactly zero goes without a delay
    assert len(set(delays)) > 1
    for job_id, name in names.items():
        cls = backend.by_name[name]
        tries = MAX_DELIVER if cls.retryable else 1
        assert (backend.calls[name], errors[job_id]["attempt"]) == (tries, tries), name
        assert errors[job_id]["error"]["code"] == instance(cls).code



async def test_a_job_cut_by_a_drain_on_its_last_delivery_is_answered_not_handed_back(private_nats: Proc) -> None:
    """Handing a job back on its last delivery would drop it silently (JetStream redelivers it no
    more) and leave the edge waiting for a worker that is gone: it gets `worker_lost` instead."""
    nc = await nats.connect(private_nats.url)
    await ensure_job_stream(nc.jetstream(), max_age=60, duplicate_window=2)
    hanging = asyncio.Event()

    class HangingBackend(FailingBackend):
        async def stream(self, job: Job, body: dict[str, Any]) -> AsyncIterator[Item]:
            hanging.set()
            await asyncio.Event().wait()  # no first token until the drain cuts it
            yield []

    runtime = WorkerRuntime(nc, HangingBackend(), WorkerConfig(
        worker_id="last-worker", pool="last", capacity=1, timeouts=dataclasses.replace(LIMITS, drain=0.2),
        max_deliver=1,  # its first delivery is its last
    ), WorkerMetrics(CollectorRegistry(), "last"))
    replies: list[dict[str, Any]] = []

    async def on_reply(msg: Any) -> None:
        replies.extend(wire.decode_batch(msg.data))

    await nc.subscribe(proto.reply_wildcard("last-edge"), cb=on_reply)
    await runtime.start()
    try:
        token = uuid.uuid4().hex[:16]
        now = time.time()
        job = {
            "type": "job", "job_id": token, "request_id": f"last-{token}", "kind": "chat",
            "model": "retry-model", "pool": "last", "reply": proto.reply_subject("last-edge", token),
            "index_offset": 0, "created": now, "start_by": now + LIMITS.queue_wait, "deadline": now + 60,
            "timeouts": {"first_token": 5, "idle": 5, "heartbeat": LIMITS.heartbeat},
            "body": {"model": "retry-model", "messages": [{"role": "user", "content": "hang"}]},
        }
        await nc.jetstream().publish(proto.job_subject("last"), wire.encode(job))
        await asyncio.wait_for(hanging.wait(), 5)
        await runtime.drain()
        for _ in range(200):  # bounded: about 2 s
            if any(r["type"] == "error" for r in replies):
                break
            await asyncio.sleep(0.01)
    finally:
        await nc.close()
    errors = [r for r in replies if r["type"] == "error"]
    assert [e["error"]["code"] for e in errors] == ["worker_lost"]
