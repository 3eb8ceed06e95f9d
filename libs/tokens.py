"""The one token estimate, for when an upstream reports no usage (the worker) or an answer was cut
short before it did (the edge): about four characters a token for English text. And the one
`usage` a worker reports: the upstream's counts, else this estimate marked `estimated`."""

from __future__ import annotations

from typing import Any

_CHARS_PER_TOKEN = 4
_USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")


def estimate_tokens(text: str | int) -> int:
    """Tokens in `text`, or in a text of that many characters: rounded up, so any text is at least 1."""
    chars = text if isinstance(text, int) else len(text)
    return (chars + _CHARS_PER_TOKEN - 1) // _CHARS_PER_TOKEN if chars > 0 else 0


def request_tokens(body: dict[str, Any]) -> int:
    """An estimate of the tokens a request sends: its `messages`, else its `prompt` or `input` (a
    string, strings, token ids (counted as they are), or content parts with `text`)."""
    if "messages" in body:
        parts: list[str] = []
        for message in body["messages"]:
            content = message.get("content")
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts.extend(p.get("text", "") for p in content if isinstance(p, dict))
        return estimate_tokens("\n".join(parts))
    value = body.get("prompt", body.get("input"))
    if isinstance(value, str):
        return estimate_tokens(value)
    if not isinstance(value, list):
        return 0
    if value and all(type(v) is int for v in value):  # one text as token ids
        return len(value)
    texts: list[str] = []
    ids = 0
    for item in value:
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, list):  # several texts as token ids
            ids += len(item)
        elif isinstance(item, dict) and isinstance(item.get("text"), str):  # a content part
            texts.append(item["text"])
    return estimate_tokens(" ".join(texts)) + ids


def usage(reported: dict[str, Any] | None, body: dict[str, Any], completion: str = "") -> dict[str, Any]:
    """The upstream's token counts (`reported`), else an estimate for the request `body` and the
    `completion` text, marked `estimated`."""
    if reported:
        counts: dict[str, Any] = {k: reported[k] for k in _USAGE_KEYS if k in reported}
        counts.setdefault("prompt_tokens", 0)
        counts.setdefault("completion_tokens", 0)
        counts.setdefault("total_tokens", counts["prompt_tokens"] + counts["completion_tokens"])
        counts["estimated"] = False
        return counts
    prompt_tokens = request_tokens(body)
    completion_tokens = estimate_tokens(completion)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens, "estimated": True}
