"""The open routes: `/` (seed 000's health check), liveness, readiness, Prometheus metrics."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import Receive, Scope, Send

from libs.probes import pid_header
from services.edge.asgi_io import send_bytes
from services.edge.state import EdgeState

# health and readiness answers name the process that gave them (libs/probes.py)
_TEXT = [(b"content-type", b"text/plain; charset=utf-8"), pid_header()]


class Health:
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_bytes(send, 200, b"OK", _TEXT)


class Ready:
    """Ready while connected to NATS with the work queue in place (restored after a reconnect),
    and not draining (load balancers stop sending on 503)."""

    def __init__(self, state: EdgeState) -> None:
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        dispatcher = getattr(self.state, "dispatcher", None)
        ready = dispatcher is not None and dispatcher.gate.open and not self.state.draining
        await send_bytes(send, 200 if ready else 503, b"OK" if ready else b"not ready", _TEXT)


class Metrics:
    def __init__(self, state: EdgeState) -> None:
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        routing = self.state.routing
        for pool in {p for _, p in routing.live_models().items()}:
            capacity, in_flight = routing.live_capacity(pool)
            self.state.metrics.pool_capacity.labels(pool=pool).set(capacity)
            self.state.metrics.pool_in_flight.labels(pool=pool).set(in_flight)
        body = generate_latest(self.state.metrics.registry)
        await send_bytes(send, 200, body, [(b"content-type", CONTENT_TYPE_LATEST.encode())])
