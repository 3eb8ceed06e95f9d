"""services/edge/bus_gate.py: no job goes out while NATS is away or before the work queue is back."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from libs.errors import BusUnavailable
from services.edge.bus_gate import BusGate


@dataclass
class FakeConnection:
    """What the gate reads of nats-py's client: `is_connected` and the reconnect count."""

    is_connected: bool = True
    stats: dict[str, int] = field(default_factory=lambda: {"reconnects": 0})

    def reconnect(self) -> None:
        self.stats["reconnects"] += 1  # nats-py counts it before it marks the connection usable
        self.is_connected = True


def gate_on(conn: FakeConnection) -> BusGate:
    return BusGate(cast(Any, conn))


async def test_open_while_connected() -> None:
    gate = gate_on(FakeConnection())
    assert gate.open
    await gate.admit(1.0)


async def test_disconnected_is_refused_at_once_with_retry_after() -> None:
    conn = FakeConnection()
    gate = gate_on(conn)
    conn.is_connected = False
    started = time.perf_counter()
    with pytest.raises(BusUnavailable) as caught:
        await gate.admit(5.0)
    assert time.perf_counter() - started < 0.05
    assert caught.value.headers() == {"retry-after": "1", "retry-after-ms": "1000"}


async def test_after_a_reconnect_jobs_wait_for_the_restore() -> None:
    conn = FakeConnection()
    gate = gate_on(conn)
    conn.is_connected = False
    conn.reconnect()
    assert not gate.open
    recreated = asyncio.Event()
    waiting = asyncio.create_task(gate.admit(5.0))
    await asyncio.sleep(0.01)
    assert not waiting.done()

    async def recreate() -> None:
        recreated.set()

    await gate.restore(recreate)
    await asyncio.wait_for(waiting, 1.0)
    assert recreated.is_set() and gate.open


async def test_a_failing_restore_is_retried_until_it_works() -> None:
    conn = FakeConnection()
    gate = gate_on(conn)
    conn.reconnect()
    attempts = 0

    async def recreate() -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise TimeoutError("JetStream not ready yet")

    await asyncio.wait_for(gate.restore(recreate), 5.0)
    assert attempts == 3 and gate.open


async def test_a_restore_longer_than_the_limit_gives_503() -> None:
    conn = FakeConnection()
    gate = gate_on(conn)
    conn.reconnect()
    started = time.perf_counter()
    with pytest.raises(BusUnavailable):
        await gate.admit(0.1)
    assert 0.09 < time.perf_counter() - started < 0.5


async def test_a_restore_for_a_connection_lost_again_does_not_open_the_gate() -> None:
    conn = FakeConnection()
    gate = gate_on(conn)
    conn.reconnect()

    async def recreate() -> None:
        conn.is_connected = False  # lost again meanwhile: the next reconnect restores
        raise OSError("connection lost")

    await asyncio.wait_for(gate.restore(recreate), 5.0)
    conn.reconnect()
    assert not gate.open
