"""Merge the deltas a worker already has in hand into as few bus messages as possible.

Only what is already queued is merged (one network read of the upstream can hold many SSE
events); nothing waits for more. Plain text fragments of the same choice are concatenated;
anything richer (tool calls, logprobs, a finish) keeps its own entry. Each resulting message has
at most one entry per choice index, so the edge can turn it into one valid chunk.
"""

from __future__ import annotations

from typing import Any

Choice = dict[str, Any]


def _plain_text(choice: Choice) -> str | None:
    """The text of a choice that carries nothing but text, else None."""
    if choice.get("finish_reason") is not None or choice.get("logprobs") is not None:
        return None
    delta = choice.get("delta")
    if delta is not None:  # chat chunk
        if set(delta) <= {"content"} and isinstance(delta.get("content"), str):
            return str(delta["content"])
        return None
    text = choice.get("text")  # text_completion chunk
    if isinstance(text, str) and set(choice) <= {"index", "text", "logprobs", "finish_reason"}:
        return text
    return None


def _with_offset(choice: Choice, offset: int) -> Choice:
    if offset:
        choice = dict(choice)
        choice["index"] = int(choice.get("index", 0)) + offset
    return choice


def coalesce(choices: list[Choice], offset: int = 0) -> list[list[Choice]]:
    merged: list[Choice] = []
    for raw in choices:
        choice = _with_offset(raw, offset)
        text = _plain_text(choice)
        if merged and text is not None:
            last = merged[-1]
            last_text = _plain_text(last)
            if last_text is not None and last.get("index") == choice.get("index"):
                if "delta" in last:
                    merged[-1] = {**last, "delta": {"content": last_text + text}}
                else:
                    merged[-1] = {**last, "text": last_text + text}
                continue
        merged.append(choice)
    messages: list[list[Choice]] = []
    current: list[Choice] = []
    seen: set[int] = set()
    for choice in merged:
        index = int(choice.get("index", 0))
        if index in seen:
            messages.append(current)
            current, seen = [], set()
        current.append(choice)
        seen.add(index)
    if current:
        messages.append(current)
    return messages
