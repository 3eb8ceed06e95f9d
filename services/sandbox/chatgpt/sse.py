"""The bytes of a /backend-api/conversation SSE stream (fact sheet §2.4), noise included.

Every stream deterministically carries the things clients had to tolerate: the user message echoed
first (its block ends in `\r\n`), an `event: ping` block whose data is a bare timestamp (all `\r\n`),
one non-JSON `data:` line right after the answer's first (empty) event, then after the final message
a moderation event, a `title_generation` event for new conversations, and `data: [DONE]`.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import orjson

from .store import Message

DONE = b"data: [DONE]\n\n"
NOT_JSON = b"data: sandbox keep-alive, not JSON\n\n"
# the 2023 wording of an in-stream failure (§2.8); the stream ends after it, with no [DONE]
STREAM_ERROR = "Something went wrong, please try reloading the conversation."


def message(
    message_id: str, role: str, text: str, *, status: str, end_turn: bool | None, metadata: dict[str, Any],
    create_time: float | None = None,
) -> Message:
    return {
        "id": message_id,
        "author": {"role": role, "name": None, "metadata": {}},
        "create_time": time.time() if create_time is None else create_time,
        "update_time": None,
        "content": {"content_type": "text", "parts": [text]},
        "status": status,
        "end_turn": end_turn,
        "weight": 1.0,
        "metadata": metadata,
        "recipient": "all",
    }


def event(msg: Message, conversation_id: str, crlf: bool = False) -> bytes:
    data = orjson.dumps({"message": msg, "conversation_id": conversation_id, "error": None})
    return b"data: " + data + (b"\r\n\r\n" if crlf else b"\n\n")


def error_event(conversation_id: str) -> bytes:
    data = orjson.dumps({"message": None, "conversation_id": conversation_id, "error": STREAM_ERROR})
    return b"data: " + data + b"\n\n"


def ping() -> bytes:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f").encode()
    return b"event: ping\r\ndata: " + stamp + b"\r\n\r\n"


def moderation(conversation_id: str, message_id: str) -> bytes:
    data = orjson.dumps({
        "conversation_id": conversation_id,
        "message_id": message_id,
        "is_completion": True,
        "moderation_response": {"flagged": False, "blocked": False, "moderation_id": "modr-" + message_id[:8]},
        "type": "moderation",
    })
    return b"data: " + data + b"\n\n"


def title(conversation_id: str, text: str) -> bytes:
    data = orjson.dumps({"type": "title_generation", "title": text, "conversation_id": conversation_id})
    return b"data: " + data + b"\n\n"
