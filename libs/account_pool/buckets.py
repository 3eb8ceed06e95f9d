"""The web workers' KV buckets (proto/subjects.toml [kv_buckets]), made with libs/kv_buckets.ensure_kv."""

from __future__ import annotations

import proto

ACCOUNTS_BUCKET: str = proto.contract()["kv_buckets"]["accounts"]["name"]
CONVERSATIONS_BUCKET: str = proto.contract()["kv_buckets"]["conversations"]["name"]
