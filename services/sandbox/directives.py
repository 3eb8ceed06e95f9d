"""`[sandbox key=value ...]` directives: fault injection written into the prompt text.

Several brackets may appear anywhere in the text; keys merge left to right (the last one wins).
Unknown keys and malformed values are rejected loudly, so a typo in a test never passes silently.
"""

from __future__ import annotations

import re
from typing import Any

Directives = dict[str, int | str]

INT_KEYS = frozenset(
    {
        "tokens",  # completion tokens to generate (default 16)
        "latency_ms",  # sleep before response headers
        "first_token_ms",  # sleep before the first token (stream: after the headers)
        "token_delay_ms",  # sleep between tokens (non-stream: the answer waits for all of them)
        "status",  # answer with this HTTP error status at once
        "retry_after",  # seconds, Retry-After header on errors (429 defaults to 1)
        "echo_key",  # 1: error message echoes the bearer token received
        "fail_after",  # abort the connection after N tokens (non-stream: with no answer)
        "hang",  # 1: never answer, wait for the client to go away
        "hang_after",  # generate N tokens (stream: send them), then hang
        "error_after",  # generate N tokens; stream: send them, then an SSE error event ends it; else a 500
        "fail_times",  # with mark: the first K requests get `status` (default 500)
        "max_tokens_at",  # ChatGPT web fake only: cut the answer after K words, finish_details max_tokens
    }
)
# keys whose value is one of a few words
CHOICE_KEYS: dict[str, frozenset[str]] = {
    # /v1/images/generations answers in this form whatever `response_format` asked for, as real
    # upstreams that support only one form do (the gateway's conversion is tested with it)
    "image_form": frozenset({"url", "b64_json"}),
    # tiles (default): flat colour tiles, compresses well; noise: random bytes, about 1.33 bytes of
    # base64 per pixel byte, for benchmarks that want a big answer (512x512 noise: ~1 MB of b64_json)
    "image_pattern": frozenset({"tiles", "noise"}),
}
STR_KEYS = frozenset({"tool", "mark", *CHOICE_KEYS})
KEYS = INT_KEYS | STR_KEYS

_BRACKET = re.compile(r"\[sandbox(?:\s+([^\]]*))?\]")


class DirectiveError(ValueError):
    pass


def _coerce(key: str, value: Any) -> int | str:
    if key in STR_KEYS:
        if not isinstance(value, str) or not value:
            raise DirectiveError(f"sandbox directive {key!r} needs a non-empty string")
        choices = CHOICE_KEYS.get(key)
        if choices is not None and value not in choices:
            raise DirectiveError(f"sandbox directive {key}={value!r} is not one of {', '.join(sorted(choices))}")
        return value
    if key not in INT_KEYS:
        raise DirectiveError(f"unknown sandbox directive {key!r} (known: {', '.join(sorted(KEYS))})")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise DirectiveError(f"sandbox directive {key}={value!r} is not an integer") from None
    if number < 0 or (key == "status" and not 400 <= number <= 599):
        raise DirectiveError(f"sandbox directive {key}={value!r} is out of range")
    return number


def parse(text: str) -> Directives:
    """Directives found in `text`; the substring test keeps the common no-directive case cheap."""
    if "[sandbox" not in text:
        return {}
    found: Directives = {}
    for match in _BRACKET.finditer(text):
        for item in (match.group(1) or "").split():
            key, sep, value = item.partition("=")
            if not sep:
                raise DirectiveError(f"sandbox directive {item!r} is not key=value")
            found[key] = _coerce(key, value)
    return found


def strip(text: str) -> str:
    """`text` without directive brackets and with whitespace collapsed: the seed of the generated words,
    so adding a directive to a prompt does not change them (tokens=5 is a prefix of the default answer)."""
    if "[sandbox" in text:
        text = _BRACKET.sub(" ", text)
    return " ".join(text.split())


def from_config(obj: Any) -> Directives:
    """Validate a POST /_sandbox/config body (a JSON object of the same keys)."""
    if not isinstance(obj, dict):
        raise DirectiveError("sandbox config must be a JSON object")
    return {str(key): _coerce(str(key), value) for key, value in obj.items()}
