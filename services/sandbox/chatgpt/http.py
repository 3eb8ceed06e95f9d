"""Small I/O helpers of the ChatGPT web fake: FastAPI-style `{"detail": ...}` answers and query strings."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import orjson

from ..asgi import JSON, Scope, Send, respond
from .observe import Record


async def answer(
    send: Send, record: Record | None, status: int, body: bytes, content_type: bytes = JSON,
    extra: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    if record is not None:
        record["status"] = status
    await respond(send, status, body, content_type, extra)


async def detail(send: Send, record: Record | None, status: int, what: Any) -> None:
    await answer(send, record, status, orjson.dumps({"detail": what}))


async def ok(send: Send, record: Record | None, obj: Any, extra: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    await answer(send, record, 200, orjson.dumps(obj), JSON, extra)


def query(scope: Scope) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(scope["query_string"].decode("latin-1")).items()}
