"""A tiny OpenAI-compatible upstream for tests of unary calls: a real Starlette app under uvicorn
on an ephemeral loopback port, in the test's own event loop.

POST {base}/moderations answers OpenAI's moderation shape (one result per input; an input that
contains "kill" is flagged); POST {base}/embeddings a small embedding list. `status` makes every
POST fail with that status and an OpenAI error body (`param` in it). GET /files/{size} answers
`size` bytes of PNG-typed data (with a Content-Length unless `chunked`); GET /files/missing 404s.
Every request is recorded (path, headers, JSON body).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

CATEGORIES = ("harassment", "hate", "self-harm", "sexual", "violence")


@dataclass
class FakeUpstream:
    status: int = 200
    param: str | None = None
    chunked: bool = False
    url: str = ""  # the base URL, ending in /v1
    origin: str = ""  # http://127.0.0.1:port
    requests: list[tuple[str, dict[str, str], Any]] = field(default_factory=list)


def moderation(body: dict[str, Any]) -> dict[str, Any]:
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    results = []
    for item in inputs:
        text = item if isinstance(item, str) else str(item.get("text", ""))
        flagged = "kill" in text
        results.append({
            "flagged": flagged,
            "categories": {c: flagged and c == "violence" for c in CATEGORIES},
            "category_scores": {c: (0.93 if flagged and c == "violence" else 0.0001) for c in CATEGORIES},
            "category_applied_input_types": {c: ["text"] for c in CATEGORIES},
        })
    return {"id": "modr-fake-1", "model": "omni-moderation-2024-09-26", "results": results}


def app_for(fake: FakeUpstream) -> Starlette:
    async def post(request: Request) -> Response:
        body = orjson.loads(await request.body())
        fake.requests.append((request.url.path, dict(request.headers), body))
        if fake.status != 200:
            # echoes the key it got, as some providers do: the gateway must scrub it
            said = f"fake says {fake.status} to {request.headers.get('authorization')}"
            error = {"error": {"message": said, "type": "invalid_request_error",
                               "param": fake.param, "code": None}}
            return Response(orjson.dumps(error), fake.status, media_type="application/json")
        if request.url.path.endswith("/moderations"):
            answer = moderation(body)
        else:
            answer = {"object": "list", "model": body["model"], "data": [
                {"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}], "usage": {"prompt_tokens": 2,
                                                                                       "total_tokens": 2}}
        return Response(orjson.dumps(answer), media_type="application/json")

    async def files(request: Request) -> Response:
        fake.requests.append((request.url.path, dict(request.headers), None))
        name = request.path_params["name"]
        if not name.isdigit():
            return Response(b"not here", 404)
        size = int(name)
        if fake.chunked:  # no Content-Length: the limit must be enforced while reading
            async def parts() -> AsyncIterator[bytes]:
                for start in range(0, size, 4096):
                    yield b"\x89" * min(4096, size - start)
            return StreamingResponse(parts(), media_type="image/png")
        return Response(b"\x89" * size, media_type="image/png")

    return Starlette(routes=[
        Route("/v1/moderations", post, methods=["POST"]),
        Route("/v1/embeddings", post, methods=["POST"]),
        Route("/files/{name}", files, methods=["GET"]),
    ])


@contextlib.asynccontextmanager
async def fake_upstream(**settings: Any) -> AsyncIterator[FakeUpstream]:
    fake = FakeUpstream(**settings)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app_for(fake), lifespan="off", log_level="warning", access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(500):  # bounded: about 5 s
            if server.started:
                break
            await asyncio.sleep(0.01)
        assert server.started
        fake.origin = f"http://127.0.0.1:{sock.getsockname()[1]}"
        fake.url = fake.origin + "/v1"
        yield fake
    finally:
        server.should_exit = True
        await task
        sock.close()
