"""libs.bus.subscribe_inline against a real nats-server (a private one: the subjects here are not
part of proto/, which the session's wiretap enforces), and the Go runtime settings it runs with."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from libs.bus import subscribe_inline
from libs.devproc import NATS_SCHEDTRACE, Proc, nats_godebug


@pytest.mark.parametrize("nats_apis", ["private"], indirect=True)  # the fast path's own behaviour
async def test_messages_are_handled_in_order_by_the_reader_without_a_task_of_their_own(
    private_nc: NATS, nats_apis: str
) -> None:
    seen: list[tuple[bytes, asyncio.Task[object] | None]] = []

    def handler(msg: Msg) -> None:
        seen.append((msg.data, asyncio.current_task()))

    tasks_before = asyncio.all_tasks()
    sub = await subscribe_inline(private_nc, "inline.order", handler)
    for i in range(200):
        await private_nc.publish("inline.order", str(i).encode())
    await private_nc.flush()
    for _ in range(100):  # bounded: the replies are read by now, almost always
        if len(seen) == 200:
            break
        await asyncio.sleep(0.01)
    assert [data for data, _ in seen] == [str(i).encode() for i in range(200)]
    handled_by = {task for _, task in seen}
    # one task of nats-py's that was already running (its read loop), not this test's
    assert len(handled_by) == 1 and handled_by <= tasks_before and asyncio.current_task() not in handled_by
    assert asyncio.all_tasks() == tasks_before  # no task per subscription or message
    assert sub.pending_msgs == 0 and sub.pending_bytes == 0  # nothing left counted as pending
    await sub.unsubscribe()


async def test_messages_are_handled_in_order_in_either_mode(private_nc: NATS, nats_apis: str) -> None:
    seen: list[bytes] = []
    handled_by: set[asyncio.Task[object] | None] = set()

    def handler(msg: Msg) -> None:
        seen.append(msg.data)
        handled_by.add(asyncio.current_task())

    tasks_before = asyncio.all_tasks()
    sub = await subscribe_inline(private_nc, "inline.both", handler)
    for i in range(200):
        await private_nc.publish("inline.both", str(i).encode())
    await private_nc.flush()
    for _ in range(100):  # bounded
        if len(seen) == 200:
            break
        await asyncio.sleep(0.01)
    assert seen == [str(i).encode() for i in range(200)]
    # by nats-py's reader, or (public API) by the subscription's own task
    assert len(handled_by) == 1 and (handled_by <= tasks_before) is (nats_apis == "private")
    await sub.unsubscribe()


async def test_a_failing_handler_is_logged_and_the_connection_keeps_delivering(
    private_nc: NATS, caplog: pytest.LogCaptureFixture, nats_apis: str
) -> None:
    seen: list[bytes] = []

    def handler(msg: Msg) -> None:
        if msg.data == b"boom":
            raise RuntimeError("a bug in a handler")
        seen.append(msg.data)

    sub = await subscribe_inline(private_nc, "inline.fail", handler)
    with caplog.at_level(logging.ERROR, logger="switchyard.bus"):
        for data in (b"before", b"boom", b"after"):
            await private_nc.publish("inline.fail", data)
        await private_nc.flush()
        for _ in range(100):
            if b"after" in seen:
                break
            await asyncio.sleep(0.01)
    assert seen == [b"before", b"after"]
    assert private_nc.is_connected
    assert any("inline.fail" in r.getMessage() for r in caplog.records)
    await sub.unsubscribe()


async def test_no_delivery_after_unsubscribe_and_drain_completes(private_nc: NATS, nats_apis: str) -> None:
    seen: list[bytes] = []
    sub = await subscribe_inline(private_nc, "inline.stop", lambda msg: seen.append(msg.data))
    await private_nc.publish("inline.stop", b"one")
    await private_nc.flush()
    for _ in range(100):
        if seen:
            break
        await asyncio.sleep(0.01)
    await sub.unsubscribe()
    await private_nc.publish("inline.stop", b"two")
    await private_nc.flush()
    await asyncio.sleep(0.05)
    assert seen == [b"one"]
    await subscribe_inline(private_nc, "inline.drain", lambda msg: None)
    await asyncio.wait_for(private_nc.drain(), timeout=5)  # its queue never holds anything to wait for
    assert private_nc.is_closed


def test_nats_server_runs_with_the_measured_go_settings(private_nats: Proc) -> None:
    environ = dict(
        item.split("=", 1) for item in Path(f"/proc/{private_nats.pid}/environ").read_text().split("\0") if "=" in item
    )
    assert environ["GOMAXPROCS"] == (os.environ.get("GOMAXPROCS") or "1")
    assert NATS_SCHEDTRACE in environ["GODEBUG"].split(",")


@pytest.mark.parametrize(("given", "expected"), [
    ("", NATS_SCHEDTRACE),
    ("madvdontneed=1", f"madvdontneed=1,{NATS_SCHEDTRACE}"),
    ("schedtrace=5000", "schedtrace=5000"),  # the caller's own trace period wins
])
def test_godebug_keeps_the_callers_settings(given: str, expected: str) -> None:
    assert nats_godebug(given) == expected
