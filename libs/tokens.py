"""The one token estimate, for when an upstream reports no usage (the worker) or an answer was cut
short before it did (the edge): about four characters a token for English text."""

from __future__ import annotations

_CHARS_PER_TOKEN = 4


def estimate_tokens(text: str | int) -> int:
    """Tokens in `text`, or in a text of that many characters: rounded up, so any text is at least 1."""
    chars = text if isinstance(text, int) else len(text)
    return (chars + _CHARS_PER_TOKEN - 1) // _CHARS_PER_TOKEN if chars > 0 else 0
