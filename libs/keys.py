"""Managed API keys: the record, hashing, and the writes to their KV bucket (SY_V1_API_KEYS).

Shared by the edge (which mirrors the bucket and serves the admin API) and `python -m tools.keys`.
A key is its prefix plus 32 random bytes (url-safe base64): that much entropy makes a plain
SHA-256 the right hash (nothing to brute-force, no slow KDF on the request path). The bucket holds
one entry per key, named by the key's id, whose value is the record: the hash, never the key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

import proto
from libs.kv_buckets import ensure_kv

KEYS_BUCKET: str = proto.contract()["kv_buckets"]["api_keys"]["name"]
DEFAULT_PREFIX = "sb-"
KEY_BYTES = 32
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_CAS_ATTEMPTS = 8  # an update races only with other admin writes to the same key


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def generate_key(prefix: str = DEFAULT_PREFIX) -> str:
    return prefix + secrets.token_urlsafe(KEY_BYTES)


def valid_id(key_id: str) -> bool:
    """An id is a KV key token: nothing a caller sends may name another subject."""
    return bool(_ID.match(key_id))


# the fields an admin may set (create and update); every other field is the gateway's
LIMIT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "owner": str,
    "expires_at": (int, float),  # unix seconds; null: never
    "enabled": bool,
    "models": list,  # allowed model patterns (fnmatch); null: every model
    "rpm": int,  # requests per minute
    "tpm": int,  # tokens per minute
    "max_concurrent": int,  # requests in progress at once
    "budget_total": int,  # tokens over the key's life
    "budget_period_tokens": int,  # tokens per period
    "budget_period_seconds": int,  # the period's length
}


@dataclass
class KeyRecord:
    """One key's record, as stored. Limits are stored here; the edge enforces expiry and `enabled`."""

    id: str
    hash: str
    hint: str  # the key's last 4 characters, for a masked display (`sb-…abcd`)
    prefix: str
    name: str = ""
    owner: str = ""
    created: float = field(default_factory=time.time)
    expires_at: float | None = None
    enabled: bool = True
    models: list[str] | None = None
    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None
    budget_total: int | None = None
    budget_period_tokens: int | None = None
    budget_period_seconds: int | None = None

    def usable(self, now: float) -> bool:
        return self.enabled and (self.expires_at is None or now < self.expires_at)

    def masked(self) -> str:
        return f"{self.prefix}…{self.hint}"

    def encode(self) -> bytes:
        return orjson.dumps(dataclasses.asdict(self))

    @classmethod
    def decode(cls, data: bytes) -> KeyRecord:
        raw = orjson.loads(data)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})  # fields a newer version added: ignored

    def public(self) -> dict[str, Any]:
        """What the admin API shows: everything but the hash, and the key masked."""
        shown = dataclasses.asdict(self)
        del shown["hash"], shown["hint"], shown["prefix"]
        return {"object": "api_key", **shown, "key": self.masked()}


def check_fields(body: dict[str, Any]) -> str | None:
    """The first field of an admin's create/update body that is unknown or of the wrong type."""
    for name, value in body.items():
        kind = LIMIT_FIELDS.get(name)
        if kind is None:
            return name
        if value is None:
            if name in ("name", "owner", "enabled"):
                return name
            continue
        if isinstance(value, bool) and kind is not bool:
            return name
        if not isinstance(value, kind):
            return name
        given: Any = value  # its type checked above
        if kind is int and given < 0:
            return name
        if name == "models" and not all(isinstance(m, str) and m for m in given):
            return name
    return None


async def ensure_keys_bucket(js: JetStreamContext) -> KeyValue:
    """On disk, one revision per key: keys outlive a NATS restart; an update is a compare-and-set."""
    return await ensure_kv(js, KEYS_BUCKET, "API keys (hashes) and their limits")


class KeyAdmin:
    """The writes: create, update, delete. Reads of every key go through `all_records`."""

    def __init__(self, kv: KeyValue, prefix: str = DEFAULT_PREFIX) -> None:
        self.kv = kv
        self.prefix = prefix

    async def create(self, fields: dict[str, Any]) -> tuple[str, KeyRecord, int]:
        """(the key, shown once; its record; the revision)."""
        key = generate_key(self.prefix)
        record = KeyRecord(id="key_" + uuid.uuid4().hex, hash=hash_key(key), hint=key[-4:], prefix=self.prefix)
        record = dataclasses.replace(record, **fields)
        revision = await self.kv.create(record.id, record.encode())
        return key, record, revision

    async def get(self, key_id: str) -> tuple[KeyRecord, int] | None:
        if not valid_id(key_id):
            return None
        try:
            entry = await self.kv.get(key_id)
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        return KeyRecord.decode(entry.value), entry.revision or 0

    async def update(self, key_id: str, fields: dict[str, Any]) -> tuple[KeyRecord, int] | None:
        """Apply `fields` with a compare-and-set on the revision read; None: no such key."""
        for _ in range(_CAS_ATTEMPTS):
            got = await self.get(key_id)
            if got is None:
                return None
            record = dataclasses.replace(got[0], **fields)
            try:
                return record, await self.kv.update(key_id, record.encode(), last=got[1])
            except KeyWrongLastSequenceError:
                continue  # another admin write came between: apply ours to it
        raise RuntimeError(f"key {key_id}: too many concurrent updates")

    async def delete(self, key_id: str) -> bool:
        """True when the key existed."""
        if await self.get(key_id) is None:
            return False
        await self.kv.delete(key_id)
        return True

    async def all_records(self) -> list[KeyRecord]:
        records = []
        watcher = await self.kv.watchall(ignore_deletes=True)
        try:
            async for entry in watcher:
                if entry is None:
                    break
                if entry.value:
                    records.append(KeyRecord.decode(entry.value))
        finally:
            await watcher.stop()
        return sorted(records, key=lambda r: r.created)
