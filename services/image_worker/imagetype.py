"""An image's type from its magic bytes: an upstream's `b64_json` or a fetched URL is trusted to be
an image only when its first bytes say so (the edge serves a stored object with the content type
its name's extension gives, so the extension must be the true one)."""

from __future__ import annotations

from typing import NamedTuple


class ImageType(NamedTuple):
    extension: str  # the stored name's, one of the edge's (services/edge/routes/images.py)
    content_type: str


PNG = ImageType("png", "image/png")
JPEG = ImageType("jpeg", "image/jpeg")
WEBP = ImageType("webp", "image/webp")
GIF = ImageType("gif", "image/gif")


def image_type(data: bytes) -> ImageType | None:
    """The type of an image by its signature; None for anything else."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if data.startswith(b"\xff\xd8\xff"):
        return JPEG
    if len(data) >= 12 and data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return WEBP
    if data.startswith((b"GIF87a", b"GIF89a")):
        return GIF
    return None
