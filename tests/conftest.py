"""Real processes on loopback for the integration and contract tiers.

One nats-server (JetStream), one sandbox upstream, one edge and two openai-workers are shared by
the session; tests that need their own topology (a pool to exhaust, a worker to kill) start
extra workers on pools of their own through `start_worker`. A wiretap subscribed to `>` for the
whole session checks every bus message against proto/.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS

from libs import fenced
from libs.devproc import Proc, free_port, spawn_python_service, start_nats_server
from tests.wiretap import Wiretap

# The one test time unit: every service limit is scaled by this (SY_TIME_SCALE), so a slow CI
# machine can stretch them all at once.
TIME_SCALE = float(os.environ.get("SY_TEST_TIME_SCALE", "0.1"))
AUTH_KEY = "sy-test-key-0123456789"
SLASHED_MODEL = "meta-llama/Meta-Llama-3-70B-Instruct"  # model ids may contain '/' (seed 004)
SANDBOX_KEY = "sk-sandbox-secret-abcdef123456"
MODERATION_MODELS = "omni-moderation-latest,text-moderation-latest"  # the sandbox's, served by the stack
BUILTIN_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
EMBEDDING_UPSTREAM_MODELS = "text-embedding-3-small,intfloat/e5-large-v2"  # the sandbox's

# Pools: "openai" (shared, roomy), "tight" (capacity tests), "fragile" (kill tests).
ROUTES = "sandbox-*=openai,tight-*=tight,fragile-*=fragile,fanout-*=fanout,unserved-*=ghost"


@dataclass
class Stack:
    nats_url: str
    edge_url: str
    sandbox_url: str
    log_dir: Path
    procs: list[Proc] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return self.edge_url + "/v1"


def service_env(nats_url: str, **extra: str) -> dict[str, str]:
    env = {"NATS_URL": nats_url, "SY_TIME_SCALE": str(TIME_SCALE), "LOG_LEVEL": "INFO"}
    env.update(extra)
    return env


@pytest.fixture(params=["private", "public"])
def nats_apis(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Runs a test twice in this process: with libs/fenced's nats-py fast paths, and with nats-py's
    public API only (`SY_PRIVATE_APIS=0`), the way an untested nats-py release would run."""
    private = request.param == "private"
    if private and fenced.untested_versions():
        pytest.skip(f"fast paths unavailable: untested {', '.join(fenced.untested_versions())}")
    monkeypatch.setenv(fenced.SWITCH, "1" if private else "0")
    fenced.private_apis_enabled.cache_clear()  # decided once per process otherwise
    assert fenced.private_apis_enabled() is private
    yield request.param
    fenced.private_apis_enabled.cache_clear()


@pytest.fixture(scope="session")
def log_dir() -> Iterator[Path]:
    if os.environ.get("SY_TEST_KEEP_LOGS"):  # to read the services' logs after a failing run
        yield Path(tempfile.mkdtemp(prefix="switchyard-tests-"))
        return
    with tempfile.TemporaryDirectory(prefix="switchyard-tests-") as tmp:
        yield Path(tmp)


@pytest.fixture(scope="session")
def nats_server(log_dir: Path) -> Iterator[Proc]:
    proc = start_nats_server(log_dir=log_dir, store_dir=log_dir / "jetstream")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def private_nats(log_dir: Path, request: pytest.FixtureRequest) -> Iterator[Proc]:
    """A nats-server of the test module's own, for subjects proto/ does not name (the session's
    wiretap would rightly flag them on the shared one)."""
    name = request.module.__name__.rsplit(".", 1)[-1]
    proc = start_nats_server(log_dir=log_dir / name, store_dir=log_dir / name / "js")
    yield proc
    proc.stop()


@pytest_asyncio.fixture
async def private_nc(private_nats: Proc) -> AsyncIterator[NATS]:
    client = await nats.connect(private_nats.url)
    yield client
    if not client.is_closed:
        await client.close()


@pytest_asyncio.fixture(scope="session")
async def wiretap(nats_server: Proc) -> AsyncIterator[Wiretap]:
    tap = Wiretap()
    nc = await nats.connect(nats_server.url)
    await tap.attach(nc)
    yield tap
    await nc.drain()
    assert not tap.violations, "bus messages that break proto/:\n" + "\n".join(tap.violations[:20])


@pytest.fixture(scope="session")
def sandbox(log_dir: Path) -> Iterator[Proc]:
    port = free_port()
    proc = spawn_python_service(
        "sandbox", "services.sandbox",
        env={"PORT": str(port), "SANDBOX_API_KEY": SANDBOX_KEY},
        log_dir=log_dir, health_url=f"http://127.0.0.1:{port}/healthz",
    )
    proc.url = f"http://127.0.0.1:{port}"
    yield proc
    proc.stop()


