"""The body of POST /backend-api/conversation read and checked (fact sheet §2.2): a Turn, or BadRequest
with the `detail` a 400 carries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ACTIONS = frozenset({"next", "variant", "continue"})
ROLES = frozenset({"user", "system", "assistant", "critic", "tool"})


class BadRequest(ValueError):
    """A malformed body: 400 `{"detail": <message>}`."""


@dataclass(slots=True, frozen=True)
class InMessage:
    id: str
    role: str
    text: str


@dataclass(slots=True, frozen=True)
class Turn:
    action: str
    messages: tuple[InMessage, ...]
    parent_message_id: str
    conversation_id: str | None
    model: str

    def last_user_text(self) -> str:
        """The text the answer is made from: the last user message (else the last message)."""
        for m in reversed(self.messages):
            if m.role == "user":
                return m.text
        return self.messages[-1].text if self.messages else ""


def _string(obj: dict[str, Any], key: str, where: str = "") -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{where}{key} must be a non-empty string")
    return value


def _message(raw: Any, i: int) -> InMessage:
    where = f"messages[{i}]."
    if not isinstance(raw, dict):
        raise BadRequest(f"messages[{i}] must be an object")
    message_id = _string(raw, "id", where)
    author = raw.get("author")
    # `author.role`, or only the legacy `role` (the Dec 2022 browser agents sent no `author`)
    if author is not None:
        if not isinstance(author, dict):
            raise BadRequest(f"{where}author must be an object")
        role = author.get("role")
    else:
        role = raw.get("role")
    if role not in ROLES:
        raise BadRequest(f"{where}author.role must be one of {', '.join(sorted(ROLES))}")
    content = raw.get("content")
    if not isinstance(content, dict):
        raise BadRequest(f"{where}content must be an object")
    if content.get("content_type") != "text":
        raise BadRequest(f"{where}content.content_type must be 'text' (the sandbox has no multimodal_text)")
    parts = content.get("parts")
    if not isinstance(parts, list) or not parts or not all(isinstance(p, str) for p in parts):
        raise BadRequest(f"{where}content.parts must be a non-empty list of strings")
    return InMessage(message_id, str(role), "".join(parts))


def parse(body: Any) -> Turn:
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object")
    action = body.get("action")
    if action not in ACTIONS:
        raise BadRequest("action must be one of next, variant, continue")
    raw_messages = body.get("messages")
    if action == "continue" and raw_messages is None:
        messages: tuple[InMessage, ...] = ()
    else:
        if not isinstance(raw_messages, list) or not raw_messages:
            raise BadRequest(f"messages must be a non-empty list for action {action}")
        messages = tuple(_message(raw, i) for i, raw in enumerate(raw_messages))
        if len({m.id for m in messages}) != len(messages):
            raise BadRequest("messages ids must be distinct")
    parent = _string(body, "parent_message_id")
    conversation_id = body.get("conversation_id")
    if conversation_id is not None and (not isinstance(conversation_id, str) or not conversation_id):
        raise BadRequest("conversation_id must be a non-empty string or null")
    if action != "next" and conversation_id is None:
        raise BadRequest(f"action {action} needs a conversation_id")
    model = _string(body, "model")
    return Turn(str(action), messages, parent, conversation_id, model)
