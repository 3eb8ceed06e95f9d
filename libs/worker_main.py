"""Running a worker process: NATS, the runtime, a small HTTP server for probes and metrics, signals.

Each worker's `__main__` builds its backend and calls `run_worker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import uvicorn
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from libs.bus import connect
from libs.gc_tuning import settle_after_startup
from libs.metrics_http import metrics_response
from libs.settings import env_int, env_str
from libs.timeouts import Timeouts
from libs.worker_metrics import WorkerMetrics
from libs.worker_runtime import Backend, WorkerConfig, WorkerRuntime

log = logging.getLogger("switchyard.worker")


@dataclass(frozen=True)
class WorkerProcessSettings:
    nats_url: str
    pool: str
    capacity: int
    http_host: str
    http_port: int
    worker_id: str
    timeouts: Timeouts

    @classmethod
    def from_env(cls, default_pool: str) -> WorkerProcessSettings:
        pool = env_str("WORKER_POOL", default_pool)
        return cls(
            nats_url=env_str("NATS_URL", "nats://127.0.0.1:4222"),
            pool=pool,
            capacity=env_int("WORKER_CAPACITY", 64, minimum=1),
            http_host=env_str("WORKER_HOST", "127.0.0.1"),
            http_port=env_int("PORT", 9090, minimum=0),
            worker_id=env_str("WORKER_ID", "") or f"{pool}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}",
            timeouts=Timeouts.from_env(),
        )


def probe_app(runtime: Callable[[], WorkerRuntime | None], registry: CollectorRegistry) -> Starlette:
    async def healthz(request: Request) -> Response:
        return PlainTextResponse("OK")

    async def readyz(request: Request) -> Response:
        rt = runtime()
        ready = rt is not None and rt.nc.is_connected and not rt.draining
        return PlainTextResponse("OK" if ready else "not ready", status_code=200 if ready else 503)

    async def metrics(request: Request) -> Response:
        return metrics_response(registry)

    return Starlette(routes=[
        Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics),
    ])


class _ProbeServer(uvicorn.Server):
    """uvicorn for probes and metrics only: the worker, not uvicorn, owns SIGTERM (drain first)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def run_worker(settings: WorkerProcessSettings, make_backend: Callable[[WorkerMetrics], Backend]) -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry, settings.pool)
    backend = make_backend(metrics)
    holder: list[WorkerRuntime] = []
    server = _ProbeServer(uvicorn.Config(
        probe_app(lambda: holder[0] if holder else None, registry),
        host=settings.http_host, port=settings.http_port, log_level="warning", access_log=False,
        lifespan="off",
    ))
    http_task = asyncio.create_task(server.serve(), name="probe-http")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def restore() -> None:
        if holder:
            await holder[0].restore()

    nc = await connect(settings.nats_url, name=settings.worker_id, on_reconnect=restore)
    runtime = WorkerRuntime(nc, backend, WorkerConfig(
        worker_id=settings.worker_id, pool=settings.pool, capacity=settings.capacity, timeouts=settings.timeouts,
    ), metrics)
    holder.append(runtime)
    await runtime.start()
    settle_after_startup()
    print(f"worker {settings.worker_id} ready (pool {settings.pool}, capacity {settings.capacity})", flush=True)
    await stop.wait()
    log.info("draining: %d job(s) in flight", runtime.in_flight)
    await runtime.drain()
    await backend.aclose()
    await nc.drain()
    server.should_exit = True
    await http_task
