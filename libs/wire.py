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
    if type(value) is dict:
        return [value]
    if type(value) is list and value:
        for item in value:  # a loop, not all(<generator>): this runs for every reply
            if type(item) is not dict:
                break
        else:
            return value
    raise ValueError("bus message is neither a JSON object nor a list of them")


_FRAGMENT_ENVELOPE = 512  # bytes a fragment's keys, ids and numbers take besides its data
_MAX_BYTES_PER_CHAR = 4  # in a JSON string of JSON text: `"` and `\` take 2, a non-BMP character 4


def fragments(payload: bytes, limit: int, job_id: str, attempt: int, seq: int) -> list[bytes]:
    """A reply payload too large for one bus message, cut into `fragment` messages of at most
    `limit` bytes each (proto/schemas/v1/reply.json): parts of its JSON text, joined by the edge."""
    text = payload.decode()
    step = max(1, (limit - _FRAGMENT_ENVELOPE) // _MAX_BYTES_PER_CHAR)
    last = (len(text) - 1) // step
    return [
        orjson.dumps({"type": "fragment", "job_id": job_id, "attempt": attempt, "seq": seq, "part": part,
                      "last": part == last, "data": text[part * step:(part + 1) * step]})
        for part in range(last + 1)
    ]
