"""GET /openapi.json: the edge's OpenAPI document (services/edge/openapi.py), served without a key."""

from __future__ import annotations

import orjson
from starlette.types import Receive, Scope, Send

from services.edge.asgi_io import JSON_HEADERS, send_bytes
from services.edge.openapi import openapi_document


class OpenAPIRoute:
    """Serves the document built once, when the app is made: it depends on nothing at run time."""

    def __init__(self, max_n: int | None = None) -> None:
        # max_n: the edge's MAX_N (settings.max_n), so the document bounds `n` as the edge does
        self.body = orjson.dumps(openapi_document(max_n=max_n))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_bytes(send, 200, self.body, JSON_HEADERS)
