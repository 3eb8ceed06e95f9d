"""Making a KV bucket of proto/subjects.toml ([kv_buckets]) idempotently: every owner's one way."""

from __future__ import annotations

import logging

from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import BadRequestError
from nats.js.kv import KeyValue

log = logging.getLogger("switchyard.kv")


async def ensure_kv(js: JetStreamContext, bucket: str, description: str, *, ttl: float | None = None) -> KeyValue:
    """A bucket keeping one revision per key (writes are compare-and-set or plain puts), on disk:
    what the buckets hold (accounts' cooldowns, conversations, key hashes, limit counters and
    budgets) must outlive a restart of the NATS server too. None holds a prompt or a secret,
    unlike the job stream, which stays in memory.

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
