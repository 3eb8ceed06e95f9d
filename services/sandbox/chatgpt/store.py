"""Per-user conversation trees (fact sheet §3.1, §3.2): nodes keyed by id, parent links, children in
creation order (several children = regenerated variants), `current_node` the leaf last answered."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

Message = dict[str, Any]  # one message object exactly as streamed and stored (§2.4)


@dataclass(slots=True)
class Node:
    id: str
    message: Message | None  # None for the synthetic root
    parent: str | None
    children: list[str] = field(default_factory=list)
    # not on the wire: what an assistant node answered, so `variant` and `continue` can go on from it
    seed_text: str = ""  # the user text its words come from
    choice: int = 0  # which word sequence (variants take the next one)
    words_done: int = 0  # words of that sequence written so far, continuations included

    def json(self) -> dict[str, Any]:
        return {"id": self.id, "message": self.message, "parent": self.parent, "children": self.children}


@dataclass(slots=True)
class Conversation:
    id: str
    title: str
    create_time: float
    update_time: float
    mapping: dict[str, Node]
    current_node: str
    visible: bool = True
    archived: bool = False

    def add(self, node: Node) -> None:
        self.mapping[node.id] = node
        if node.parent is not None:
            self.mapping[node.parent].children.append(node.id)

    def role_of(self, node_id: str) -> str | None:
        node = self.mapping.get(node_id)
        return None if node is None or node.message is None else str(node.message["author"]["role"])

    def first_user_text(self) -> str:
        for node in self.mapping.values():  # insertion order: the first user message stored
            if node.message is not None and node.message["author"]["role"] == "user":
                return str(node.message["content"]["parts"][0])
        return ""

    def json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "create_time": self.create_time,
            "update_time": self.update_time,
            "mapping": {node_id: node.json() for node_id, node in self.mapping.items()},
            "moderation_results": [],
            "current_node": self.current_node,
            "plugin_ids": None,
            "conversation_id": self.id,
            "conversation_template_id": None,
            "gizmo_id": None,
            "is_archived": self.archived,
        }

    def list_item(self) -> dict[str, Any]:
        return {
            "id": self.id, "title": self.title, "create_time": iso(self.create_time),
            "update_time": iso(self.update_time), "mapping": None, "current_node": None,
            "conversation_template_id": None, "gizmo_id": None, "is_archived": self.archived, "workspace_id": None,
        }


def iso(epoch: float) -> str:
    """The list's time format: `2024-03-29T02:56:00.793473+00:00`."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="microseconds")


class Store:
    def __init__(self) -> None:
        self._by_user: dict[str, dict[str, Conversation]] = {}

    def add(self, user: str, conversation: Conversation) -> None:
        self._by_user.setdefault(user, {})[conversation.id] = conversation

    def get(self, user: str, conversation_id: str) -> Conversation | None:
        """A visible conversation of `user`; hidden ones and other users' are unknown here."""
        conversation = self._by_user.get(user, {}).get(conversation_id)
        return conversation if conversation is not None and conversation.visible else None

    def get_any(self, user: str, conversation_id: str) -> Conversation | None:
        """Hidden ones included (PATCH answers success on them without reviving them)."""
        return self._by_user.get(user, {}).get(conversation_id)

    def page(self, user: str, offset: int, limit: int, order: str, archived: bool) -> tuple[list[Conversation], int]:
        shown = [c for c in self._by_user.get(user, {}).values() if c.visible and c.archived == archived]
        if order == "created":
            shown.sort(key=lambda c: c.create_time, reverse=True)
        else:
            shown.sort(key=lambda c: c.update_time, reverse=True)
        return shown[offset : offset + limit], len(shown)

    def hide_all(self, user: str) -> None:
        for conversation in self._by_user.get(user, {}).values():
            conversation.visible = False

    def reset(self) -> None:
        self._by_user.clear()
