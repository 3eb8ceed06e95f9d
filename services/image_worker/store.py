"""Images stored in the object store SY_V1_IMAGES (proto.IMAGE_STORE), which the edge creates
(with its TTL and size bound) and serves at `/images/{name}` without a key.

The name is the URL's only secret: `secrets.token_urlsafe(24)` (192 bits), then the extension of
the image's true type. The store handle is looked up on first use and kept (a lookup is a
JetStream API call); it is forgotten after a failure, so a store the edge re-creates is found again.

Failures say whether a retry helps (`retryable` is false for both: another replica would generate
the images again only to meet the same store):
- the store is full (its max_bytes, IMAGE_STORE_BYTES at the edge): NoCapacity, 503 with a
  Retry-After, since images leave it as their URLs expire;
- no store yet (no edge has started) or the bus failed: BusUnavailable, 503 with a Retry-After.
"""

from __future__ import annotations

import secrets
from typing import Any

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.object_store import ObjectStore

import proto
from libs.errors import BusUnavailable, NoCapacity, SwitchyardError
from services.image_worker.imagetype import ImageType

_STORE_FAILED = 10077  # JetStream's "store failed": maximum bytes (or messages) exceeded
FULL_RETRY_AFTER = 30.0  # seconds: images leave the store as their URLs expire
BUS_RETRY_AFTER = 1.0


class ImageObjects:
    def __init__(self) -> None:
        self._js: JetStreamContext | None = None
        self._store: ObjectStore | None = None

    def attach(self, js: JetStreamContext) -> None:
        self._js = js
        self._store = None

    async def put(self, data: bytes, kind: ImageType) -> dict[str, Any]:
        """Stores the image under a new random name; its `object` (name, content_type, size)."""
        name = f"{secrets.token_urlsafe(24)}.{kind.extension}"
        try:
            store = self._store or await self._lookup()
            await store.put(name, data)
        except SwitchyardError:
            raise
        except nats.js.errors.APIError as exc:
            self._store = None
            raise _api_error(exc) from exc
        except nats.errors.Error as exc:
            self._store = None
            raise BusUnavailable(f"could not store the image: the bus failed ({type(exc).__name__})",
                                 retry_after=BUS_RETRY_AFTER) from exc
        return {"name": name, "content_type": kind.content_type, "size": len(data)}

    async def _lookup(self) -> ObjectStore:
        if self._js is None:
            raise BusUnavailable("the worker has no bus connection yet", retry_after=BUS_RETRY_AFTER)
        self._store = await self._js.object_store(proto.IMAGE_STORE)
        return self._store


def _api_error(exc: nats.js.errors.APIError) -> SwitchyardError:
    if isinstance(exc, nats.js.errors.NotFoundError):
        return BusUnavailable(f"the image store {proto.IMAGE_STORE} does not exist: an edge creates it on start",
                              retry_after=BUS_RETRY_AFTER)
    if exc.err_code == _STORE_FAILED:
        return NoCapacity("the gateway's image store is full (IMAGE_STORE_BYTES); retry once older image URLs "
                          "expire, or ask for response_format b64_json", retry_after=FULL_RETRY_AFTER)
    return BusUnavailable(f"could not store the image: JetStream answered {exc.code} {exc.description or ''}".strip(),
                          retry_after=BUS_RETRY_AFTER)
