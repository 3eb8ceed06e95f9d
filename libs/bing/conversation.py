"""A Bing conversation as `conversation/create` returns it (fact sheet sydney.md §1.3-1.4), parsed
without I/O, and its JSON form (SydneyQt's `CreateConversationResponse`) for storing and reuse.

Since late 2023 the signatures come in response headers: `X-Sydney-Encryptedconversationsignature`
is the ChatHub `sec_access_token`, `X-Sydney-Conversationsignature` the bearer token of
`/sydney/UploadFile`. The body's `conversationSignature` is usually absent now. The tokens are
credentials: they are kept out of `repr` and out of every error message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from libs.bing.errors import CreateFailed

__all__ = ["Conversation", "CreateFailed", "parse_create"]

SEC_ACCESS_TOKEN_HEADER = "X-Sydney-Encryptedconversationsignature"
BEARER_TOKEN_HEADER = "X-Sydney-Conversationsignature"


@dataclass(frozen=True, slots=True)
class Conversation:
    conversation_id: str
    client_id: str
    signature: str | None  # the body's conversationSignature; sent as is in the invocation
    sec_access_token: str = field(repr=False)  # "" when the server sent none: then no query parameter
    bearer_token: str | None = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        """The CreateConversationResponse shape: Go strings, so an absent value is ""."""
        return {
            "conversationId": self.conversation_id,
            "clientId": self.client_id,
            "result": {"value": "Success", "message": None},
            "secAccessToken": self.sec_access_token,
            "conversationSignature": self.signature or "",
            "bearerToken": self.bearer_token or "",
        }

    @classmethod
    def from_json(cls, obj: Any) -> Conversation:
        """The inverse of `to_json`; tolerant like Go's decoder (missing optional strings are "",
        null is ""), strict on types. ValueError names the bad field, never its value."""
        if not isinstance(obj, dict):
            raise ValueError("conversation: expected a JSON object")
        conversation_id = _required(obj, "conversationId")
        client_id = _required(obj, "clientId")
        return cls(
            conversation_id=conversation_id,
            client_id=client_id,
            signature=_optional(obj, "conversationSignature") or None,
            sec_access_token=_optional(obj, "secAccessToken"),
            bearer_token=_optional(obj, "bearerToken") or None,
        )


def _required(obj: dict[str, Any], name: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"conversation: `{name}` must be a non-empty string")
    return value


def _optional(obj: dict[str, Any], name: str) -> str:
    value = obj.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"conversation: `{name}` must be a string")
    return value


def _header(headers: Mapping[str, str], name: str) -> str:
    """Case-insensitive lookup in any Mapping (httpx.Headers is already; a plain dict is not)."""
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value or ""


def parse_create(status: int, headers: Mapping[str, str], body: bytes) -> Conversation:
    """The conversation of one `conversation/create` answer, or CreateFailed with SydneyQt's texts."""
    if status != 200:
        raise CreateFailed(
            status,
            f"HTTP {status}",
            f"failed to create the conversation, code: {status}; please check your proxy settings and your account",
        )
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise CreateFailed(status, "Malformed", "failed to create the conversation: the body is not JSON") from None
    if not isinstance(data, dict):
        raise CreateFailed(status, "Malformed", "failed to create the conversation: the body is not a JSON object")
    result = data.get("result")
    value = result.get("value") if isinstance(result, dict) else None
    if value != "Success":
        message = result.get("message") if isinstance(result, dict) else None
        raise CreateFailed(
            status,
            value if isinstance(value, str) and value else "Malformed",
            f"failed to create the conversation: message: {message if isinstance(message, str) else ''}",
        )
    try:
        conversation_id = _required(data, "conversationId")
        client_id = _required(data, "clientId")
        signature = _optional(data, "conversationSignature") or None
    except ValueError as exc:
        raise CreateFailed(status, "Malformed", f"failed to create the conversation: {exc}") from None
    return Conversation(
        conversation_id=conversation_id,
        client_id=client_id,
        signature=signature,
        sec_access_token=_header(headers, SEC_ACCESS_TOKEN_HEADER),
        bearer_token=_header(headers, BEARER_TOKEN_HEADER) or None,
    )
