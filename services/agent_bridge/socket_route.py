"""GET /client/register: where browser agents connect (agent-protocol.md §3).

The registration handshake is libs/agents/handshake.py's: the offer, then the agent's reply within
the (scaled) limit, or the socket is closed. An agent reclaiming its stored id replaces its old
socket (§3.4), here or on another bridge (backend.agent_joined), and keeps its conversations,
which are mapped to its handle. The socket then belongs to one reader task until it closes, and
the agent leaves the pool with it.

There is no authentication in the protocol: the route must be reachable only from where the
agents run (an Ingress rule of its own); the agents build exactly ws://host:port/client/register.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from starlette.websockets import WebSocket

from libs.agents.handshake import Registration
from libs.agents.protocol import MAX_FRAME_CHARS, ProtocolError
from services.agent_bridge.connection import AgentConnection

if TYPE_CHECKING:
    from services.agent_bridge.backend import AgentBackend

log = logging.getLogger("switchyard.agent_bridge")

_GOING_AWAY = 1001  # websocket close code: the bridge shuts down
_POLICY = 1008  # websocket close code: the handshake was not followed


class AgentSockets:
    def __init__(self, backend: AgentBackend) -> None:
        self.backend = backend
        self.draining = False

    async def endpoint(self, ws: WebSocket) -> None:
        if self.draining:
            await ws.close(code=_GOING_AWAY)
            return
        await ws.accept()
        config = self.backend.config
        registration = Registration(timeout=config.registration_timeout)
        try:
            await ws.send_text(registration.first_frame())
            message = await asyncio.wait_for(ws.receive(), registration.remaining())
            if message["type"] == "websocket.disconnect":
                return
            frame = message.get("text") or message.get("bytes") or b""
            if len(frame) > MAX_FRAME_CHARS:
                raise ProtocolError("registration frame too long")
            registered = registration.receive(frame)
        except (TimeoutError, ProtocolError) as exc:
            log.info("an agent failed its registration: %s", exc if isinstance(exc, ProtocolError) else "no reply")
            await ws.close(code=_POLICY)
            return
        except Exception:  # the socket went away during the handshake
            return
        conn = AgentConnection(ws, registered.agent_id, ping_timeout=config.ping_timeout,
                               job_timeout=config.job_timeout)
        agents = self.backend.agents
        old = agents.add(conn)
        if old is not None:
            await old.close()
        await self.backend.agent_joined(conn.handle)
        log.info("agent %s registered%s", conn.handle, " again (it kept its id)" if registered.reconnect else "")
        try:
            await conn.read_forever()
        finally:
            if agents.remove(conn):
                log.info("agent %s disconnected", conn.handle)
            await self.backend.agent_left(conn.handle)
