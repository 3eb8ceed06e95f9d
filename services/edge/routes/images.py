"""GET /images/{name}: a generated image the client asked to get as a URL.

An image worker stores the bytes in the object store SY_V1_IMAGES under a random name (128 bits
or more: the name is the URL's only secret, as OpenAI's image URLs carry theirs), and the edge
serves them here without a key, until the store's TTL (IMAGE_URL_TTL) removes them: a URL can be
handed to a browser or another service. The content type follows the name's extension; a name
that is not one a worker makes, or is gone, is an OpenAI-shaped 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from datetime import datetime
from email.utils import formatdate
from typing import Any

from starlette.types import Receive, Scope, Send

import proto
from libs.errors import ImageNotFound
from services.edge.asgi_io import send_error
from services.edge.state import EdgeState

PATH_PREFIX = "/images/"
_READ_WITHIN = 2.0  # seconds: an image read taking longer is missing (its chunks expired mid-read)
_NAME = re.compile(r"^[A-Za-z0-9_-]{22,64}\.(png|jpeg|jpg|webp|gif)$")
_CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg", "webp": "image/webp",
                  "gif": "image/gif"}


def image_url(base: str, name: str) -> str:
    return f"{base}{PATH_PREFIX}{name}"


class ImageFile:
    def __init__(self, state: EdgeState) -> None:
        self.state = state
        self._store: Any = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = scope["path_params"]["name"]
        match = _NAME.match(name)
        missing = ImageNotFound("This image does not exist, or its URL has expired.", param=None)
        if match is None:
            await send_error(send, missing)
            return
        data, mtime = await self._read(name)
        if data is None:
            await send_error(send, missing)
            return
        remaining = max(0, int(mtime + self.state.settings.image_url_ttl - time.time()))
        headers = [
            (b"content-type", _CONTENT_TYPES[match.group(1)].encode()),
            (b"content-length", str(len(data)).encode()),
            (b"cache-control", f"private, max-age={remaining}".encode()),
            (b"expires", formatdate(time.time() + remaining, usegmt=True).encode()),
            (b"x-content-type-options", b"nosniff"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else data})

    async def _read(self, name: str) -> tuple[bytes | None, float]:
        """The image's bytes and when it was stored (unix seconds); None when it is not there."""
        with contextlib.suppress(Exception):  # not found, expired, or the bus is down: no image
            if self._store is None:
                self._store = await self.state.dispatcher.js.object_store(proto.IMAGE_STORE)
            # bounded: nats-py waits for an object's chunks without end when the TTL removed
            # them between its metadata and its data
            async with asyncio.timeout(_READ_WITHIN):
                result = await self._store.get(name)
            info = result.info
            mtime = _unix(getattr(info, "mtime", None))
            return result.data, mtime
        return None, 0.0


def _unix(mtime: Any) -> float:
    """nats-py's ObjectInfo.mtime (an RFC 3339 string) as unix seconds; now if unreadable."""
    with contextlib.suppress(Exception):
        return datetime.fromisoformat(str(mtime).replace("Z", "+00:00")).timestamp()
    return time.time()
