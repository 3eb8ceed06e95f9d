"""The conversations of one fake agent's account: which ids a follow-up may name (agent-protocol.md §4.1, §7)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field


class UnknownConversation(LookupError):
    """Upstream would refuse the turn: an unknown conversation_id, or a parent_id foreign to it."""


@dataclass(slots=True)
class Conversation:
    turns: int = 0
    nodes: set[str] = field(default_factory=set)  # every message id of its tree, the root parent included


@dataclass(frozen=True, slots=True)
class Turn:
    conversation_id: str
    response_id: str
    number: int


class Conversations:
    def __init__(self) -> None:
        self._by_id: dict[str, Conversation] = {}

    def turn(self, conversation_id: str, parent_id: str, message_id: str) -> Turn:
        """Record one user message and its answer; returns the ids the answer carries."""
        if conversation_id:
            conv = self._by_id.get(conversation_id)
            if conv is None or parent_id not in conv.nodes:
                raise UnknownConversation(conversation_id)
        else:
            conversation_id = str(uuid.uuid4())
            conv = self._by_id[conversation_id] = Conversation()
            if parent_id:
                conv.nodes.add(parent_id)
        response_id = str(uuid.uuid4())
        conv.turns += 1
        conv.nodes.update((message_id or str(uuid.uuid4()), response_id))
        return Turn(conversation_id, response_id, conv.turns)
