"""The gateway without nats-py's internals: what an untested nats-py release, or an operator's
`SY_PRIVATE_APIS=0`, gets (libs/fenced). An edge and an openai-worker of their own run with the
switch off on the session's bus (whose wiretap checks their messages), and answer chats through
the openai SDK; in this process, an untested nats-py turns the fast paths off by itself."""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import openai
import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

import proto
from libs import fenced
from libs.bus import delivery_count, subscribe_inline
from libs.bus_write import DirectPublisher
from libs.devproc import Proc
from tests.conftest import AUTH_KEY, Stack, start_edge, start_worker_proc, wait_for_models
from tests.wiretap import Wiretap

MODEL = "plainapi-chat"


@pytest.fixture
def untested_nats_py(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    real = importlib.metadata.version
    _, high = fenced.TESTED["nats-py"]
    release = ".".join(map(str, high)) + ".0"  # the first release nobody tested
    monkeypatch.setattr(fenced, "version", lambda dist: release if dist == "nats-py" else real(dist))
    monkeypatch.delenv(fenced.SWITCH, raising=False)
    fenced.private_apis_enabled.cache_clear()
    yield
    fenced.private_apis_enabled.cache_clear()


async def test_an_untested_nats_py_turns_the_fast_paths_off(
    untested_nats_py: None, private_nc: NATS, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="switchyard.fenced"):
        publisher = DirectPublisher(private_nc)
    assert not publisher.direct
    assert any("nats-py" in r.getMessage() and "untested" in r.getMessage() for r in caplog.records)
    seen: list[Msg] = []
    handled_by: set[asyncio.Task[object] | None] = set()

    def handler(msg: Msg) -> None:
        seen.append(msg)
        handled_by.add(asyncio.current_task())

    tasks_before = asyncio.all_tasks()
    sub = await subscribe_inline(private_nc, "plain.one", handler)
    await publisher.publish("plain.one", b"hello", headers={"Sy-Request-Id": "req-1"})
    for _ in range(100):  # bounded
        if seen:
            break
        await asyncio.sleep(0.01)
    assert [(m.data, m.headers) for m in seen] == [(b"hello", {"Sy-Request-Id": "req-1"})]
    assert not handled_by & tasks_before  # the subscription's own task, not nats-py's reader
    await sub.unsubscribe()


@pytest_asyncio.fixture(scope="module")
async def public_stack(nats_server: Proc, sandbox: Proc, wiretap: Wiretap, log_dir: Path) -> AsyncIterator[Stack]:
    run_dir = log_dir / "public-path"
    edge = start_edge(nats_server.url, run_dir, name="edge-public", SY_ROUTES="plainapi-*=plainapi",
                      SY_PRIVATE_APIS="0")
    worker = start_worker_proc(nats_server.url, sandbox.url, run_dir, name="public-worker", pool="plainapi",
                               models=MODEL, SY_PRIVATE_APIS="0")
    stack = Stack(nats_server.url, edge.url, sandbox.url, run_dir, [edge, worker])
    try:
        await wait_for_models(stack, {MODEL})
        yield stack
    finally:
        worker.stop()
        edge.stop()


@pytest_asyncio.fixture
async def client(public_stack: Stack) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=public_stack.base_url, api_key=AUTH_KEY, max_retries=0, timeout=30) as sdk:
        yield sdk


def test_both_services_run_without_the_fast_paths(public_stack: Stack) -> None:
    for proc in public_stack.procs:
        assert "nats-py private fast paths off" in proc.log(), proc.name


async def test_a_chat_is_answered_and_its_job_acked_on_first_delivery(
    client: openai.AsyncOpenAI, public_stack: Stack
) -> None:
    """The worker's "+ACK" goes out right behind its reply, through nats-py's publish."""
    nc = await nats.connect(public_stack.nats_url)
    acks: list[Msg] = []
    try:
        durable = proto.consumer_name("plainapi")

        async def on_ack(msg: Msg) -> None:
            acks.append(msg)

        await nc.subscribe(f"$JS.ACK.{proto.STREAM_JOBS}.{durable}.>", cb=on_ack)
        await nc.flush()
        reply = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi [sandbox tokens=5]"}]
        )
        assert reply.choices[0].message.content and len(reply.choices[0].message.content.split()) == 5
        assert reply.choices[0].finish_reason == "stop"
        for _ in range(200):  # bounded: the ack left with the reply, before the edge answered
            if any(m.data == b"+ACK" for m in acks):
                break
            await asyncio.sleep(0.01)
        final = [m for m in acks if m.data in (b"+ACK", b"+NAK", b"-NAK", b"+TERM")]
        assert [(m.data, delivery_count(m.subject)) for m in final] == [(b"+ACK", 1)]
    finally:
        await nc.close()


async def test_a_streamed_chat_is_answered(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi [sandbox tokens=12]"}], stream=True
    )
    pieces = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
    assert len("".join(pieces).split()) == 12


async def test_an_answer_larger_than_the_bus_max_payload_arrives_whole(client: openai.AsyncOpenAI) -> None:
    """The worker's fragments and its ack go out through nats-py's publish, in order."""
    reply = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "long [sandbox tokens=300000]"}], max_tokens=400000
    )
    assert reply.usage is not None and reply.usage.completion_tokens == 300000
    content = reply.choices[0].message.content
    assert content is not None and len(content.encode()) > 1_500_000
