"""Moderations through openai-worker: a `moderation` job published on the bus (the test stands in
for the edge) to a real worker process, whose upstream is a real OpenAI-compatible server on
loopback (tests/fake_openai.py). The session's wiretap checks every reply, the result's body
against proto/schemas/v1/moderation_result.json."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import nats
import orjson
import pytest_asyncio
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

import proto
from libs import wire
from libs.devproc import Proc
from libs.timeouts import Timeouts
from tests.conftest import SANDBOX_KEY, TIME_SCALE, Stack
from tests.fake_openai import fake_upstream
from tests.wiretap import Wiretap

LIMITS = Timeouts.from_env({"SY_TIME_SCALE": str(TIME_SCALE)})
EDGE = "modr-test-edge"
POOL = "modr"


@pytest_asyncio.fixture
async def bus(stack: Stack) -> AsyncIterator[NATS]:
    client = await nats.connect(stack.nats_url, name="test-openai-moderation")
    yield client
    await client.drain()


def moderation_job(model: str, body: dict[str, Any]) -> dict[str, Any]:
    token = uuid.uuid4().hex[:16]
    now = time.time()
    return {
        "type": "job", "job_id": token, "request_id": f"modr-{token}", "kind": "moderation", "model": model,
        "pool": POOL, "reply": proto.reply_subject(EDGE, token), "index_offset": 0, "created": now,
        "start_by": now + LIMITS.queue_wait, "deadline": now + LIMITS.total,
        "timeouts": {"first_token": LIMITS.first_token, "idle": LIMITS.idle, "heartbeat": LIMITS.heartbeat},
        "body": body,
    }


async def run_job(bus: NATS, job: dict[str, Any]) -> list[dict[str, Any]]:
    """Publishes the job; its replies once one ends it (`end` or `error`)."""
    replies: list[dict[str, Any]] = []
    done = asyncio.Event()

    async def on_reply(msg: Msg) -> None:
        for message in wire.decode_batch(msg.data):
            replies.append(message)
            if message["type"] in ("end", "error"):
                done.set()

    sub = await bus.subscribe(job["reply"], cb=on_reply)
    try:
        await bus.jetstream().publish(proto.job_subject(POOL), orjson.dumps(job))
        await asyncio.wait_for(done.wait(), timeout=10)
    finally:
        await sub.unsubscribe()
    return replies


async def test_a_moderation_job_is_answered_with_openais_moderation_body(
    start_worker: Callable[..., Proc], bus: NATS, wiretap: Wiretap,
) -> None:
    async with fake_upstream() as fake:
        worker = start_worker(name="modr-worker", pool=POOL, models="modr-both", OPENAI_BASE_URL=fake.url,
                              OPENAI_MODERATION_MODELS="omni-moderation-latest,modr-both")
        request = {"model": "omni-moderation-latest", "input": ["I will kill the process", "hello there"]}
        job = moderation_job("omni-moderation-latest", request)
        replies = await run_job(bus, job)

        assert [r["type"] for r in replies] == ["start", "result", "end"], replies
        body = replies[1]["body"]
        assert body["model"] == "omni-moderation-latest"  # the job's model, not the upstream's dated one
        assert body["id"] == "modr-fake-1"
        assert [r["flagged"] for r in body["results"]] == [True, False]
        assert body["results"][0]["categories"]["violence"] is True
        usage = replies[2]["usage"]  # moderations report none: an estimate of the input
        assert usage == {"prompt_tokens": usage["prompt_tokens"], "completion_tokens": 0,
                         "total_tokens": usage["prompt_tokens"], "estimated": True} and usage["prompt_tokens"] > 0
        [(path, headers, sent)] = fake.requests
        assert path == "/v1/moderations" and headers["authorization"] == f"Bearer {SANDBOX_KEY}"
        assert sent == request

        # the upstream refuses the input: its `param` reaches the edge, and nobody tries again
        fake.status, fake.param = 400, "input"
        refused = await run_job(bus, moderation_job("modr-both", {"model": "modr-both", "input": "x"}))
        assert [r["type"] for r in refused] == ["start", "error"], refused
        error = refused[1]["error"]
        assert (error["code"], error["param"], error["retryable"]) == ("upstream_bad_request", "input", False)
        assert refused[1]["attempt"] == 1 and SANDBOX_KEY not in error["message"]

    announced = wiretap.find("switchyard.v1.announce", worker_id="modr-worker")[-1]
    assert announced["serves"] == {"modr-both": ["chat", "completion", "moderation"],
                                   "omni-moderation-latest": ["moderation"]}
    subjects = {job["reply"], proto.job_subject(POOL)}
    assert not [v for v in wiretap.violations if any(s in v for s in subjects)]
    assert "job failed: upstream_bad_request" in worker.log()
