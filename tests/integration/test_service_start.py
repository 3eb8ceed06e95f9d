"""Starting and stopping each service as a process: configuration errors are one line, an
unreachable NATS is named (never its credentials), SIGTERM is obeyed at every stage, a readiness
check knows whose answer it got, and a clean shutdown writes no warning. Every line is JSON.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest

from libs.devproc import REPO_ROOT, Proc, base_env, free_port, spawn, spawn_python_service
from tests.conftest import SANDBOX_KEY, start_edge, start_worker_proc

UNREACHABLE = "nats://someone:hunter22@127.0.0.1:1"
WORKER_ENV = {"OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "OPENAI_MODELS": "m", "PORT": "0"}


def run_service(module: str, env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module], cwd=REPO_ROOT, env={**base_env(), **env},
                          capture_output=True, text=True, timeout=timeout)


def json_lines(text: str) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in text.splitlines()]  # fails on any line that is not JSON


@pytest.mark.parametrize(("module", "env", "variable"), [
    ("services.openai_worker", {**WORKER_ENV, "WORKER_CAPACITY": "abc"}, "WORKER_CAPACITY"),
    ("services.openai_worker", {**WORKER_ENV, "PORT": "x"}, "PORT"),
    ("services.openai_worker", {**WORKER_ENV, "OPENAI_MODELS": ""}, "OPENAI_MODELS"),
    ("services.openai_worker", {**WORKER_ENV, "LOG_LEVEL": "loud"}, "LOG_LEVEL"),
    ("services.edge", {"PORT": "x"}, "PORT"),
    ("services.edge", {"SY_ROUTES": "nonsense"}, "SY_ROUTES"),
])
def test_a_config_error_is_one_json_line_and_exit_status_2(module: str, env: dict[str, str], variable: str) -> None:
    done = run_service(module, env)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    [entry] = json_lines(done.stderr)
    assert entry["level"] == "error"
    assert variable in str(entry["msg"])


def test_the_sandbox_config_error_is_one_line() -> None:
    done = run_service("services.sandbox", {"PORT": "x"})
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "PORT" in done.stderr and "Traceback" not in done.stderr


def test_an_unreachable_nats_ends_the_start_with_one_line_naming_it() -> None:
    env = {"NATS_URL": UNREACHABLE, "SY_TIME_SCALE": "0.1"}
    services = {
        "services.openai_worker": subprocess.Popen(
            [sys.executable, "-m", "services.openai_worker"], cwd=REPO_ROOT, env={**base_env(), **env, **WORKER_ENV},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
        "services.edge": subprocess.Popen(
            [sys.executable, "-m", "services.edge"], cwd=REPO_ROOT,
            env={**base_env(), **env, "PORT": str(free_port()), "AUTH_TOKEN": "k" * 20},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
    }
    try:
        for module, popen in services.items():
            out, err = popen.communicate(timeout=30)
            assert popen.returncode not in (0, None), module
            [entry] = json_lines(err)
            assert entry["level"] == "error", module
            assert "cannot connect to NATS at nats://127.0.0.1:1" in str(entry["msg"]), module
            assert "hunter22" not in out + err
    finally:
        for popen in services.values():
            if popen.poll() is None:
                popen.kill()
            popen.communicate(timeout=10)


def wait_for(predicate: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_sigterm_while_connecting_to_nats_stops_each_service_at_once(tmp_path: Path) -> None:
    port = free_port()
    worker = spawn("worker", [sys.executable, "-m", "services.openai_worker"], log_dir=tmp_path,
                   env={**WORKER_ENV, "NATS_URL": UNREACHABLE, "PORT": str(port)})
    # the edge warns of open mode as its start begins, before it connects
    edge = spawn("edge", [sys.executable, "-m", "services.edge"], log_dir=tmp_path,
                 env={"NATS_URL": UNREACHABLE, "PORT": str(free_port())})
    try:
        wait_for(lambda: "AUTH_TOKEN is not set" in edge.log(), 20, edge.log())
        wait_for(lambda: _answers(port), 20, worker.log())  # its probes are up: it is connecting now
        for proc in (worker, edge):
            proc.signal(signal.SIGTERM)
        for proc in (worker, edge):
            proc.popen.wait(timeout=5)  # well within the 10 s the first connection is given
            assert proc.popen.returncode != 0, proc.log()
            last = json_lines(proc.log())[-1]
            assert last["level"] == "error" and "signal" in str(last["msg"]), proc.log()
            assert "nats://127.0.0.1:1" in str(last["msg"]) and "hunter22" not in proc.log()
    finally:
        worker.stop()
        edge.stop()


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_readiness_check_answered_by_another_process_fails_at_once(tmp_path: Path, sandbox: Proc) -> None:
    held = int(sandbox.url.rsplit(":", 1)[1])
    procs: list[Proc] = []
    started = time.monotonic()
    try:
        with pytest.raises(RuntimeError) as failure:
            # NATS never answers, so this edge never binds: only the sandbox answers on its port
            spawn_python_service("edge-late", "services.edge", env={"NATS_URL": UNREACHABLE, "PORT": str(held)},
                                 log_dir=tmp_path, health_url=f"http://127.0.0.1:{held}/healthz", timeout=30,
                                 on_spawn=procs.append)
    finally:
        for proc in procs:
            proc.stop()
    assert time.monotonic() - started < 5
    assert f"port {held}" in str(failure.value) and f"pid {sandbox.pid}" in str(failure.value)


def test_a_port_in_use_is_one_json_line_naming_it(sandbox: Proc, nats_server: Proc) -> None:
    held = sandbox.url.rsplit(":", 1)[1]
    worker = run_service("services.openai_worker", {**WORKER_ENV, "NATS_URL": UNREACHABLE, "PORT": held})
    assert worker.returncode == 1
    [entry] = json_lines(worker.stderr)
    assert held in str(entry["msg"]) and "PORT" in str(entry["msg"])
    # the edge binds through uvicorn, once connected to NATS: uvicorn's own error is JSON too
    edge = run_service("services.edge", {"NATS_URL": nats_server.url, "PORT": held, "AUTH_TOKEN": "k" * 20})
    assert edge.returncode != 0
    entries = json_lines(edge.stderr)
    assert any(held in str(e["msg"]) and e["logger"] == "uvicorn.error" for e in entries), edge.stderr


def test_a_clean_shutdown_logs_no_warning(nats_server: Proc, sandbox: Proc, log_dir: Path) -> None:
    edge = start_edge(nats_server.url, log_dir, name="edge-clean")
    worker = start_worker_proc(nats_server.url, sandbox.url, log_dir, name="worker-clean", pool="clean",
                               models="clean-model", OPENAI_API_KEY=SANDBOX_KEY)
    for proc in (edge, worker):
        proc.stop()
    for proc in (edge, worker):
        entries = json_lines(proc.log())
        assert any("ready" in str(e["msg"]) for e in entries), proc.log()  # the ready line is JSON too
        assert not [e for e in entries if e["level"] in ("warning", "error", "critical")], proc.log()


def test_environment_reaching_a_child_is_the_base_and_what_is_passed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTH_TOKEN", "parent-secret-0123456789")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-parent-0123456789")
    monkeypatch.setenv("SY_TIMEOUT_DRAIN", "7")
    proc = spawn("env-dump", [sys.executable, "-c", "import os, json; print(json.dumps(dict(os.environ)))"],
                 env={"GIVEN": "yes"}, log_dir=tmp_path)
    proc.popen.wait(timeout=30)
    seen = orjson.loads(proc.log())
    assert "AUTH_TOKEN" not in seen and "OPENAI_API_KEY" not in seen
    assert seen["GIVEN"] == "yes" and seen["SY_TIMEOUT_DRAIN"] == "7" and seen["PATH"] == os.environ["PATH"]


def test_logs_are_appended_and_a_proc_reads_its_own_run(tmp_path: Path) -> None:
    first = spawn("twice", [sys.executable, "-c", "print('first run')"], log_dir=tmp_path)
    first.popen.wait(timeout=30)
    second = spawn("twice", [sys.executable, "-c", "print('second run')"], log_dir=tmp_path)
    second.popen.wait(timeout=30)
    assert (tmp_path / "twice.log").read_text() == "first run\nsecond run\n"
    assert second.log() == "second run\n"


async def test_a_worker_is_ready_only_once_it_can_take_jobs(tmp_path: Path) -> None:
    """A worker that started before any edge made the work queue is alive but not ready: it cannot
    take a job yet. It turns ready once the queue exists and it pulls from its pool's consumer."""
    import nats as nats_py

    from libs.bus import ensure_job_stream
    from libs.devproc import start_nats_server

    own = start_nats_server(log_dir=tmp_path, store_dir=tmp_path / "js")
    port = free_port()
    worker = spawn_python_service("early-worker", "services.openai_worker", log_dir=tmp_path,
                                  env={**WORKER_ENV, "NATS_URL": own.url, "PORT": str(port)},
                                  health_url=f"http://127.0.0.1:{port}/healthz")
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(5):  # it waits for the stream meanwhile (up to 30 s)
                assert (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 503
                await asyncio.sleep(0.1)
            nc = await nats_py.connect(own.url)
            await ensure_job_stream(nc.jetstream(), max_age=60, duplicate_window=2)
            await nc.close()
            deadline = time.monotonic() + 10
            while (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code != 200:
                assert time.monotonic() < deadline, worker.log()
                await asyncio.sleep(0.05)
    finally:
        worker.stop()
        own.stop()
