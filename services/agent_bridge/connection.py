"""One connected browser agent: its socket, the one task that reads it, its pings and its asks.

Where the seed server has bugs (agent-protocol.md §4.6, §3.6, §4.3), this does not copy them: one
reader per socket feeds every frame to the trackers of libs/agents/pending.py, which match it by
id, so a late pong is never taken for an answer and two waiters never read one socket. A frame
nobody waits for is dropped with a log line that never quotes it (an agent may echo prompts).

The agent's connection id is the credential that lets a socket take its place (§3.4): it stays in
this object and is never logged, announced or put on the bus; `handle`, a UUID derived from it by
SHA-256, names the agent everywhere else (logs, the conversation map, /api/connections, subjects).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from typing import Any

from starlette.websockets import WebSocket, WebSocketState

from libs.agents.pending import JobTracker, Match, PingTracker
from libs.agents.protocol import (
    AgentError,
    ChatGptRequest,
    ChatGptResponse,
    ConnectionIdReply,
    Pong,
    ProtocolError,
    parse_agent_frame,
)
from libs.errors import AgentFailed, AgentLost, AgentTimeout

log = logging.getLogger("switchyard.agent_bridge")

ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's zero time, as the seed shows a never-used agent


def public_handle(agent_id: str) -> str:
    """The agent's public name: a UUID from the SHA-256 of its connection id (not reversible)."""
    return str(uuid.UUID(bytes=hashlib.sha256(agent_id.encode()).digest()[:16], version=4))


def rfc3339_nano(ns: int | None) -> str:
    """A unix time in nanoseconds as Go's time.RFC3339Nano writes it in UTC (trailing zeros cut)."""
    if ns is None:
        return ZERO_TIME
    seconds, fraction = divmod(ns, 1_000_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    digits = f"{fraction:09d}".rstrip("0")
    return f"{text}.{digits}Z" if digits else f"{text}Z"


class AgentConnection:
    def __init__(self, ws: WebSocket, agent_id: str, *, ping_timeout: float, job_timeout: float) -> None:
        self.ws = ws
        self._agent_id = agent_id  # the reclaim credential: stays here
        self.handle = public_handle(agent_id)
        self.heartbeat_ns = time.time_ns()  # registered, or its last answer delivered (§3.5)
        self.last_message_ns: int | None = None  # its last ask written (None: never; Go's zero time)
        self.last_used = 0.0  # monotonic, for LRU (0: never used, first in line)
        self.busy = False  # leased by one ask (registry.py)
        self.closed = asyncio.Event()
        self._pings = PingTracker(timeout=ping_timeout)
        self._jobs = JobTracker(timeout=job_timeout)
        self._waiters: dict[str, asyncio.Future[Any]] = {}
        self._send_lock = asyncio.Lock()

    def same_agent(self, agent_id: str) -> bool:
        return agent_id == self._agent_id

    def view(self, bridge: str) -> dict[str, Any]:
        """The seed's /api/connections entry, with this bridge's extras; no secret."""
        return {"Ws": {}, "Id": self.handle, "Heartbeat": rfc3339_nano(self.heartbeat_ns),
                "LastMessageTime": rfc3339_nano(self.last_message_ns), "bridge": bridge,
                "state": "busy" if self.busy else "idle"}

    # ---- the one reader

    async def read_forever(self) -> None:
        """Read frames until the socket closes; then every waiter fails with AgentLost."""
        try:
            while True:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    return
                frame = message.get("text")
                if frame is None:
                    frame = message.get("bytes") or b""
                self._dispatch(frame)
        except Exception as exc:  # a broken socket ends the agent like a close
            log.info("agent %s: socket read failed (%s)", self.handle, type(exc).__name__)
        finally:
            self.closed.set()
            for id_, waiter in list(self._waiters.items()):
                if not waiter.done():
                    waiter.set_exception(AgentLost("the agent disconnected before it answered"))
                self._waiters.pop(id_, None)

    def _dispatch(self, frame: str | bytes) -> None:
        try:
            msg = parse_agent_frame(frame)
        except ProtocolError as exc:
            waiter = self._waiters.get(exc.frame_id or "")
            # an answer to our ask that is no ChatGptResponse (the seed's "Failed to convert")
            if (exc.frame_id and waiter is not None and not waiter.done()
                    and self._jobs.receive(AgentError(exc.frame_id, "")) is Match.MATCHED):
                waiter.set_exception(AgentFailed("the agent answered with data that is not a ChatGptResponse"))
                return
            log.info("agent %s: dropped an unreadable frame: %s", self.handle, exc)
            return
        if isinstance(msg, Pong):
            match = self._pings.receive(msg)
        elif isinstance(msg, ChatGptResponse | AgentError):
            match = self._jobs.receive(msg)
        else:
            assert isinstance(msg, ConnectionIdReply)
            log.info("agent %s: dropped a second registration reply", self.handle)
            return
        waiter = self._waiters.get(msg.id)
        if match is Match.MATCHED and waiter is not None and not waiter.done():
            waiter.set_result(msg)
        elif match is not Match.MATCHED:
            log.info("agent %s: dropped a %s reply nobody waits for (%s)", self.handle,
                     type(msg).__name__, match.value)

    # ---- writes

    async def send(self, frame: str) -> None:
        async with self._send_lock:
            await self.ws.send_text(frame)

    async def _await(self, id_: str, frame: str, timeout: float) -> Any:  # noqa: ASYNC109  # the tracker's limit
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters[id_] = waiter
        try:
            if self.closed.is_set():
                raise AgentLost("the agent disconnected before it answered")
            try:
                await self.send(frame)
            except Exception:
                raise AgentLost("the ask could not be written to the agent's socket") from None
            return await asyncio.wait_for(waiter, timeout)
        finally:
            self._waiters.pop(id_, None)

    async def ping(self) -> bool:
        """True if the agent answered a ping within the limit (§3.6)."""
        id_, frame = self._pings.send()
        try:
            await self._await(id_, frame, self._pings.timeout)
        except (TimeoutError, AgentLost):
            self._pings.expire()
            self._pings.cancel(id_)
            return False
        return True

    async def ask(self, request: ChatGptRequest) -> ChatGptResponse:
        """The agent's answer; AgentFailed (error frame, unreadable data), AgentTimeout, AgentLost."""
        self.last_message_ns = time.time_ns()
        frame = self._jobs.send(request)
        try:
            answer = await self._await(request.id, frame, self._jobs.timeout)
        except TimeoutError:
            self._jobs.expire()
            self._jobs.cancel(request.id)
            raise AgentTimeout(f"the agent did not answer within {self._jobs.timeout:g} s") from None
        if isinstance(answer, AgentError):
            raise AgentFailed("the agent answered with an error frame")
        self.heartbeat_ns = time.time_ns()
        assert isinstance(answer, ChatGptResponse)
        return answer

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.ws.application_state is not WebSocketState.DISCONNECTED:
                await self.ws.close()
