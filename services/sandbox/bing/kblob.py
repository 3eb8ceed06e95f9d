"""POST /images/kblob (sheet §6): the image upload, and GET /images/blob?bcid= serving it back."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from ..asgi import JSON, TEXT, ClientGone, Receive, Scope, Send, header, read_body, respond
from . import multipart
from .blobs import Blobs, image_type
from .http import query

MAX_BODY = 16 * 1024 * 1024
REJECTED = b'{"blobId":"","processedBlobId":""}'


class _Bad(ValueError):
    pass


def _knowledge_request(part: multipart.Part | None) -> dict[str, Any]:
    if part is None:
        raise _Bad("the form has no knowledgeRequest field")
    try:
        obj = orjson.loads(part.data)
    except orjson.JSONDecodeError:
        raise _Bad("knowledgeRequest is not JSON") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("imageInfo"), dict):
        raise _Bad("knowledgeRequest must be an object with an imageInfo object")
    inner = obj.get("knowledgeRequest")
    if not isinstance(inner, dict) or not isinstance(inner.get("invokedSkills"), list):
        raise _Bad("knowledgeRequest.knowledgeRequest must be an object with invokedSkills")
    return obj


def _image(parts: dict[str, multipart.Part], request: dict[str, Any]) -> tuple[bytes | None, str | None]:
    """(bytes, None) from imageBase64, or (None, url) for sydney.py's upload by imageInfo.url."""
    part = parts.get("imageBase64")
    if part is None:
        url = request["imageInfo"].get("url")
        if isinstance(url, str) and url:
            return None, url
        raise _Bad("the form has neither an imageBase64 field nor imageInfo.url")
    try:
        data = base64.b64decode(part.data.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise _Bad("imageBase64 is not standard base64") from None
    if not data:
        raise _Bad("imageBase64 is empty")
    return data, None


async def upload(blobs: Blobs, scope: Scope, receive: Receive, send: Send) -> tuple[int, dict[str, Any]]:
    """Answers the upload; returns (status, what the requests log keeps of it)."""
    try:
        body = await read_body(receive)
    except ClientGone:
        return 0, {}
    try:
        if len(body) > MAX_BODY:
            raise _Bad(f"the body is over {MAX_BODY} bytes")
        parts = multipart.parse(header(scope, b"content-type"), body)
        request = _knowledge_request(parts.get("knowledgeRequest"))
        data, url = _image(parts, request)
    except (multipart.MultipartError, _Bad) as exc:
        await respond(send, 400, f"{exc} (sandbox)\n".encode(), TEXT)
        return 400, {"error": str(exc)}
    fields = sorted(parts)
    if data is None:
        blob = blobs.add(None, "", url)
    else:
        kind = image_type(data)
        if kind is None:
            await respond(send, 200, REJECTED, JSON)
            return 200, {"fields": fields, "bytes": len(data), "rejected": True}
        blob = blobs.add(data, kind)
    await respond(send, 200, orjson.dumps({"blobId": blob.blob_id, "processedBlobId": blob.processed_id}))
    return 200, {"fields": fields, "bytes": len(data or b""), "rejected": False, "blobId": blob.blob_id,
                 "by_url": url is not None}


async def serve(blobs: Blobs, scope: Scope, send: Send) -> int:
    blob = blobs.get(query(scope).get("bcid", ""))
    if blob is None or blob.data is None:
        await respond(send, 404, b"No such blob (sandbox)\n", TEXT)
        return 404
    await respond(send, 200, blob.data, blob.content_type.encode())
    return 200
