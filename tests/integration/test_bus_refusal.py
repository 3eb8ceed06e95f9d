"""JetStream refuses or never takes a job: the client gets 503 `bus_unavailable` at once.

The edge does not wait for JetStream's acknowledgement of a published job; it arrives on
`sy.v1.puback.<edge>.<token>` while the request already waits for its replies. These tests make
the bus refuse jobs for real, on a private nats-server: with the work-queue stream deleted NATS
answers "no responders", and with a full stream JetStream answers with an error. Inside a confirm
window jobs go out without asking; the refusal then comes when the window is over.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import nats
import orjson
import pytest
import pytest_asyncio
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js import api as js_api

import proto
from libs.devproc import Proc, start_nats_server
from tests.conftest import AUTH_KEY, TIME_SCALE, Stack, start_edge, wait_for_models

MODEL = "sandbox-refused"  # routed statically (sandbox-* → openai); no worker serves this bus
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "will the bus take me?"}]}


def chat_body(text: str) -> dict[str, object]:
    return {"model": "sandbox-chat", "messages": [{"role": "user", "content": text}]}
QUEUE_WAIT = 10.0 * TIME_SCALE


@dataclass
class PrivateBus:
    nats: Proc
    edge: Proc
    http: httpx.AsyncClient


@contextlib.asynccontextmanager
async def private_bus(log_dir: Path, name: str, **edge_env: str) -> AsyncIterator[PrivateBus]:
    """A nats-server and an edge of their own (no worker), and a client of that edge."""
    run_dir = log_dir / name
    server = start_nats_server(log_dir=run_dir, store_dir=run_dir / "js")
    edge = start_edge(server.url, run_dir, name=name, **edge_env)
    try:
        async with httpx.AsyncClient(
            base_url=edge.url + "/v1", headers={"authorization": f"Bearer {AUTH_KEY}"}, timeout=30
        ) as http:
            yield PrivateBus(server, edge, http)
    finally:
        edge.stop()
        server.stop()


@pytest_asyncio.fixture
async def bus(log_dir: Path) -> AsyncIterator[PrivateBus]:
    async with private_bus(log_dir, "edge-refusal") as private:
        yield private


async def queued(js: JetStreamContext) -> int:
    return (await js.stream_info(proto.STREAM_JOBS)).state.messages


async def timed_post(bus: PrivateBus) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await bus.http.post("/chat/completions", json=BODY)
    return response, time.monotonic() - started


def assert_bus_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "bus_unavailable"
    assert error["type"] == "server_error"
    assert response.headers["retry-after"] == "1"


async def test_a_deleted_work_queue_fails_the_request_at_once(bus: PrivateBus) -> None:
    nc = await nats.connect(bus.nats.url)
    try:
        await nc.jetstream().delete_stream(proto.STREAM_JOBS)
        response, elapsed = await timed_post(bus)
    finally:
        await nc.close()
    assert_bus_unavailable(response)
    assert "no work queue took the request" in response.json()["error"]["message"]
    assert elapsed < QUEUE_WAIT / 2, elapsed  # NATS's "no responders", not the queue-wait timeout


async def test_a_full_work_queue_refuses_and_the_queued_job_still_times_out(bus: PrivateBus) -> None:
    nc = await nats.connect(bus.nats.url)
    js = nc.jetstream()
    try:
        # The operator capped the queue at one job (discard new): JetStream refuses the second.
        info = await js.stream_info(proto.STREAM_JOBS)
        config = info.config
        config.max_msgs = 1
        config.discard = js_api.DiscardPolicy.NEW
        await js.update_stream(config)
        first = asyncio.create_task(bus.http.post("/chat/completions", json=BODY))
        for _ in range(100):  # bounded: until the first job is stored
            if (await js.stream_info(proto.STREAM_JOBS)).state.messages == 1:
                break
            await asyncio.sleep(0.01)
        second, elapsed = await timed_post(bus)
        queued = await first
        # the edge took the unstarted job back out of the queue after answering 503 no_capacity
        for _ in range(100):
            if (await js.stream_info(proto.STREAM_JOBS)).state.messages == 0:
                break
            await asyncio.sleep(0.01)
        remaining = (await js.stream_info(proto.STREAM_JOBS)).state.messages
    finally:
        await nc.close()
    assert_bus_unavailable(second)
    assert "the bus refused the request" in second.json()["error"]["message"]
    assert elapsed < QUEUE_WAIT / 2, elapsed
    assert queued.status_code == 503 and queued.json()["error"]["code"] == "no_capacity"
    assert remaining == 0


async def test_a_job_nobody_acknowledges_fails_after_the_publish_ack_limit(bus: PrivateBus) -> None:
    nc = await nats.connect(bus.nats.url)
    try:
        await nc.jetstream().delete_stream(proto.STREAM_JOBS)
        # Something listens on the pool's subject but is not JetStream: no "no responders", and no
        # acknowledgement either (as when the acknowledgement is lost with a broken connection).
        swallowed: list[bytes] = []

        async def swallow(msg: Msg) -> None:
            swallowed.append(msg.data)

        await nc.subscribe(proto.job_subject("openai"), cb=swallow)
        await nc.flush()
        response, elapsed = await timed_post(bus)
    finally:
        await nc.close()
    assert_bus_unavailable(response)
    assert "did not confirm" in response.json()["error"]["message"]
    publish_ack = 5.0 * TIME_SCALE
    assert publish_ack * 0.9 <= elapsed < QUEUE_WAIT, elapsed
    assert len(swallowed) == 1


# ---- the confirm window: jobs published without asking, confirmed only when slow to start ------

WINDOW = 3.0 * TIME_SCALE  # SY_TIMEOUT_CONFIRM_WINDOW=3, scaled like every limit


async def test_a_blind_job_lost_with_its_stream_is_refused_after_the_window(log_dir: Path) -> None:
    async with private_bus(log_dir, "edge-window-lost", SY_TIMEOUT_CONFIRM_WINDOW="3") as private:
        nc = await nats.connect(private.nats.url)
        js = nc.jetstream()
        try:
            first = asyncio.create_task(private.http.post("/chat/completions", json=BODY))  # confirmed, then waits
            for _ in range(100):  # bounded: until JetStream stored (and confirmed) the first job
                if await queued(js) == 1:
                    break
                await asyncio.sleep(0.01)
            await js.delete_stream(proto.STREAM_JOBS)
            second, elapsed = await timed_post(private)  # blind: published into nothing
            await first
        finally:
            await nc.close()
    assert_bus_unavailable(second)
    assert "no work queue took the request" in second.json()["error"]["message"]
    assert elapsed < QUEUE_WAIT / 2, elapsed  # noticed when the window ran out, not at the queue wait


async def test_jobs_within_the_window_are_not_acknowledged_one_by_one(stack: Stack, log_dir: Path) -> None:
    edge = start_edge(stack.nats_url, log_dir, name="edge-window", SY_TIMEOUT_CONFIRM_WINDOW="3")
    nc = await nats.connect(stack.nats_url)
    acks: list[bytes] = []

    async def on_ack(msg: Msg) -> None:
        acks.append(msg.data)

    await nc.subscribe(proto.puback_wildcard("edge-window"), cb=on_ack)
    try:
        async with httpx.AsyncClient(base_url=edge.url + "/v1", headers={"authorization": f"Bearer {AUTH_KEY}"},
                                     timeout=30) as http:
            await wait_for_models(Stack(stack.nats_url, edge.url, stack.sandbox_url, log_dir), {"sandbox-chat"})
            first = await http.post("/chat/completions", json=chat_body("quick"))  # confirmed: the window opens
            # the next five at once, inside the window; the slow one starts later than the window
            # closes, so it is confirmed then, and JetStream finds the copy it stored
            slow_text = f"slow [sandbox latency_ms={WINDOW * 2500:.0f} mark=window-slow]"
            more = await asyncio.gather(*[http.post("/chat/completions", json=chat_body(text))
                                          for text in ["quick"] * 4 + [slow_text]])
            await nc.flush()
            events = (await http.get(f"{stack.sandbox_url}/_sandbox/events", params={"mark": "window-slow"})).json()
    finally:
        await nc.close()
        edge.stop()
    assert [r.status_code for r in [first, *more]] == [200] * 6
    stored = [orjson.loads(a) for a in acks]
    assert stored[0].get("duplicate") is None  # the first job asked for its acknowledgement
    assert 2 <= len(stored) < 6, stored  # not one per job
    assert any(a.get("duplicate") for a in stored[1:])  # the slow one had been stored the first time
    assert len(events["events"]) == 1  # and ran once


async def test_a_blind_job_whose_client_left_is_taken_out_of_the_queue(log_dir: Path) -> None:
    async with private_bus(log_dir, "edge-window-gone", SY_TIMEOUT_CONFIRM_WINDOW="3") as private:
        nc = await nats.connect(private.nats.url)
        js = nc.jetstream()
        try:
            http = private.http
            first = asyncio.create_task(http.post("/chat/completions", json=BODY))  # confirmed; no worker here
            for _ in range(100):  # bounded: until it is stored
                if await queued(js) == 1:
                    break
                await asyncio.sleep(0.01)
            # published inside the window, so without confirmation; its client soon gives up
            second = asyncio.create_task(http.post("/chat/completions", json=BODY, timeout=WINDOW / 2))
            counts = [await queued(js)]
            for _ in range(100):  # bounded: until both jobs are stored
                if counts[-1] == 2:
                    break
                await asyncio.sleep(0.005)
                counts.append(await queued(js))
            with pytest.raises(httpx.ReadTimeout):
                await second
            for _ in range(100):  # bounded: until the edge has deleted the blind job again
                counts.append(await queued(js))
                if counts[-1] == 1:
                    break
                await asyncio.sleep(0.01)
            first_pending = not first.done()  # so the job deleted was the blind one
            await first
        finally:
            await nc.close()
    assert 2 in counts and counts[-1] == 1 and first_pending, counts  # stored blind, then taken out again


async def test_the_duplicate_window_stays_within_the_streams_max_age(log_dir: Path) -> None:
    # A long publish-ack limit asks for a duplicate window longer than max_age, which JetStream
    # refuses; the edge caps it, and starts.
    async with private_bus(log_dir, "edge-long-ack", SY_TIMEOUT_PUBLISH_ACK="400") as private:
        nc = await nats.connect(private.nats.url)
        try:
            config = (await nc.jetstream().stream_info(proto.STREAM_JOBS)).config
        finally:
            await nc.close()
    assert config.duplicate_window == config.max_age == 60.0


async def test_after_a_reconnect_the_next_job_is_confirmed_again(log_dir: Path) -> None:
    # A restarted server may have lost its streams, so a confirmation from before the restart
    # proves nothing: the first job after the reconnect asks for JetStream's acknowledgement
    # when it is published, though the confirm window (60 s here) is still open. A blind job is
    # acknowledged too, but only when it is confirmed later, as a duplicate of its stored copy.
    name = "edge-window-reconnect"
    acks: list[dict[str, object]] = []

    async def note(msg: Msg) -> None:
        acks.append(orjson.loads(msg.data) if msg.data else {"status": (msg.headers or {}).get("Status")})

    async def listen(url: str) -> nats.NATS:
        client = await nats.connect(url)
        await client.subscribe(proto.puback_wildcard(name), cb=note)
        await client.flush()
        return client

    async with private_bus(log_dir, name, SY_TIMEOUT_CONFIRM_WINDOW="600") as private:
        port = int(private.nats.url.rsplit(":", 1)[1])
        listener = await listen(private.nats.url)
        statuses = [(await private.http.post("/chat/completions", json=BODY)).status_code]  # confirmed
        statuses.append((await private.http.post("/chat/completions", json=BODY)).status_code)  # blind
        await listener.flush()
        await listener.close()
        private.nats.stop()
        restarted = start_nats_server(log_dir=log_dir / name, store_dir=log_dir / name / "js2", port=port)
        try:
            listener = await listen(restarted.url)
            js = listener.jetstream()
            for _ in range(200):  # bounded: until the edge has reconnected and recreated its stream
                with contextlib.suppress(Exception):
                    await js.stream_info(proto.STREAM_JOBS)
                    break
                await asyncio.sleep(0.05)
            statuses.append((await private.http.post("/chat/completions", json=BODY)).status_code)
            await listener.flush()
            await listener.close()
        finally:
            restarted.stop()
    assert statuses == [503, 503, 503]  # no worker serves this bus: each waits out the queue wait
    # confirmed; blind, then confirmed as a duplicate; after the reconnect asked at once again
    assert [bool(a.get("duplicate")) for a in acks] == [False, True, False], acks
