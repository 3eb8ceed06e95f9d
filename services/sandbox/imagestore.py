"""Generated PNGs kept in memory for a while, so a `url` answer can be fetched like a provider's CDN link."""

from __future__ import annotations

import os
import time
from collections import OrderedDict

MAX_IMAGES = 256
MAX_BYTES = 256 * 1024 * 1024  # noise images are ~3 MB at 1024x1024: bound the bytes, not just the count
TTL_SECONDS = 3600.0  # OpenAI's image URLs expire after an hour


class ImageStore:
    """LRU by insertion and by fetch, bounded in count, bytes and age."""

    def __init__(self, max_images: int = MAX_IMAGES, max_bytes: int = MAX_BYTES, ttl: float = TTL_SECONDS) -> None:
        self._images: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._bytes = 0
        self.max_images = max_images
        self.max_bytes = max_bytes
        self.ttl = ttl

    def put(self, png: bytes) -> str:
        """Store `png`; returns its unguessable id (the URL is the only credential, as with a CDN link)."""
        image_id = os.urandom(12).hex()
        self._images[image_id] = (time.monotonic() + self.ttl, png)
        self._bytes += len(png)
        while len(self._images) > self.max_images or (self._bytes > self.max_bytes and len(self._images) > 1):
            self._bytes -= len(self._images.popitem(last=False)[1][1])
        return image_id

    def get(self, image_id: str) -> bytes | None:
        found = self._images.get(image_id)
        if found is None:
            return None
        expires, png = found
        if time.monotonic() > expires:
            del self._images[image_id]
            self._bytes -= len(png)
            return None
        self._images.move_to_end(image_id)
        return png
