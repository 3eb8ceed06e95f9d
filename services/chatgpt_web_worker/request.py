"""The body of `POST /backend-api/conversation`, and OpenAI chat messages turned into its messages.

Fields as 2023-2024 clients send them (fact sheet `chatgpt-web.md` §2.2, chat2api's body for the
2024 ones): a 2023 server ignores the 2024 fields, a 2024 server needs `force_use_sse` to answer
with an event stream rather than a websocket address. `timezone_offset_min` is 0: the gateway's
clients have no browser time zone, and UTC tells the upstream nothing about them.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from libs.errors import InvalidRequest

ACTIONS = ("next", "variant", "continue")

# `developer` is OpenAI's newer name for the system role; the web upstream knows only `system`.
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
_TEXT_ONLY = "ChatGPT web accounts take text only"


def user_message(text: str, role: str = "user") -> dict[str, Any]:
    """One upstream message with a fresh id (the id becomes a node of the conversation tree)."""
    return {
        "id": str(uuid.uuid4()),
        "author": {"role": role},
        "content": {"content_type": "text", "parts": [text]},
        "metadata": {},
    }


def conversation_body(
    *, action: str, messages: Sequence[dict[str, Any]] | None, parent_message_id: str,
    conversation_id: str | None, model: str, history_disabled: bool = False,
) -> dict[str, Any]:
    """The request body. `messages` is left out for `continue` (it carries none); `conversation_id`
    None starts a new conversation (left out, as ChatGPT-to-API does)."""
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {ACTIONS}, not {action!r}")
    body: dict[str, Any] = {"action": action}
    if action != "continue":
        body["messages"] = list(messages or ())
    if conversation_id is not None:
        body["conversation_id"] = conversation_id
    body.update({
        "parent_message_id": parent_message_id,
        "model": model,
        "timezone_offset_min": 0,
        "history_and_training_disabled": history_disabled,
        "conversation_mode": {"kind": "primary_assistant"},
        "force_paragen": False,
        "force_paragen_model_slug": "",
        "force_nulligen": False,
        "force_rate_limit": False,
        "reset_rate_limits": False,
        "force_use_sse": True,
        "suggestions": [],
        "websocket_request_id": str(uuid.uuid4()),
    })
    return body


def openai_to_upstream(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every OpenAI chat message as its own upstream message, role kept (chat2api's way: no prompt
    concatenation; the upstream reads the turns as a conversation). Text only: a tool turn or a
    non-text part is refused, naming the exact field."""
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array.", param="messages")
    out: list[dict[str, Any]] = []
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise InvalidRequest(f"'{where}' must be an object.", param=where)
        role = msg.get("role")
        upstream_role = _ROLES.get(role) if isinstance(role, str) else None
        if upstream_role is None:
            raise InvalidRequest(f"{_TEXT_ONLY}: the role {role!r} of '{where}.role' is not supported "
                                 f"(use system, user or assistant).", param=f"{where}.role")
        for field in ("tool_calls", "function_call", "audio"):
            if msg.get(field):
                raise InvalidRequest(f"{_TEXT_ONLY}: '{where}.{field}' is not supported.", param=f"{where}.{field}")
        out.append(user_message(_text(msg.get("content"), where), upstream_role))
    return out


def _text(content: object, where: str) -> str:
    if isinstance(content, str):
        return content
    if content is None:
        raise InvalidRequest(f"'{where}.content' is required: {_TEXT_ONLY}.", param=f"{where}.content")
    if not isinstance(content, list):
        raise InvalidRequest(f"'{where}.content' must be a string or an array of text parts.",
                             param=f"{where}.content")
    texts: list[str] = []
    for j, part in enumerate(content):
        path = f"{where}.content[{j}]"
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            kind = part.get("type") if isinstance(part, dict) else None
            shown = f"a {kind!r} part" if isinstance(kind, str) else "this part"
            raise InvalidRequest(f"{_TEXT_ONLY}: {shown} at '{path}' is not supported.", param=path)
        texts.append(part["text"])
    # Parts are joined by a line break: words of two parts must not run together.
    return "\n".join(texts)
