"""An OpenAI chat request folded into the one prompt a browser agent takes.

An agent starts a ChatGPT web conversation from one message and keeps nothing else, so a chat
request becomes a new conversation each time: its only message's text when it is a single user
message, else a plain transcript, one `Role: text` paragraph per message, which ChatGPT reads as
the conversation so far and continues.
"""

from __future__ import annotations

from typing import Any


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p["text"] for p in content
                         if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str))
    return ""


def fold(messages: list[dict[str, Any]]) -> str:
    if len(messages) == 1 and messages[0].get("role") == "user":
        return _text(messages[0].get("content"))
    return "\n\n".join(f"{str(m.get('role', 'user')).capitalize()}: {_text(m.get('content'))}" for m in messages)
