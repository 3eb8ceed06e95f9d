"""The KV buckets of proto/subjects.toml ([kv_buckets]), made idempotently by every web worker."""

from __future__ import annotations

import logging

from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import BadRequestError
from nats.js.kv import KeyValue

import proto

log = logging.getLogger("switchyard.account_pool")

ACCOUNTS_BUCKET: str = proto.contract()["kv_buckets"]["accounts"]["name"]
CONVERSATIONS_BUCKET: str = proto.contract()["kv_buckets"]["conversations"]["name"]


async def ensure_kv(js: JetStreamContext, bucket: str, description: str, *, ttl: float | None = None) -> KeyValue:
    """A bucket keeping one revision per key (writes are compare-and-set or plain puts), on disk:
    an account's cooldown or quarantine, and which web conversation a transcript continues, must
    outlive a restart of the NATS server too. Neither holds a prompt or a secret (names, ids,
    hashes, times), unlike the job stream, which stays in memory.

    Every replica asks with the same config, which JetStream treats as a no-op; one that exists
    with another config (an operator's change, another TTL) is used as it is."""
    config = js_api.KeyValueConfig(
        bucket=bucket, description=description, history=1, ttl=ttl, storage=js_api.StorageType.FILE,
    )
    try:
        return await js.create_key_value(config)
    except BadRequestError:
        log.info("KV bucket %s exists with another config; using it as is", bucket)
        return await js.key_value(bucket)
