"""A pool policy's times under SY_TIME_SCALE, as every other service limit (tests run at 0.1)."""

from __future__ import annotations

import dataclasses

from libs.account_pool.pool import PoolPolicy
from libs.settings import env_float


def time_scaled(policy: PoolPolicy | None = None, scale: float | None = None) -> PoolPolicy:
    """`policy` (default PoolPolicy()) with every duration times `scale` (default SY_TIME_SCALE)."""
    policy = policy or PoolPolicy()
    scale = env_float("SY_TIME_SCALE", 1.0) if scale is None else scale
    return dataclasses.replace(policy, lease_ttl=policy.lease_ttl * scale, cooldown=policy.cooldown * scale,
                               cloudflare_cooldown=policy.cloudflare_cooldown * scale,
                               max_cooldown=policy.max_cooldown * scale, failure_window=policy.failure_window * scale)
