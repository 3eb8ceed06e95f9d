"""Uploaded images (kblob, sheet §6): kept in memory, bounded in count and bytes, oldest dropped first.
Both ids of an upload (blobId and processedBlobId) name the same bytes."""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass

from . import ids

MAX_BLOBS = 256
MAX_BYTES = 64 * 1024 * 1024
_BCID = re.compile(r"[?&]bcid=([A-Za-z0-9_-]+)")
MAGIC = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF87a", "image/gif"),
         (b"GIF89a", "image/gif"))


def image_type(data: bytes) -> str | None:
    """The MIME type by magic bytes, for the four types Bing's chat accepts; None for anything else."""
    for magic, kind in MAGIC:
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


@dataclass(slots=True)
class Blob:
    blob_id: str
    processed_id: str
    data: bytes | None  # None: uploaded by URL (imageInfo.url), which the sandbox does not fetch
    content_type: str
    source_url: str | None


class Blobs:
    def __init__(self) -> None:
        self._blobs: OrderedDict[str, Blob] = OrderedDict()  # by blobId, oldest first
        self._processed: dict[str, str] = {}  # processedBlobId -> blobId
        self._bytes = 0

    def add(self, data: bytes | None, content_type: str, source_url: str | None = None) -> Blob:
        blob = Blob(ids.hex_id(), ids.hex_id(), data, content_type, source_url)
        self._blobs[blob.blob_id] = blob
        self._processed[blob.processed_id] = blob.blob_id
        self._bytes += len(data or b"")
        while len(self._blobs) > MAX_BLOBS or (self._bytes > MAX_BYTES and len(self._blobs) > 1):
            _, old = self._blobs.popitem(last=False)
            del self._processed[old.processed_id]
            self._bytes -= len(old.data or b"")
        return blob

    def get(self, blob_id: str) -> Blob | None:
        return self._blobs.get(self._processed.get(blob_id, blob_id))

    def of_url(self, url: str | None) -> Blob | None:
        """The blob a chat `imageUrl` names through its `bcid` query (any host: the worker's base)."""
        if not url:
            return None
        match = _BCID.search(url)
        return self.get(match.group(1)) if match else None

    def count(self) -> int:
        return len(self._blobs)

    def reset(self) -> None:
        self._blobs.clear()
        self._processed.clear()
        self._bytes = 0
