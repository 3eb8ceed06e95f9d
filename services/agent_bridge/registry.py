"""The agents this bridge holds, and their leases: one ask at a time per agent, LRU among idle ones.

The socket of an agent lives in exactly one bridge process, so that process is the only one that
can lease it: a lease is an in-memory flag here, with no bus round trip. Other bridges reach the
agent by forwarding the ask to its holder (backend.py), which leases it like any local ask. A KV
lease (libs/account_pool) would add a compare-and-set per ask and guard nothing more: no other
process could use the socket anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Collection
from typing import Literal

from services.agent_bridge.connection import AgentConnection


class Agents:
    def __init__(self) -> None:
        self._by_handle: dict[str, AgentConnection] = {}
        self._changed = asyncio.Event()  # replaced on every change; waiters hold the one they saw
        self._listeners: list[Callable[[], None]] = []

    def listen(self, on_change: Callable[[], None]) -> None:
        """Called whenever an agent joins, leaves, or becomes idle (the puller's wake)."""
        self._listeners.append(on_change)

    def _signal(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
        for listener in self._listeners:
            listener()

    # ---- membership

    def add(self, conn: AgentConnection) -> AgentConnection | None:
        """Register `conn`; the connection it replaces (the same agent reconnecting), if any."""
        old = self._by_handle.get(conn.handle)
        self._by_handle[conn.handle] = conn
        self._signal()
        return old

    def remove(self, conn: AgentConnection) -> bool:
        """Forget `conn` if it is still the registered one (a replaced socket is not)."""
        if self._by_handle.get(conn.handle) is not conn:
            return False
        del self._by_handle[conn.handle]
        self._signal()
        return True

    def get(self, handle: str) -> AgentConnection | None:
        return self._by_handle.get(handle)

    def all(self) -> list[AgentConnection]:
        return list(self._by_handle.values())

    def __len__(self) -> int:
        return len(self._by_handle)

    def idle(self) -> int:
        return sum(1 for c in self._by_handle.values() if not c.busy)

    # ---- leases

    def _lru_idle(self, exclude: Collection[str]) -> AgentConnection | None:
        idle = [c for c in self._by_handle.values() if not c.busy and c.handle not in exclude]
        return min(idle, key=lambda c: c.last_used, default=None)

    async def _until(
        self, pick: Callable[[], AgentConnection | Literal[False] | None], timeout: float,  # noqa: ASYNC109
    ) -> AgentConnection | None:
        loop = asyncio.get_running_loop()
        until = loop.time() + max(0.0, timeout)
        while True:
            picked = pick()
            if picked is False:  # it is gone
                return None
            if picked is not None:
                picked.busy = True
                picked.last_used = loop.time()
                # the puller's credit went to this ask: wake it, so it asks for the job the next
                # idle agent can take (a delivery alone does not)
                self._signal()
                return picked
            left = until - loop.time()
            if left <= 0:
                return None
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), left)

    async def lease_any(self, exclude: Collection[str], timeout: float) -> AgentConnection | None:  # noqa: ASYNC109
        """The least recently used idle agent outside `exclude`, waiting up to `timeout` for one."""
        return await self._until(lambda: self._lru_idle(exclude), timeout)

    async def lease(self, handle: str, timeout: float) -> AgentConnection | Literal[False] | None:  # noqa: ASYNC109
        """That agent once idle: the connection; None after `timeout`; False when it is gone."""
        gone = False

        def pick() -> AgentConnection | Literal[False] | None:
            nonlocal gone
            conn = self._by_handle.get(handle)
            if conn is None:
                gone = True
                return False
            return None if conn.busy else conn

        conn = await self._until(pick, timeout)
        return False if gone else conn

    def release(self, conn: AgentConnection) -> None:
        conn.busy = False
        self._signal()
