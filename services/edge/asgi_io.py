"""Small raw-ASGI helpers for the edge's hot path (no Request/Response objects per call)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.types import Receive, Scope, Send

from libs.errors import BodyTooLarge, InvalidRequest, SwitchyardError

JSON_HEADERS = [(b"content-type", b"application/json")]


async def read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InvalidRequest("the client disconnected while sending the body")
        body = message.get("body", b"")
        size += len(body)
        if size > limit:
            raise BodyTooLarge(f"The request body exceeds the limit of {limit} bytes.")
        chunks.append(body)
        if not message.get("more_body", False):
            return b"".join(chunks)


# How deeply a request body may nest arrays and objects. orjson parses up to 1024 levels but
# serialises only up to 254, and the body is serialised again on its way to a worker (inside the
# job, a few levels deeper): bounded here, well below that, a too-deep body is a clear 400 rather
# than a 500 later. Tool `parameters` schemas, the deepest part of real requests, nest a few levels.
MAX_JSON_DEPTH = 64
_TOO_DEEP = (f"The request body nests JSON arrays and objects more than {MAX_JSON_DEPTH} levels deep, "
             "this gateway's limit.")
# Up to this size a body's brackets are counted first: nesting past the limit needs more opening
# brackets than the limit, so a short body with few of them needs no walk. Counting costs a few
# instructions a byte, a third of the walk for a small chat body; past this size it would cost
# about as much as the walk, which is paid per container element, not per byte.
_COUNT_UP_TO = 512


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether `value` nests lists and dicts more than `limit` levels (the value itself is level 1).

    Level by level over the parsed value: the cost is one step per array element and object
    member, whatever the length of the strings (a byte scan of the body would pay for every byte
    of a long prompt, and a count of brackets costs more than parsing does).
    """
    level = [value]
    depth = 1
    while level:
        if depth > limit:
            return True
        below = []
        for container in level:
            for item in container.values() if type(container) is dict else container:
                if type(item) is dict or type(item) is list:
                    below.append(item)
        level = below
        depth += 1
    return False


def parse_json_object(raw: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc):  # past orjson's own bound (1024 levels)
            raise InvalidRequest(_TOO_DEEP, code="nesting_too_deep") from None
        raise InvalidRequest(
            "We could not parse the JSON body of your request. The body must be valid JSON "
            "(NaN and Infinity are not JSON).", code="invalid_json",
        ) from None
    if not isinstance(value, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_type")
    few_brackets = len(raw) <= _COUNT_UP_TO and raw.count(b"{") + raw.count(b"[") <= MAX_JSON_DEPTH
    if not few_brackets and _deeper_than(value, MAX_JSON_DEPTH):
        raise InvalidRequest(_TOO_DEEP, code="nesting_too_deep")
    return value


async def send_bytes(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    all_headers = list(headers or JSON_HEADERS)
    all_headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Send, status: int, payload: Any, extra: dict[str, str] | None = None) -> None:
    headers = list(JSON_HEADERS)
    for key, value in (extra or {}).items():
        headers.append((key.encode(), value.encode()))
    await send_bytes(send, status, orjson.dumps(payload), headers)


async def send_error(send: Send, err: SwitchyardError) -> None:
    await send_json(send, err.status, err.body(), err.headers())


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None
