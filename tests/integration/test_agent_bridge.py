"""agent-bridge's leases and failures with real bridges, edges and agents: two agents busy at
once, an agent that dies mid-job or stays silent, a ping that fails, a follow-up forwarded to the
bridge that holds its agent, an agent that reconnects with its id."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable

import httpx
import orjson
from websockets.asyncio.client import connect

from tests.conftest import TIME_SCALE
from tests.integration.agent_stack import (
    STEP,
    AgentStack,
    agent_stack,
    ask,
    connections,
    fake_agents,
    no_agents_left,
    speaker,
    start_bridge,
    wait_connections,
)

__all__ = ["agent_stack"]  # the module's fixture

JOB_LIMIT = 120 * TIME_SCALE  # the seed's answer limit, scaled as the bridges scale it


async def timed(coro: Awaitable[httpx.Response]) -> tuple[float, httpx.Response]:
    started = time.monotonic()
    result = await coro
    return time.monotonic() - started, result


async def test_two_agents_answer_at_once_and_a_third_ask_waits_for_one(agent_stack: AgentStack) -> None:
    delay = 2.0
    async with fake_agents(agent_stack, 0, "duo", "--count", "2", expect=2):
        asks = [timed(ask(agent_stack.edges[i % 2], {"content": f"slow {i} [agent delay_ms={int(delay * 1000)}]"}))
                for i in range(3)]
        results = sorted(await asyncio.gather(*asks), key=lambda r: r[0])
    answers = [r[1] for r in results]
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    first, second, third = (a.json() for a in answers)
    timeline = [(round(took, 2), response.json()["content"]) for took, response in results]
    assert {speaker(first), speaker(second)} == {"duo-1", "duo-2"}, timeline  # one each, at once
    assert results[1][0] < 2 * delay - 0.2, "the two asks ran one after the other"
    # the third waited in the queue for an idle agent (no agent takes two asks at once)
    assert results[2][0] >= 2 * delay - 0.1
    assert speaker(third) in ("duo-1", "duo-2")
    await no_agents_left(agent_stack)


async def test_a_follow_up_is_forwarded_to_the_bridge_holding_its_agent(agent_stack: AgentStack) -> None:
    one, two = agent_stack.edges
    async with fake_agents(agent_stack, 0, "left", expect=1), fake_agents(agent_stack, 1, "right", expect=2):
        first = (await ask(one, {"content": "start"})).json()
        who = speaker(first)
        conv = first["conversation_id"]
        # the agent's bridge has no idle agent while it answers this slow turn, so the next
        # follow-up can only be pulled by the other bridge, which forwards it to the holder
        slow = asyncio.create_task(ask(one, {"content": "slow [agent delay_ms=1500]", "conversation_id": conv,
                                             "parent_id": first["response_id"]}))
        await asyncio.sleep(0.5)
        follow = await ask(two, {"content": "queued", "conversation_id": conv, "parent_id": first["response_id"]})
        assert (await slow).status_code == 200
        assert follow.status_code == 200, follow.text
        assert follow.json()["content"] == f"{who} #3: queued"
    await no_agents_left(agent_stack)


async def test_an_agent_that_dies_mid_job_is_removed_and_its_conversations_say_so(agent_stack: AgentStack) -> None:
    edge = agent_stack.edges[0]
    async with fake_agents(agent_stack, 0, "doomed", expect=1):
        first = (await ask(edge, {"content": "hello"})).json()
        assert speaker(first) == "doomed"
        doomed_id = (await connections(edge))[0]["Id"]
        async with fake_agents(agent_stack, 1, "other", expect=2):
            died = await ask(edge, {"content": "[agent die]", "conversation_id": first["conversation_id"],
                                    "parent_id": first["response_id"]})
            assert died.status_code == 500
            assert died.json()["error"] == "Failed to read response from the client"
            listed = await connections(edge)
            assert [e["Id"] for e in listed] != [doomed_id] and len(listed) == 1
            gone = await ask(agent_stack.edges[1], {"content": "are you there", "conversation_id":
                                                    first["conversation_id"], "parent_id": first["response_id"]})
            assert (gone.status_code, gone.json()) == (500, {"error": "Connection no longer exists"})
            fresh = await ask(edge, {"content": "new"})
            assert speaker(fresh.json()) == "other"
    await no_agents_left(agent_stack)


async def test_a_silent_agent_times_out_within_the_limit_and_is_removed(agent_stack: AgentStack) -> None:
    edge = agent_stack.edges[1]
    async with fake_agents(agent_stack, 1, "quiet", expect=1):
        took, response = await timed(ask(edge, {"content": "[agent silent]"}, timeout=JOB_LIMIT * 3))
        assert response.status_code == 500, response.text
        assert response.json()["error"] == "Failed to read response from the client"
        assert JOB_LIMIT * 0.9 <= took < JOB_LIMIT + 5
        assert await connections(edge) == []
    await no_agents_left(agent_stack)


async def test_an_agent_that_misses_its_ping_is_dropped_and_another_answers(agent_stack: AgentStack) -> None:
    # a hand-made agent that registers and then answers nothing: first in line (never used, first in)
    async with connect(agent_stack.ws(0), ping_interval=None) as mute:
        offer = orjson.loads(await asyncio.wait_for(mute.recv(), STEP))
        await mute.send(orjson.dumps({"id": offer["id"], "message": "Connection id", "data": ""}).decode())
        async with fake_agents(agent_stack, 0, "good", expect=2):
            response = await ask(agent_stack.edges[0], {"content": "ping first"})
            assert response.status_code == 200, response.text
            assert speaker(response.json()) == "good"
            await asyncio.wait_for(mute.wait_closed(), STEP)  # the bridge closed the mute one's socket
            assert len(await connections(agent_stack.edges[0])) == 1
    await no_agents_left(agent_stack)


async def test_an_agent_reconnecting_with_its_id_keeps_its_conversations(agent_stack: AgentStack) -> None:
    edge = agent_stack.edges[0]
    async with fake_agents(agent_stack, 0, "phoenix", "--reconnect-ms", "100", expect=1) as phoenix:
        first = (await ask(edge, {"content": "remember me"})).json()
        died = await ask(edge, {"content": "[agent die]"})
        assert died.status_code == 500
        loop = asyncio.get_running_loop()
        until = loop.time() + STEP
        while len(await connections(edge)) != 1:  # back, under the same id
            assert loop.time() < until
            await asyncio.sleep(0.05)
        follow = await ask(agent_stack.edges[1], {"content": "still me", "conversation_id": first["conversation_id"],
                                                  "parent_id": first["response_id"]})
        assert follow.status_code == 200, follow.text
        assert speaker(follow.json()) == "phoenix"
        assert len(set(phoenix.ids.values())) == 1
    await no_agents_left(agent_stack)


async def test_sigterm_drains_the_bridge_the_running_ask_finishes_and_sockets_close(agent_stack: AgentStack) -> None:
    bridge = start_bridge(agent_stack.nats_url, agent_stack.log_dir, "bridge-c")
    try:
        agent_stack.bridges.append(bridge)
        async with fake_agents(agent_stack, 2, "leaving", expect=1) as leaving:
            running = asyncio.create_task(ask(agent_stack.edges[0], {"content": "slow [agent delay_ms=1500]"}))
            loop = asyncio.get_running_loop()
            until = loop.time() + STEP
            while [c["state"] for c in await connections(agent_stack.edges[0])] != ["busy"]:
                assert loop.time() < until and not running.done()
                await asyncio.sleep(0.02)
            bridge.signal(signal.SIGTERM)
            answered = await running
            assert answered.status_code == 200 and speaker(answered.json()) == "leaving", answered.text
            assert await asyncio.to_thread(bridge.popen.wait, STEP) == 0
            # the bridge closed the agent's socket on its way out (the fake says so)
            until = loop.time() + STEP
            while not any("closed" in line for line in leaving.output):
                assert loop.time() < until, leaving.output
                await asyncio.sleep(0.02)
    finally:
        agent_stack.bridges.remove(bridge)
        bridge.stop()
    await no_agents_left(agent_stack)


async def test_an_agent_reclaiming_its_id_on_another_bridge_takes_its_place(agent_stack: AgentStack) -> None:
    # by hand, as an agent whose page reloaded behind a load balancer: same stored id, other bridge
    async with connect(agent_stack.ws(0), ping_interval=None) as before:
        offer = orjson.loads(await asyncio.wait_for(before.recv(), STEP))
        agent_id = offer["id"]
        await before.send(orjson.dumps({"id": agent_id, "message": "Connection id", "data": ""}).decode())
        listed = await wait_connections(agent_stack.edges[0], 1)
        assert listed[0]["bridge"] == "bridge-a"
        async with connect(agent_stack.ws(1), ping_interval=None) as after:
            await asyncio.wait_for(after.recv(), STEP)  # offered a fresh id: the agent sends its own
            await after.send(orjson.dumps({"id": agent_id, "message": "Connection id", "data": ""}).decode())
            await asyncio.wait_for(before.wait_closed(), STEP)  # bridge-a let the old socket go
            loop = asyncio.get_running_loop()
            until = loop.time() + STEP
            while [c["bridge"] for c in await connections(agent_stack.edges[0])] != ["bridge-b"]:
                assert loop.time() < until
                await asyncio.sleep(0.02)
            assert (await connections(agent_stack.edges[0]))[0]["Id"] == listed[0]["Id"]  # the same agent
    await no_agents_left(agent_stack)
