"""Bus message encoding: orjson out, tolerant decoding in (unknown fields are ignored)."""

from __future__ import annotations

from typing import Any

import orjson

REQUEST_ID_HEADER = "Sy-Request-Id"


def encode(message: Any) -> bytes:
    return orjson.dumps(message)


def decode(payload: bytes) -> dict[str, Any]:
    value = orjson.loads(payload)
    if not isinstance(value, dict):
        raise ValueError("bus message is not a JSON object")
    return value


def decode_batch(payload: bytes) -> list[dict[str, Any]]:
    """A reply payload: one message, or a JSON array of them (a batch); ValueError if neither."""
    value = orjson.loads(payload)
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        return value
    raise ValueError("bus message is neither a JSON object nor a list of them")
