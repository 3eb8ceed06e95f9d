"""agent-bridge's pure parts: the lease registry, the prompt fold, Go's time format, the public
handle, and /api/ask's reading of a body and of the bus's errors."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from libs.errors import AgentConversationUnknown, AgentGone, AgentLost, AgentPingFailed, NoCapacity, from_wire
from services.agent_bridge.connection import ZERO_TIME, public_handle, rfc3339_nano
from services.agent_bridge.prompt import fold
from services.agent_bridge.registry import Agents
from services.edge.routes.agents import _ask, seed_error


class _Conn:
    """What the registry reads of a connection."""

    def __init__(self, handle: str) -> None:
        self.handle = handle
        self.busy = False
        self.last_used = 0.0


def _agents(*handles: str) -> tuple[Agents, list[Any]]:
    agents = Agents()
    conns = [_Conn(h) for h in handles]
    for conn in conns:
        agents.add(conn)  # type: ignore[arg-type]
    return agents, conns


async def test_lease_any_takes_the_least_recently_used_idle_agent_once() -> None:
    agents, (a, b) = _agents("a", "b")
    first = await agents.lease_any((), 0)
    second = await agents.lease_any((), 0)
    assert {first, second} == {a, b}  # one ask each: a leased agent is not handed out twice
    assert await agents.lease_any((), 0) is None
    assert agents.idle() == 0
    agents.release(first)  # type: ignore[arg-type]
    agents.release(second)  # type: ignore[arg-type]
    # the one used longest ago comes first
    assert await agents.lease_any((), 0) is first


async def test_lease_any_waits_for_a_release_and_skips_excluded_agents() -> None:
    agents, (a, _) = _agents("a", "b")
    held = await agents.lease_any(("b",), 0)
    assert held is a
    waiter = asyncio.create_task(agents.lease_any(("b",), 5))
    await asyncio.sleep(0)
    assert not waiter.done()
    agents.release(a)  # type: ignore[arg-type]
    assert await asyncio.wait_for(waiter, 1) is a


async def test_lease_of_a_named_agent_tells_gone_from_busy() -> None:
    agents, (a,) = _agents("a")
    assert await agents.lease("a", 0) is a
    assert await agents.lease("a", 0.01) is None  # busy past the wait
    assert await agents.lease("zzz", 1) is False  # gone: no wait
    agents.remove(a)  # type: ignore[arg-type]
    assert await agents.lease("a", 1) is False


async def test_a_replaced_connection_does_not_remove_its_successor() -> None:
    agents, (old,) = _agents("a")
    new = _Conn("a")
    assert agents.add(new) is old  # type: ignore[arg-type]
    assert not agents.remove(old)  # type: ignore[arg-type]
    assert agents.get("a") is new


async def test_every_change_wakes_the_listeners_leases_included() -> None:
    agents, (a,) = _agents("a")
    woken: list[int] = []
    agents.listen(lambda: woken.append(1))
    await agents.lease_any((), 0)
    agents.release(a)
    assert len(woken) == 2


def test_fold_keeps_a_lone_user_message_and_writes_a_transcript_otherwise() -> None:
    assert fold([{"role": "user", "content": "hi"}]) == "hi"
    assert fold([{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url"}]}]) == "a"
    assert fold([{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                 {"role": "assistant", "content": "x"}, {"role": "user", "content": "v"}]) == \
        "System: s\n\nUser: u\n\nAssistant: x\n\nUser: v"


def test_times_are_written_as_go_writes_rfc3339_nano() -> None:
    assert rfc3339_nano(None) == ZERO_TIME == "0001-01-01T00:00:00Z"
    assert rfc3339_nano(1_700_000_000_000_000_000) == "2023-11-14T22:13:20Z"
    assert rfc3339_nano(1_700_000_000_123_456_789) == "2023-11-14T22:13:20.123456789Z"
    assert rfc3339_nano(1_700_000_000_120_000_000) == "2023-11-14T22:13:20.12Z"  # trailing zeros cut


def test_the_public_handle_is_a_uuid_that_does_not_reveal_the_connection_id() -> None:
    agent_id = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
    handle = public_handle(agent_id)
    assert handle == public_handle(agent_id) and handle != agent_id and len(handle) == 36
    assert agent_id[:8] not in handle


@pytest.mark.parametrize(("raw", "expected"), [
    (b'{"content": "hi"}', {"content": "hi"}),
    (b'{}', {"content": ""}),
    (b'{"content": null, "conversation_id": "", "parent_id": ""}', {"content": ""}),
    (b'{"content": "x", "conversation_id": "c", "parent_id": "p"}',
     {"content": "x", "conversation_id": "c", "parent_id": "p"}),
    (b'{"content": "x", "conversation_id": "c"}', None),
    (b'{"content": "x", "parent_id": "p"}', None),
    (b'{"content": 1}', None),
    (b'[]', None),
    (b'not json', None),
])
def test_ask_bodies_as_the_seed_reads_them(raw: bytes, expected: dict[str, str] | None) -> None:
    assert _ask(raw) == expected


def test_bus_errors_become_the_seed_s_bodies() -> None:
    cases = [
        (AgentConversationUnknown("x"), 500, {"error": "Conversation doesn't exists"}),
        (AgentGone("x"), 500, {"error": "Connection no longer exists"}),
        (AgentPingFailed("x"), 503, {"error": "Ping failed"}),
        (AgentLost("why"), 500, {"error": "Failed to read response from the client", "err": "why"}),
        (NoCapacity("x"), 503, {"error": "No available clients"}),
    ]
    for err, status, body in cases:
        rebuilt = from_wire(err.to_wire())  # as they arrive from a bridge
        assert type(rebuilt) is type(err)
        assert seed_error(rebuilt) == (status, body)
        assert not rebuilt.retryable
