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
