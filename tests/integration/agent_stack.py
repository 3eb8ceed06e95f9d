"""Real processes for the agent tests: two edges and two agent-bridges on the session's NATS (so
the wiretap checks every message), and fake browser agents (services/sandbox/agent) per test."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from libs.devproc import REPO_ROOT, Proc, base_env, free_port, spawn_python_service
from tests.conftest import AUTH_KEY, service_env, start_edge

ADMIN_KEY = "sy-admin-key-agents-0123456789"
STEP = 15.0  # bound of every wait for a process or an agent to show up
_REGISTERED = re.compile(r"agent (\S+) registered as ([0-9a-f-]{36})")


@dataclass
class AgentStack:
    nats_url: str
    log_dir: Any
    edges: list[Proc] = field(default_factory=list)
    bridges: list[Proc] = field(default_factory=list)

    def ws(self, bridge: int) -> str:
        return self.bridges[bridge].url.replace("http://", "ws://") + "/client/register"


def start_bridge(nats_url: str, log_dir: Any, name: str, **extra: str) -> Proc:
    port = free_port()
    env = service_env(nats_url, PORT=str(port), WORKER_ID=name, SY_TIMEOUT_QUEUE_WAIT="30", **extra)
    proc = spawn_python_service(name, "services.agent_bridge", env=env, log_dir=log_dir,
                                health_url=f"http://127.0.0.1:{port}/readyz")
    proc.url = f"http://127.0.0.1:{port}"
    return proc


@pytest.fixture(scope="module")
def agent_stack(nats_server: Proc, wiretap: Any, log_dir: Any) -> Iterator[AgentStack]:
    stack = AgentStack(nats_server.url, log_dir)
    try:
        for i in (1, 2):
            stack.edges.append(start_edge(nats_server.url, log_dir, name=f"edge-ag{i}", ADMIN_KEY=ADMIN_KEY,
                                          SY_TIMEOUT_QUEUE_WAIT="30"))
        for name in ("bridge-a", "bridge-b"):
            stack.bridges.append(start_bridge(nats_server.url, log_dir, name))
        yield stack
    finally:
        for proc in [*stack.bridges, *stack.edges]:
            proc.stop()


async def connections(edge: Proc) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=STEP) as http:
        response = await http.get(edge.url + "/api/connections", headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert response.status_code == 200, response.text
    listed = response.json()["connections"]
    return listed or []


async def wait_connections(edge: Proc, count: int) -> list[dict[str, Any]]:
    loop = asyncio.get_running_loop()
    until = loop.time() + STEP
    while True:
        listed = await connections(edge)
        if len(listed) == count:
            return listed
        if loop.time() > until:
            raise AssertionError(f"{len(listed)} agents connected, not {count}")
        await asyncio.sleep(0.05)


async def ask(edge: Proc, body: Any, *, key: str | None = AUTH_KEY, scheme: str = "",
              timeout: float = 30.0) -> httpx.Response:  # noqa: ASYNC109  # httpx's
    headers = {} if key is None else {"authorization": f"{scheme}{key}"}
    content = body if isinstance(body, bytes) else None
    async with httpx.AsyncClient(timeout=timeout) as http:
        if content is not None:
            return await http.post(edge.url + "/api/ask", content=content, headers=headers)
        return await http.post(edge.url + "/api/ask", json=body, headers=headers)


@dataclass
class FakeAgents:
    proc: asyncio.subprocess.Process
    ids: dict[str, str] = field(default_factory=dict)  # name → the connection id it registered with
    output: list[str] = field(default_factory=list)


@contextlib.asynccontextmanager
async def fake_agents(stack: AgentStack, bridge: int, name: str, *args: str, expect: int) -> AsyncIterator[FakeAgents]:
    """Fake agents on one bridge; returns once `expect` agents in all are connected (edge 0's view);
    on exit they are stopped and gone from every bridge."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.sandbox.agent", "--server", stack.ws(bridge), "--name", name, *args,
        cwd=REPO_ROOT, env=base_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    agents = FakeAgents(proc)

    async def read() -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            text = line.decode(errors="replace")
            agents.output.append(text)
            match = _REGISTERED.search(text)
            if match:
                agents.ids[match.group(1)] = match.group(2)

    reader = asyncio.create_task(read())
    try:
        await wait_connections(stack.edges[0], expect)
        yield agents
    finally:
        if proc.returncode is None:
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), STEP)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(reader, STEP)


async def no_agents_left(stack: AgentStack) -> None:
    await wait_connections(stack.edges[0], 0)
    # the edges learn it from the bridges' announcements: wait until an ask says so
    loop = asyncio.get_running_loop()
    until = loop.time() + STEP
    for edge in stack.edges:
        while (await ask(edge, {"content": "anyone?"})).status_code != 503:
            assert loop.time() < until, "an edge still thinks an agent is connected"
            await asyncio.sleep(0.05)


def speaker(answer: dict[str, Any]) -> str:
    """The fake agent's name in its answer: `<name> #<turn>: <prompt>`."""
    return str(answer["content"]).split(" #", 1)[0]
