"""agent-bridge's backend: the browser agents connected to this process, as the `agents` pool.

Jobs: `agent` (one /api/ask: asks.py) and `chat` for the AGENT_MODELS (the messages folded into
one prompt, prompt.py; the agent's whole answer delivered as one delta and a finish). The agents
arrive on the websocket route /client/register (socket_route.py), served on the worker's own HTTP
port. This replica pulls only as many jobs as it has idle agents (`admission`), so a job waits in
the queue, where any bridge with an idle agent takes it. Each bridge announces its agents as the
pool's accounts ({total, free}): the edge sums them over the live bridges to know whether any
agent is connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from prometheus_client import Counter, Gauge
from starlette.routing import BaseRoute, WebSocketRoute

import proto
from libs.account_pool.conversations import ConversationMap
from libs.errors import AgentFailed, InvalidRequest, SwitchyardError, UpstreamError
from libs.worker_backend import Item, Result, StreamEnd, WholeAnswer
from libs.worker_metrics import WorkerMetrics
from proto.messages import AccountsState, Feature, Job, Kind
from services.agent_bridge.asks import Asker, forward_reply
from services.agent_bridge.config import BridgeConfig
from services.agent_bridge.prompt import fold
from services.agent_bridge.registry import Agents
from services.agent_bridge.socket_route import AgentSockets

log = logging.getLogger("switchyard.agent_bridge")

CONVERSATION_TTL = 7 * 24 * 3600.0  # as the web workers': one bucket, one TTL


class _Admission:
    """The runtime's admission: no more jobs pulled than idle agents here."""

    def __init__(self, agents: Agents) -> None:
        self._agents = agents

    def available(self) -> int:
        return self._agents.idle()

    def listen(self, wake: Callable[[], None]) -> None:
        self._agents.listen(wake)

    async def stop(self) -> None:
        return None


