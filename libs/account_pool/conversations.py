"""Conversation continuity for web workers: which upstream conversation continues a transcript.

An OpenAI client resends the whole transcript each turn; a web upstream keeps the conversation
itself. After a turn a worker stores, under the hash of the transcript including the answer it
gave, where that conversation lives (`put`); the next request, that transcript plus a new user
message, finds it again by hashing its messages without the last one (`get`). Which account owns
an upstream conversation is kept too (`put_owner`/`owner`), so a turn goes back to that account.

The records live in the KV bucket SY_V1_CONVERSATIONS (proto/subjects.toml) with a TTL: a
conversation not continued within it is forgotten, and the next turn starts a new one.
Keys: `{pool}.t.{transcript key}` and `{pool}.c.{conversation id}`.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from typing import Any

import orjson
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

import proto
from libs.account_pool.buckets import CONVERSATIONS_BUCKET
from libs.kv_buckets import ensure_kv

_PLAIN_TOKEN = re.compile(r"[A-Za-z0-9_=-]{1,128}")  # used as a key token as it is; else hashed


def transcript_key(messages: list[dict[str, Any]]) -> str:
    """sha256 hex of the messages as (role, text) pairs: string content as it is, a list of
    content parts as its text parts joined by newlines (other parts, such as images, do not
    count), no content as empty text. Leading and trailing whitespace is ignored, since clients
    trim the answers they send back. The same transcript hashes the same on every replica."""
    pairs = [[str(m.get("role", "")), _text(m.get("content")).strip()] for m in messages]
    return hashlib.sha256(orjson.dumps(pairs)).hexdigest()


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"] for part in content
            if isinstance(part, dict) and part.get("type") in ("text", "input_text", "output_text")
            and isinstance(part.get("text"), str)
        )
    return ""


def _token(value: str) -> str:
    """A KV key token: the value when it is plain, else its sha256 (an id with dots or spaces
    must neither fail as a key nor reach into another key's tokens)."""
    if _PLAIN_TOKEN.fullmatch(value):
        return value
    return hashlib.sha256(value.encode()).hexdigest()


class ConversationMap:
    def __init__(self, js: JetStreamContext, *, ttl: float) -> None:
        if ttl <= 0:
            raise ValueError("a conversation TTL must be > 0")
        self._js = js
        self.ttl = ttl
        self._kv: KeyValue | None = None
        self._opening = asyncio.Lock()

    async def _bucket(self) -> KeyValue:
        """Made on first use, once per process (every web worker creates it idempotently)."""
        if self._kv is None:
            async with self._opening:
                if self._kv is None:
                    self._kv = await ensure_kv(self._js, CONVERSATIONS_BUCKET, "web conversations' continuity",
                                               ttl=self.ttl)
        return self._kv

    async def put(self, pool: str, key: str, record: dict[str, Any]) -> None:
        """Where the conversation whose transcript hashes to `key` continues (a JSON object)."""
        kv = await self._bucket()
        await kv.put(_record_key(pool, "t", key), orjson.dumps(record))

    async def get(self, pool: str, key: str) -> dict[str, Any] | None:
        kv = await self._bucket()
        try:
            entry = await kv.get(_record_key(pool, "t", key))
        except KeyNotFoundError:
            return None
        try:
            record = orjson.loads(entry.value or b"")
        except orjson.JSONDecodeError:
            return None
        return record if isinstance(record, dict) else None

    async def put_owner(self, pool: str, conversation_id: str, account: str) -> None:
        kv = await self._bucket()
        await kv.put(_record_key(pool, "c", conversation_id), account.encode())

    async def owner(self, pool: str, conversation_id: str) -> str | None:
        """The account an upstream conversation lives on (None: unknown or expired)."""
        kv = await self._bucket()
        try:
            entry = await kv.get(_record_key(pool, "c", conversation_id))
        except KeyNotFoundError:
            return None
        return (entry.value or b"").decode() or None


def _record_key(pool: str, kind: str, value: str) -> str:
    return f"{proto.check_token(pool)}.{kind}.{_token(value)}"
