"""Which web conversation an OpenAI request continues, and what of it is new.

An OpenAI client sends the whole transcript every time. After a turn the worker stores, under a
hash of the transcript including the answer, where that conversation lives upstream (account,
conversation_id, the answer's message id). A request whose messages up to its last assistant
message hash to a stored key continues that conversation: only the messages after it are sent,
on the same account, under the stored parent. Clients may also name `conversation_id` and
`parent_message_id` themselves (extra body fields), as chat2api's users do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from libs.account_pool.conversations import ConversationMap, transcript_key


@dataclass(frozen=True)
class Thread:
    """A web conversation to continue."""

    account: str
    conversation_id: str
    parent_message_id: str


@dataclass(frozen=True)
class Plan:
    thread: Thread | None  # None: a new conversation
    messages: list[dict[str, Any]]  # the OpenAI messages to send (all of them for a new one)
    explicit: bool = False  # the client named the conversation itself


def _last_assistant(messages: list[dict[str, Any]]) -> int:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "assistant":
            return i
    return -1


def _tail(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What is new after the last assistant message (a named conversation's new turn): at least the last message."""
    cut = _last_assistant(messages)
    tail = messages[cut + 1:]
    return tail or messages[-1:]


class Continuity:
    def __init__(self, conversations: ConversationMap, pool: str) -> None:
        self._map = conversations
        self._pool = pool

    async def plan(self, body: dict[str, Any]) -> Plan:
        messages: list[dict[str, Any]] = body["messages"]
        conversation_id = body.get("conversation_id")
        parent = body.get("parent_message_id")
        if isinstance(conversation_id, str) and conversation_id and isinstance(parent, str) and parent:
            account = await self._map.owner(self._pool, conversation_id)
            if account is not None:
                return Plan(Thread(account, conversation_id, parent), _tail(messages), explicit=True)
            return Plan(None, messages, explicit=True)  # not one of ours: start afresh with the history
        cut = _last_assistant(messages)
        if cut < 0:
            return Plan(None, messages)
        record = await self._map.get(self._pool, transcript_key(messages[: cut + 1]))
        if record is None:
            return Plan(None, messages)
        thread = Thread(str(record["account"]), str(record["conversation_id"]), str(record["parent_message_id"]))
        return Plan(thread, messages[cut + 1:] or messages[-1:])

    async def remember(self, messages: list[dict[str, Any]], answer: str, account: str, conversation_id: str,
                       message_id: str) -> None:
        """After a turn: the transcript with this answer continues on `account` under `message_id`."""
        transcript = [*messages, {"role": "assistant", "content": answer}]
        record = {"account": account, "conversation_id": conversation_id, "parent_message_id": message_id}
        await self._map.put(self._pool, transcript_key(transcript), record)
        await self._map.put_owner(self._pool, conversation_id, account)

    async def owner(self, conversation_id: str) -> str | None:
        return await self._map.owner(self._pool, conversation_id)

    async def claim(self, conversation_id: str, account: str) -> None:
        await self._map.put_owner(self._pool, conversation_id, account)
