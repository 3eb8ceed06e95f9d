"""libs/keys.py's record and hashing, and the edge's mirror and key store (services/edge/keys.py)."""

from __future__ import annotations

import hashlib
import time

import pytest

from libs.keys import KeyRecord, check_fields, generate_key, hash_key, valid_id
from services.edge.keys import EdgeKeyStore, ManagedKeys
from services.edge.middleware import StaticKeyStore


def record_for(key: str, key_id: str = "key_1", **fields: object) -> KeyRecord:
    return KeyRecord(id=key_id, hash=hash_key(key), hint=key[-4:], prefix="sb-", **fields)  # type: ignore[arg-type]


def test_a_key_has_its_prefix_and_32_random_bytes() -> None:
    keys = {generate_key("sb-") for _ in range(100)}
    assert len(keys) == 100
    for key in keys:
        assert key.startswith("sb-") and len(key) == 3 + 43  # 32 bytes, url-safe base64 without padding
    assert generate_key("team-").startswith("team-")


def test_the_record_holds_the_hash_never_the_key() -> None:
    key = generate_key()
    record = record_for(key, name="n", rpm=5)
    encoded = record.encode()
    assert key.encode() not in encoded and hashlib.sha256(key.encode()).hexdigest().encode() in encoded
    assert KeyRecord.decode(encoded) == record
    assert key not in str(record.public()) and "hash" not in record.public()
    assert record.public()["key"] == record.masked() == "sb-…" + key[-4:]


def test_a_field_a_newer_version_added_is_ignored() -> None:
    record = record_for(generate_key())
    raw = record.encode()[:-1] + b',"from_the_future":1}'
    assert KeyRecord.decode(raw) == record


def test_usable_means_enabled_and_not_expired() -> None:
    now = time.time()
    assert record_for("k").usable(now)
    assert not record_for("k", enabled=False).usable(now)
    assert not record_for("k", expires_at=now - 1).usable(now)
    assert record_for("k", expires_at=now + 60).usable(now)


@pytest.mark.parametrize(("body", "wrong"), [
    ({"rpm": 5, "name": "x", "models": ["gpt-*"], "expires_at": 1.5, "tpm": None}, None),
    ({"rpm": True}, "rpm"), ({"rpm": -1}, "rpm"), ({"rpm": 1.5}, "rpm"), ({"hash": "x"}, "hash"),
    ({"id": "x"}, "id"), ({"models": ["", "a"]}, "models"), ({"name": None}, "name"), ({"enabled": 1}, "enabled"),
])
def test_check_fields(body: dict[str, object], wrong: str | None) -> None:
    assert check_fields(body) == wrong


def test_an_id_cannot_name_another_subject() -> None:
    assert valid_id("key_0123abc") and not valid_id("a.b") and not valid_id("*") and not valid_id(">")
    assert not valid_id("")


def test_the_mirror_keeps_the_newest_revision() -> None:
    mirror = ManagedKeys("sb-")
    key = generate_key()
    mirror.apply("key_1", 5, record_for(key))
    assert mirror.lookup(key) is not None
    mirror.apply("key_1", 4, None)  # an older delete, delivered late: ignored
    assert mirror.lookup(key) is not None
    mirror.apply("key_1", 6, record_for(key, enabled=False))
    assert mirror.lookup(key) is None and "key_1" in mirror.by_id
    mirror.apply("key_1", 7, None)
    assert not mirror.by_hash and not mirror.by_id


async def test_static_keys_first_then_managed_and_when_the_edge_runs_open() -> None:
    mirror = ManagedKeys("sb-")
    key = generate_key()
    store = EdgeKeyStore(StaticKeyStore(["static-key-123456"]), mirror, admin_key=False)
    assert not store.is_open() and await store.authenticate("static-key-123456")
    assert not await store.authenticate(key)
    mirror.apply("key_1", 1, record_for(key))
    assert await store.authenticate(key) and not await store.authenticate(key + "x")

    open_store = EdgeKeyStore(StaticKeyStore([]), ManagedKeys("sb-"), admin_key=False)
    assert open_store.is_open()
    assert not EdgeKeyStore(StaticKeyStore([]), ManagedKeys("sb-"), admin_key=True).is_open()
    open_store.managed.apply("key_1", 1, record_for(key))  # a key made from the shell closes it
    assert not open_store.is_open()
