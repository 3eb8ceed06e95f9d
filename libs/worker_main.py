"""Running a worker process: NATS, the runtime, a small HTTP server for probes and metrics, signals.

Each worker's `__main__` builds its backend and calls `run_worker` (inside `exit_on_start_failure`).
A backend that uses JetStream itself (an image worker writes the object store) has an optional
`async def attach(self, js: JetStreamContext)`, called with the worker's context before the first job.
A backend that serves HTTP or websocket routes of its own (agent-bridge's /client/register) has an
optional `routes()`: Starlette routes added to the probe server's app (they share its port); one
with core NATS subscriptions of its own has an optional `async def attach_bus(self, nc)`, called first;
one whose announced accounts change between beats has an `announcer` attribute, set to the runtime's
`announce` (agent-bridge: an agent joined or left).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import uuid
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import uvicorn
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from libs.bus import connect
from libs.errors import BusError
from libs.gc_tuning import settle_after_startup
from libs.logs import log_config, url_without_credentials
from libs.metrics_http import metrics_response
from libs.probes import PID_HEADER
from libs.settings import env_int, env_str
from libs.timeouts import Timeouts
from libs.worker_backend import Backend
from libs.worker_metrics import WorkerMetrics
from libs.worker_runtime import WorkerConfig, WorkerRuntime

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
    def from_env(cls, default_pool: str, default_capacity: int = 64) -> WorkerProcessSettings:
        pool = env_str("WORKER_POOL", default_pool)
        return cls(
            nats_url=env_str("NATS_URL", "nats://127.0.0.1:4222"),
            pool=pool,
            capacity=env_int("WORKER_CAPACITY", default_capacity, minimum=1),
            http_host=env_str("WORKER_HOST", "127.0.0.1"),
            http_port=env_int("PORT", 9090, minimum=0),
            worker_id=env_str("WORKER_ID", "") or f"{pool}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}",
            timeouts=Timeouts.from_env(),
        )


def probe_app(
    runtime: Callable[[], WorkerRuntime | None], registry: CollectorRegistry, extra: Sequence[BaseRoute] = (),
) -> Starlette:
    pid = {PID_HEADER: str(os.getpid())}

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("OK", headers=pid)

    async def readyz(request: Request) -> Response:
        rt = runtime()
        # ready once it can take jobs: connected, its consumer made (the stream may not exist yet:
        # the edge makes it) and pulling, and not draining
        ready = rt is not None and rt.pulling and rt.nc.is_connected and not rt.draining
        return PlainTextResponse("OK" if ready else "not ready", status_code=200 if ready else 503, headers=pid)

    async def metrics(request: Request) -> Response:
        return metrics_response(registry)

    return Starlette(routes=[
        Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics), *extra,
    ])


class _ProbeServer(uvicorn.Server):
    """uvicorn for probes and metrics only: the worker, not uvicorn, owns SIGTERM (drain first)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class StartFailed(Exception):
    """The worker could not start; the message says why in one line."""


def _bind_probe(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise StartFailed(f"cannot listen on {host}:{port} (PORT, WORKER_HOST): {exc.strerror or exc}") from None
    return sock


async def run_worker(
    service: str, settings: WorkerProcessSettings, make_backend: Callable[[WorkerMetrics], Backend],
) -> None:
    # SIGTERM and SIGINT are ours from the first moment: a worker told to stop while it still
    # connects to NATS or waits for its stream stops then, rather than when that succeeds
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry, settings.pool)
    backend = make_backend(metrics)
    holder: list[WorkerRuntime] = []
    routes = getattr(backend, "routes", None)  # optional: the Backend protocol does not require it
    server = _ProbeServer(uvicorn.Config(
        probe_app(lambda: holder[0] if holder else None, registry, routes() if routes is not None else ()),
        host=settings.http_host, port=settings.http_port, log_level="warning", access_log=False,
        lifespan="off", log_config=log_config(service, env_str("LOG_LEVEL", "INFO")),
    ))
    # bound here, not by uvicorn: uvicorn answers a port in use with sys.exit() inside its task,
    # which leaves asyncio cancelling a half-made NATS connection on the way out
    probe_socket = _bind_probe(settings.http_host, settings.http_port)
    http_task = asyncio.create_task(server.serve(sockets=[probe_socket]), name="probe-http")

    async def restore() -> None:
        if holder:
            await holder[0].restore()

    async def start() -> WorkerRuntime:
        nc = await connect(settings.nats_url, name=settings.worker_id, on_reconnect=restore)
        runtime = WorkerRuntime(nc, backend, WorkerConfig(
            worker_id=settings.worker_id, pool=settings.pool, capacity=settings.capacity,
            timeouts=settings.timeouts,
        ), metrics)
        holder.append(runtime)
        if hasattr(backend, "announcer"):  # optional: a backend whose announced state changes between beats
            backend.announcer = runtime.announce
        attach_bus = getattr(backend, "attach_bus", None)  # optional: a backend with subscriptions of its own
        if attach_bus is not None:
            await attach_bus(runtime.nc)
        attach = getattr(backend, "attach", None)  # optional: the Backend protocol does not require it
        if attach is not None:
            await attach(runtime.js)
        await runtime.start()
        return runtime

    try:
        runtime = await _until_stopped(start(), stop, http_task, settings, connected=lambda: bool(holder))
    except BaseException:
        await backend.aclose()
        if holder:
            with contextlib.suppress(Exception):
                await holder[0].nc.close()
        server.should_exit = True
        with contextlib.suppress(BaseException):
            await http_task
        raise
    settle_after_startup()
    log.info("worker %s ready (pool %s, capacity %d)", settings.worker_id, settings.pool, settings.capacity,
             extra={"worker_id": settings.worker_id, "pool": settings.pool})
    await stop.wait()
    log.info("draining: %d job(s) in flight", runtime.in_flight)
    await runtime.drain()
    await backend.aclose()
    await runtime.nc.drain()
    server.should_exit = True
    await http_task


async def _until_stopped(
    starting: Coroutine[Any, Any, WorkerRuntime], stop: asyncio.Event, http_task: asyncio.Task[None],
    settings: WorkerProcessSettings, *, connected: Callable[[], bool],
) -> WorkerRuntime:
    """The started runtime, or StartFailed when a signal, the probe server or NATS ends the start."""
    start_task = asyncio.create_task(starting, name="start")
    stop_task = asyncio.create_task(stop.wait(), name="stop-signal")
    try:
        await asyncio.wait({start_task, stop_task, http_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop_task.cancel()
    if start_task.done():
        try:
            return start_task.result()
        except BusError as exc:
            raise StartFailed(str(exc)) from None
    start_task.cancel()
    with contextlib.suppress(BaseException):
        await start_task
    if http_task.done():  # uvicorn has logged why
        raise StartFailed(f"probe server on {settings.http_host}:{settings.http_port} failed to start")
    doing = "waiting for the job stream on" if connected() else "connecting to"
    raise StartFailed(f"stopped by a signal while {doing} NATS at {url_without_credentials(settings.nats_url)}")


def exit_on_start_failure(run: Callable[[], None]) -> None:
    """Run a worker; a failed start ends the process with one log line and exit status 1."""
    try:
        run()
    except StartFailed as exc:
        log.error("start-up failed: %s", exc)
        raise SystemExit(1) from None
