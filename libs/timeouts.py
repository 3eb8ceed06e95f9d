"""Every time limit of a request, in one explicit object (as httpx.Timeout does for HTTP).

Defaults come from the environment; SY_TIME_SCALE multiplies all of them, so tests can run
the same logic with limits a tenth (or less) as long.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from libs.settings import env_float

# Limits where 0 is a documented setting rather than a mistake; every other limit must be > 0.
_ZERO_ALLOWED = frozenset({"confirm_window"})


@dataclass(frozen=True)
class Timeouts:
    queue_wait: float = 10.0  # until a worker starts the job, else 503 no_capacity
    first_token: float = 60.0  # from start to the first delta
    idle: float = 30.0  # longest gap between deltas
    total: float = 600.0  # the whole request
    heartbeat: float = 5.0  # a worker says it is alive this often while the upstream is silent
    keepalive: float = 15.0  # SSE comment to keep proxies from closing an idle stream
    ack_wait: float = 5.0  # JetStream redelivers an unacked job after this (a dead worker)
    drain: float = 30.0  # graceful shutdown: finish in-flight streams within this
    readiness_grace: float = 5.0  # edge: /readyz is 503 this long before it stops accepting
    publish_ack: float = 5.0  # edge: JetStream confirms it stored a job within this, else 503
    # edge: after JetStream confirmed a pool's job, the pool's jobs within this are published
    # without asking; one not started within it is confirmed then (0: confirm every job at once)
    confirm_window: float = 1.0
    # edge: from connect (or a keep-alive request's first byte) until the request's head is complete,
    # else the connection is closed (408 if part of a head came); also a body's allowance before
    # MIN_BODY_RATE applies
    request_head: float = 10.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Timeouts:
        scale = env_float("SY_TIME_SCALE", 1.0, env)
        base = cls()

        def read(field: str, default: float) -> float:
            return env_float(f"SY_TIMEOUT_{field.upper()}", default, env, zero=field in _ZERO_ALLOWED) * scale

        return cls(**{name: read(name, getattr(base, name)) for name in cls.__dataclass_fields__})

    @property
    def worker_silence(self) -> float:
        """How long the edge waits with no message at all before presuming the worker dead."""
        return self.heartbeat * 3