class AgentBackend:
    def __init__(self, config: BridgeConfig, metrics: WorkerMetrics, *, pool: str, worker_id: str) -> None:
        self.config = config
        self.features: list[Feature] = ["chat"]
        self._serves: dict[str, list[Kind]] = {m: ["chat", "agent"] for m in config.models}
        self.pool = pool
        self.worker_id = worker_id
        self.agents = Agents()
        self.admission = _Admission(self.agents)
        self._nc: NATS | None = None
        self._asker: Asker | None = None
        self._subs: dict[str, Any] = {}  # agent handle → its forwarding subscription
        self._connections_sub: Any = None
        self._forwarded: set[asyncio.Task[None]] = set()
        # the runtime's announce (worker_main sets it): an agent that joins or leaves is told to the
        # edges at once, not at the next beat, so /api/ask knows whether any agent is connected
        self.announcer: Callable[[], Awaitable[None]] | None = None
        self._announcing: set[asyncio.Task[None]] = set()
        registry = metrics.registry
        self._connected = Gauge("switchyard_agents_connected", "Browser agents connected to this bridge",
                                registry=registry)
        self._connected.set_function(lambda: len(self.agents))
        self.asks = Counter("switchyard_agent_asks", "Asks run on this bridge's agents, by outcome",
                            ["outcome"], registry=registry)
        self.sockets = AgentSockets(self)

    @property
    def serves(self) -> Mapping[str, Sequence[Kind]]:
        return self._serves

    def routes(self) -> list[BaseRoute]:
        return [WebSocketRoute("/client/register", self.sockets.endpoint)]

    async def attach_bus(self, nc: NATS) -> None:
        self._nc = nc
        self._connections_sub = await nc.subscribe(proto.AGENT_CONNECTIONS_SUBJECT, cb=self._on_connections)

    async def attach(self, js: JetStreamContext) -> None:
        assert self._nc is not None, "attach_bus() runs first"
        self._asker = Asker(self.agents, ConversationMap(js, ttl=CONVERSATION_TTL), self._nc, pool=self.pool,
                             probe_timeout=self.config.ping_timeout)

    @property
    def asker(self) -> Asker | None:
        return self._asker

    def accounts_state(self) -> AccountsState:
        return {"total": len(self.agents), "free": self.agents.idle(), "retry_at": None}

    # ---- jobs

    async def stream(self, job: Job, body: dict[str, Any]) -> AsyncIterator[Item]:
        if self._asker is None:
            raise UpstreamError("the bridge is not attached to the bus yet")
        now = time.time()
        deadline = min(job["deadline"], now + self.config.job_timeout + 2 * self.config.ping_timeout)
        wait_until = max(job["start_by"], now + 0.5)
        if job["kind"] == "agent":
            ask = {k: body[k] for k in ("content", "conversation_id", "parent_id", "message_id")
                   if isinstance(body.get(k), str)}
        elif job["kind"] == "chat":
            messages = body.get("messages")
            ask = {"content": fold(messages if isinstance(messages, list) else [])}
        else:
            raise InvalidRequest(f"agent-bridge does not run {job['kind']} jobs")
        yield WholeAnswer()  # the agent answers in one piece, within its own limit
        try:
            handle, result = await self._asker.ask(ask, deadline=deadline, wait_until=wait_until)
        except SwitchyardError as err:
            self.asks.labels(outcome=err.code).inc()
            raise
        self.asks.labels(outcome="ok").inc()
        if job["kind"] == "agent":
            yield Result(result)
        else:
            if result["error"]:
                raise AgentFailed("the agent answered with an error")
            yield [{"index": 0, "delta": {"role": "assistant", "content": result["content"]}, "finish_reason": None}]
            yield [{"index": 0, "delta": {}, "finish_reason": "stop"}]
        yield StreamEnd(account=handle)

    # ---- the bus: forwarded asks, takeovers, /api/connections

    def _announce_soon(self) -> None:
        if self.announcer is None:
            return

        async def announce() -> None:
            assert self.announcer is not None
            with contextlib.suppress(Exception):
                await self.announcer()

        task = asyncio.create_task(announce())
        self._announcing.add(task)
        task.add_done_callback(self._announcing.discard)

    async def agent_joined(self, handle: str) -> None:
        """Tell any other bridge still holding this agent to let go, then take its asks here."""
        nc = self._nc
        if nc is None:
            return
        subject = proto.agent_subject(handle)
        with contextlib.suppress(Exception):
            await nc.publish(subject, orjson.dumps({"type": "takeover", "bridge": self.worker_id}))
        if handle not in self._subs:
            self._subs[handle] = await nc.subscribe(subject, cb=self._on_forward)
        if self.announcer is not None:  # before the agent takes asks: the edges know at once
            with contextlib.suppress(Exception):
                await self.announcer()

    async def agent_left(self, handle: str) -> None:
        if self.agents.get(handle) is not None:
            return  # the same agent on a new socket here: keep its subscription
        self._announce_soon()
        sub = self._subs.pop(handle, None)
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _on_forward(self, msg: Msg) -> None:
        try:
            request = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            return
        handle = msg.subject.rsplit(".", 1)[1]
        if request.get("type") == "probe":
            if self.agents.get(handle) is not None:
                with contextlib.suppress(Exception):
                    await msg.respond(b'{"held":true}')
            return
        if request.get("type") == "takeover":
            conn = self.agents.get(handle)
            if conn is not None and request.get("bridge") != self.worker_id:
                log.info("agent %s registered with another bridge: closing its socket here", handle)
                self.agents.remove(conn)
                await conn.close()
            return
        task = asyncio.create_task(self._run_forwarded(msg, handle, request))
        self._forwarded.add(task)
        task.add_done_callback(self._forwarded.discard)

    async def _run_forwarded(self, msg: Msg, handle: str, request: dict[str, Any]) -> None:
        assert self._asker is not None
        result: dict[str, Any] | None = None
        error: SwitchyardError | None = None
        try:
            result = await self._asker.on_agent(handle, request["body"], float(request["deadline"]))
            self.asks.labels(outcome="ok").inc()
        except SwitchyardError as err:
            error = err
            self.asks.labels(outcome=err.code).inc()
        except Exception as exc:
            error = UpstreamError(f"bridge failure: {type(exc).__name__}")
        with contextlib.suppress(Exception):
            await msg.respond(forward_reply(result, error))

    async def _on_connections(self, msg: Msg) -> None:
        views = [conn.view(self.worker_id) for conn in self.agents.all()]
        with contextlib.suppress(Exception):
            await msg.respond(orjson.dumps({"bridge": self.worker_id, "connections": views}))

    async def aclose(self) -> None:
        """Drain's last step (the runtime has finished its jobs): forwarded asks finish, sockets close."""
        self.sockets.draining = True
        if self._forwarded:
            await asyncio.wait(set(self._forwarded), timeout=self.config.job_timeout)
        for conn in self.agents.all():
            self.agents.remove(conn)
            await conn.close()
        for sub in [*self._subs.values(), self._connections_sub]:
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
        self._subs.clear()
