"""A small strict multipart/form-data reader (RFC 7578), enough for kblob's two fields. The sandbox
has no multipart dependency, and a fake should refuse a malformed body rather than guess."""

from __future__ import annotations

import re
from dataclasses import dataclass

_BOUNDARY = re.compile(r'boundary=(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)
_NAME = re.compile(r'\bname="([^"]*)"', re.IGNORECASE)
_FILENAME = re.compile(r'\bfilename="([^"]*)"', re.IGNORECASE)
MAX_PARTS = 16


class MultipartError(ValueError):
    pass


@dataclass(slots=True)
class Part:
    name: str
    filename: str | None
    content_type: str | None
    data: bytes


def parse(content_type: bytes | None, body: bytes) -> dict[str, Part]:
    """The form's parts by name (a repeated name: the last wins)."""
    ctype = (content_type or b"").decode("latin-1")
    if not ctype.lower().startswith("multipart/form-data"):
        raise MultipartError("the body must be multipart/form-data")
    match = _BOUNDARY.search(ctype)
    if match is None:
        raise MultipartError("the multipart Content-Type has no boundary")
    delimiter = b"--" + (match.group(1) or match.group(2)).encode("latin-1")
    chunks = body.split(delimiter)
    # chunks[0] is the preamble; the last one starts with "--" (the close delimiter)
    if len(chunks) < 3 or not chunks[-1].startswith(b"--"):
        raise MultipartError("the multipart body has no parts or no closing boundary")
    if len(chunks) - 2 > MAX_PARTS:
        raise MultipartError(f"more than {MAX_PARTS} parts")
    parts: dict[str, Part] = {}
    for chunk in chunks[1:-1]:
        if not chunk.startswith(b"\r\n") or not chunk.endswith(b"\r\n"):
            raise MultipartError("a multipart boundary is not on a line of its own")
        head, sep, data = chunk[2:-2].partition(b"\r\n\r\n")
        if not sep:
            raise MultipartError("a part has no blank line after its headers")
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            key, colon, value = line.partition(":")
            if not colon:
                raise MultipartError(f"a part header is malformed: {line[:60]!r}")
            headers[key.strip().lower()] = value.strip()
        disposition = headers.get("content-disposition", "")
        name = _NAME.search(disposition)
        if not disposition.lower().startswith("form-data") or name is None:
            raise MultipartError("a part has no Content-Disposition: form-data; name=...")
        filename = _FILENAME.search(disposition)
        parts[name.group(1)] = Part(name.group(1), filename.group(1) if filename else None,
                                    headers.get("content-type"), data)
    return parts
