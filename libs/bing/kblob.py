"""The kblob image upload (fact sheet sydney.md §6), without I/O: the multipart body SydneyQt
sends (two text fields, no filenames) and the reading of the answer.
"""

from __future__ import annotations

import base64
import secrets
from typing import Any

import orjson

from libs.bing.errors import BingUnavailable, UploadRejected


def knowledge_request(tone: str) -> bytes:
    """The `knowledgeRequest` field: an object that itself has `imageInfo` and `knowledgeRequest`."""
    return orjson.dumps(
        {
            "imageInfo": {},
            "knowledgeRequest": {
                "invokedSkills": ["ImageById"],
                "subscriptionId": "Bing.Chat.Multimodal",
                "invokedSkillsRequestData": {"enableFaceBlur": False},
                "convoData": {"convoid": "", "convotone": tone},
            },
        }
    )


def kblob_form(data: bytes, tone: str, *, boundary: str | None = None) -> tuple[str, bytes]:
    """(Content-Type, body) of the multipart form: `knowledgeRequest` (JSON text) then
    `imageBase64` (standard base64 with padding). httpx would add a filename and a part
    Content-Type to force multipart; SydneyQt sends plain text fields, so the body is built here."""
    boundary = boundary or secrets.token_hex(16)
    fields = ((b"knowledgeRequest", knowledge_request(tone)), (b"imageBase64", base64.b64encode(data)))
    mark = b"--" + boundary.encode()
    body = b"".join(
        mark + b'\r\nContent-Disposition: form-data; name="' + name + b'"\r\n\r\n' + value + b"\r\n"
        for name, value in fields
    )
    return f"multipart/form-data; boundary={boundary}", body + mark + b"--\r\n"


def parse_kblob(status: int, body: bytes) -> str:
    """The blobId of a kblob answer. A non-200 or non-JSON answer is BingUnavailable (with the
    status); an empty blobId is UploadRejected (Bing refused the image: SydneyQt's `blobId is empty`)."""
    if status != 200:
        raise BingUnavailable(f"image upload failed: HTTP {status}", status)
    try:
        answer: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BingUnavailable("image upload failed: the answer is not JSON", status) from None
    blob_id = answer.get("blobId") if isinstance(answer, dict) else None
    if not isinstance(blob_id, str) or not blob_id:
        raise UploadRejected("image upload rejected: blobId is empty")
    return blob_id