def start_edge(nats_url: str, log_dir: Path, name: str = "edge", **extra: str) -> Proc:
    port = free_port()
    defaults = {"PORT": str(port), "AUTH_TOKEN": AUTH_KEY, "SY_ROUTES": ROUTES,
                "SY_ALIASES": "fast=sandbox-fast,ghostly=nothing-live", "EDGE_ID": name}
    env = service_env(nats_url, **{**defaults, **extra})  # a test's own settings win
    proc = spawn_python_service("edge" if name == "edge" else name, "services.edge", env=env, log_dir=log_dir,
                                health_url=f"http://127.0.0.1:{port}/readyz")
    proc.url = f"http://127.0.0.1:{port}"
    return proc


def start_worker_proc(
    nats_url: str, sandbox_url: str, log_dir: Path, *, name: str, pool: str, models: str, capacity: int = 8,
    **extra: str,
) -> Proc:
    port = free_port()
    upstream = {"OPENAI_BASE_URL": sandbox_url + "/v1", "OPENAI_API_KEY": SANDBOX_KEY, "OPENAI_MODELS": models}
    upstream.update(extra)
    env = service_env(
        nats_url, PORT=str(port), WORKER_POOL=pool, WORKER_CAPACITY=str(capacity), WORKER_ID=name, **upstream
    )
    proc = spawn_python_service(name, "services.openai_worker", env=env, log_dir=log_dir,
                                health_url=f"http://127.0.0.1:{port}/readyz")
    proc.url = f"http://127.0.0.1:{port}"
    return proc


def start_embeddings_worker(nats_url: str, sandbox_url: str, log_dir: Path, *, name: str = "embeddings-0",
                            pool: str = "embeddings", **extra: str) -> Proc:
    """embeddings-worker: the built-in model, and the sandbox as the upstream of EMBEDDING_UPSTREAM_MODELS."""
    port = free_port()
    env = service_env(nats_url, PORT=str(port), WORKER_POOL=pool, WORKER_ID=name,
                      EMBEDDINGS_BASE_URL=sandbox_url + "/v1", EMBEDDINGS_API_KEY=SANDBOX_KEY,
                      EMBEDDINGS_MODELS=EMBEDDING_UPSTREAM_MODELS, **extra)
    proc = spawn_python_service(name, "services.embeddings_worker", env=env, log_dir=log_dir,
                                health_url=f"http://127.0.0.1:{port}/readyz")
    proc.url = f"http://127.0.0.1:{port}"
    return proc


@pytest_asyncio.fixture(scope="session")
async def stack(nats_server: Proc, sandbox: Proc, wiretap: Wiretap, log_dir: Path) -> AsyncIterator[Stack]:
    edge = start_edge(nats_server.url, log_dir)
    workers = [
        start_worker_proc(nats_server.url, sandbox.url, log_dir, name=f"openai-{i}", pool="openai",
                          models=f"sandbox-chat,sandbox-fast,{SLASHED_MODEL}", capacity=16,
                          OPENAI_MODERATION_MODELS=MODERATION_MODELS)
        for i in range(2)
    ]
    embeddings = start_embeddings_worker(nats_server.url, sandbox.url, log_dir)
    stack = Stack(nats_server.url, edge.url, sandbox.url, log_dir, [edge, *workers, embeddings])
    await wait_for_models(stack, {"sandbox-chat", "sandbox-fast", BUILTIN_EMBEDDING_MODEL})
    yield stack
    for proc in reversed(stack.procs):
        proc.stop()


async def wait_for_models(stack: Stack, models: set[str], within: float = 15.0) -> None:
    import httpx

    async with httpx.AsyncClient(headers={"authorization": f"Bearer {AUTH_KEY}"}) as client:
        deadline = asyncio.get_running_loop().time() + within
        while True:
            listed = {m["id"] for m in (await client.get(stack.base_url + "/models")).json()["data"]}
            if models <= listed:
                return
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"models {models - listed} never became live")
            await asyncio.sleep(0.05)


@pytest.fixture
def start_worker(stack: Stack) -> Iterator[Callable[..., Proc]]:
    """Extra workers for one test; stopped (by PID) when it ends."""
    started: list[Proc] = []

    def start(**kwargs: object) -> Proc:
        proc = start_worker_proc(stack.nats_url, stack.sandbox_url, stack.log_dir, **kwargs)  # type: ignore[arg-type]
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop(grace=5)


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one series in a Prometheus exposition (0 when absent), labels in any order."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if match and ",".join(sorted(match.group(1).split(","))) == wanted:
            return float(match.group(2))
    return 0.0
