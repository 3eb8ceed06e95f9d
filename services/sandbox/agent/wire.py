"""The agent's side of the frames (agent-protocol.md §3.2/§3.3), written from the sheet on its own."""

from __future__ import annotations

from typing import Any

import orjson


class FrameError(ValueError):
    """A server frame the agent cannot read."""


def frame(id_: str, message: str, data: str) -> str:
    """A frame as the Firefox agent's JSON.stringify writes it: compact, keys id, message, data."""
    return orjson.dumps({"id": id_, "message": message, "data": data}).decode()


def error_frame(id_: str, detail: str) -> str:
    """The Firefox agent's failure frame; its `error` is a JS Error serialised by JSON.stringify: {}."""
    return orjson.dumps({"id": id_, "message": "error", "data": detail, "error": {}}).decode()


def answer_frame(id_: str, response_id: str, conversation_id: str, content: str) -> str:
    """A ChatGptResponse: `data` is the JSON string of the three keys the agents send."""
    data = orjson.dumps({"response_id": response_id, "conversation_id": conversation_id, "content": content})
    return frame(id_, "ChatGptResponse", data.decode())


def read(text: str | bytes) -> dict[str, Any]:
    """A server frame as a dict with string `id`, `message` and `data`."""
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise FrameError("a frame is not JSON") from None
    if not isinstance(obj, dict) or not all(isinstance(obj.get(k), str) for k in ("id", "message", "data")):
        raise FrameError("a frame is not an object with string id, message and data")
    return obj


def read_job(data: str) -> dict[str, str]:
    """The double-encoded ChatGptRequest of a job's `data`: message_id, conversation_id, parent_id, content."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise FrameError("job data is not JSON") from None
    if not isinstance(obj, dict):
        raise FrameError("job data is not an object")
    out: dict[str, str] = {}
    for key in ("message_id", "conversation_id", "parent_id", "content"):
        value = obj.get(key, "")
        if not isinstance(value, str):
            raise FrameError(f"job data key {key!r} is not a string")
        out[key] = value
    return out
