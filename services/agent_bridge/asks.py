"""One ask (`{content, conversation_id?, parent_id?, message_id?}`) answered by an agent.

A new conversation goes to the least recently used idle agent of this bridge, pinged first; one
that does not answer its ping is dropped (its socket closed) and the next one is tried, 3 agents at
most, as the seed did (§4.2). A follow-up goes to the agent holding the conversation (the map in
the KV bucket SY_V1_CONVERSATIONS, key `{pool}.c.{conversation}` → the agent's public handle): on
this bridge if it holds the agent, else forwarded over core NATS to the bridge that does (the one
subscribed to proto.agent_subject(handle)); no subscriber means the agent is gone.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

import proto
from libs.account_pool.conversations import ConversationMap
from libs.agents.handshake import new_id
from libs.agents.protocol import ChatGptRequest, ChatGptResponse
from libs.errors import (
    AccountsBusy,
    AgentConversationUnknown,
    AgentGone,
    AgentLost,
    AgentPingFailed,
    AgentTimeout,
    SwitchyardError,
    from_wire,
)
from services.agent_bridge.connection import AgentConnection
from services.agent_bridge.registry import Agents

log = logging.getLogger("switchyard.agent_bridge")

MAX_TRIES = 3  # agents pinged for a new conversation (the seed's 3 attempts)
Body = dict[str, Any]


def result_body(answer: ChatGptResponse) -> Body:
    """proto/schemas/v1/agent_result.json: the seed's /api/ask answer."""
    return {"id": answer.data_id, "response_id": answer.response_id, "conversation_id": answer.conversation_id,
            "content": answer.content, "error": answer.error}


def _request(body: Body) -> ChatGptRequest:
    return ChatGptRequest(
        id=new_id(), message_id=body.get("message_id") or new_id(),
        conversation_id=body.get("conversation_id") or "",
        parent_id=body.get("parent_id") or new_id(),  # a new conversation's root, as the seed made it
        content=body.get("content") or "",
    )


class Asker:
    def __init__(self, agents: Agents, conversations: ConversationMap, nc: NATS, *, pool: str,
                 probe_timeout: float) -> None:
        self.agents = agents
        self.probe_timeout = probe_timeout
        self.conversations = conversations
        self.nc = nc
        self.pool = pool

    async def drop(self, conn: AgentConnection, why: str) -> None:
        """Out of the pool for good: its socket closed (the agent reconnects to come back)."""
        if self.agents.remove(conn):
            log.warning("agent %s removed: %s", conn.handle, why)
        await conn.close()

    async def ask(self, body: Body, *, deadline: float, wait_until: float) -> tuple[str, Body]:
        """(the answering agent's handle, the result body). `wait_until`: how long a new
        conversation may wait for an idle agent here (then AccountsBusy: another replica may)."""
        if body.get("conversation_id"):
            return await self._follow_up(body, deadline)
        return await self._new(body, deadline, wait_until)

    async def _new(self, body: Body, deadline: float, wait_until: float) -> tuple[str, Body]:
        tried: list[str] = []
        for attempt in range(MAX_TRIES):
            wait = wait_until - time.time() if attempt == 0 else 0.0
            conn = await self.agents.lease_any(tried, wait)
            if conn is None:
                if attempt == 0:
                    raise AccountsBusy("every agent of this bridge stayed busy; retry later", retry_after=1.0)
                break
            tried.append(conn.handle)
            try:
                if not await conn.ping():
                    await self.drop(conn, "it did not answer its ping")
                    continue
                return conn.handle, await self._answer(conn, body, deadline)
            finally:
                self.agents.release(conn)
        raise AgentPingFailed(f"{len(tried)} agent(s) did not answer their ping")

    async def _follow_up(self, body: Body, deadline: float) -> tuple[str, Body]:
        handle = await self.conversations.owner(self.pool, body["conversation_id"])
        if handle is None:
            raise AgentConversationUnknown("no agent holds this conversation (unknown or forgotten)",
                                           param="conversation_id")
        if self.agents.get(handle) is not None:
            return handle, await self.on_agent(handle, body, deadline)
        return handle, await self._forward(handle, body, deadline)

    async def on_agent(self, handle: str, body: Body, deadline: float) -> Body:
        """The ask on that agent of this bridge, once it is idle (asks on one agent queue here)."""
        conn = await self.agents.lease(handle, deadline - time.time())
        if conn is False:
            raise AgentGone("the agent holding this conversation is no longer connected")
        if conn is None:
            raise AgentTimeout("the agent holding this conversation stayed busy past the time limit")
        assert isinstance(conn, AgentConnection)
        try:
            if not await conn.ping():
                await self.drop(conn, "it did not answer its ping")
                raise AgentPingFailed("the agent holding this conversation did not answer its ping")
            return await self._answer(conn, body, deadline)
        finally:
            self.agents.release(conn)

    async def _answer(self, conn: AgentConnection, body: Body, deadline: float) -> Body:
        try:
            answer = await conn.ask(_request(body))
        except (AgentTimeout, AgentLost) as err:
            await self.drop(conn, err.code)
            raise
        if answer.conversation_id:
            await self.conversations.put_owner(self.pool, answer.conversation_id, conn.handle)
        return result_body(answer)

    async def _held_elsewhere(self, handle: str) -> bool:
        """Whether a bridge holds the agent: a probe its holder answers at once. NATS's "no
        responders" would say it sooner, but any subscriber to `>` (a monitor) suppresses it."""
        try:
            await self.nc.request(proto.agent_subject(handle), orjson.dumps({"type": "probe"}),
                                  timeout=self.probe_timeout)
        except (NoRespondersError, NatsTimeout):
            return False
        return True

    async def _forward(self, handle: str, body: Body, deadline: float) -> Body:
        if not await self._held_elsewhere(handle):
            raise AgentGone("the agent holding this conversation is no longer connected")
        request = {"type": "ask", "job_id": new_id(), "request_id": "", "deadline": deadline, "body": body}
        try:
            msg = await self.nc.request(proto.agent_subject(handle), orjson.dumps(request),
                                        timeout=max(0.1, deadline - time.time()))
        except NoRespondersError:
            raise AgentGone("the agent holding this conversation is no longer connected") from None
        except NatsTimeout:
            raise AgentTimeout("the bridge holding the agent did not answer within the time limit") from None
        reply = orjson.loads(msg.data)
        if "error" in reply:
            raise from_wire(reply["error"])
        result: Body = reply["result"]
        return result


def forward_reply(result: Body | None, error: SwitchyardError | None) -> bytes:
    return orjson.dumps({"error": error.to_wire()} if error is not None else {"result": result})
