"""`make bench-instr`: user-space instructions per non-stream request of the edge and the worker.

CPU time on this kind of machine drifts by up to 30 % between runs, more than most single changes
to the hot path are worth. Instructions counted by valgrind's callgrind do not drift: the same code
gives the same count (within about 1 %) whatever else the machine is doing. So a change to Python
code on the hot path is judged here first, and by `make bench` / `make bench-ab` for the time it
takes (the kernel's share, wake-ups and syscalls, is not counted here).

Starts nats-server and the sandbox as usual and the edge and openai-worker under callgrind with
instrumentation off; after a warm-up, counts `BENCH_INSTR_N` (300) sequential requests. With
`BENCH_INSTR_SKELETON=1` it counts tools/bench_skeleton.py's front and back instead (the floor).
Needs valgrind (Debian: apt-get install valgrind). Every process it started is stopped by PID.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from libs.devproc import Proc, free_port, spawn, spawn_python_service, start_nats_server, wait_http_ok
from tools.bench import MODEL, NONSTREAM_TOKENS, QUIET, chat_body, wait_for_model

N = int(os.environ.get("BENCH_INSTR_N", "300"))
WARM = 150
SKELETON = os.environ.get("BENCH_INSTR_SKELETON", "") not in ("", "0")


def under_callgrind(name: str, argv: list[str], env: dict[str, str], out_dir: Path, health: str | None) -> Proc:
    """A process under callgrind with instrumentation off until `callgrind_control -i on`."""
    proc = spawn(name, ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                        f"--callgrind-out-file={out_dir / name}.out", *argv], env=env, log_dir=out_dir)
    if health:
        wait_http_ok(proc, health, timeout=240)  # Python under valgrind starts slowly
    return proc


def start_counted(nats_url: str, upstream: str, out_dir: Path) -> tuple[Proc, Proc, str]:
    """(front, back, URL of the chat route): the edge and the worker, or the skeleton's two."""
    python = [sys.executable, "-m"]
    if SKELETON:
        back = under_callgrind("back", [*python, "tools.bench_skeleton", "back"], {
            "NATS_URL": nats_url, "UPSTREAM_URL": upstream + "/v1/chat/completions"}, out_dir, None)
        port = free_port()
        front = under_callgrind("front", [*python, "tools.bench_skeleton", "front"],
                                {"NATS_URL": nats_url, "PORT": str(port)}, out_dir, None)
        return front, back, f"http://127.0.0.1:{port}"
    w_port, e_port = free_port(), free_port()
    # the edge first: it makes the work queue, and a worker is ready only once it can pull from it
    front = under_callgrind("edge", [*python, "services.edge"], {
        "PORT": str(e_port), "NATS_URL": nats_url, "SY_ROUTES": "sandbox-*=openai", "EDGE_ID": "instr-edge", **QUIET,
    }, out_dir, f"http://127.0.0.1:{e_port}/readyz")
    back = under_callgrind("worker", [*python, "services.openai_worker"], {
        "PORT": str(w_port), "NATS_URL": nats_url, "WORKER_POOL": "openai", "WORKER_ID": "instr-worker",
        "OPENAI_BASE_URL": upstream + "/v1", "OPENAI_API_KEY": "x", "OPENAI_MODELS": MODEL, **QUIET,
    }, out_dir, f"http://127.0.0.1:{w_port}/readyz")
    url = f"http://127.0.0.1:{e_port}"
    wait_for_model(url, within=120)
    return front, back, url


def post_until_ok(client: httpx.Client, url: str, body: dict[str, object], within: float) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            if client.post(url, json=body).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"no answer from {url} within {within} s")
        time.sleep(0.2)


def instructions(out_file: Path) -> int:
    """The total `Ir` of a callgrind dump (its `summary:` or `totals:` line)."""
    for line in out_file.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no instruction total in {out_file}")


def main() -> int:
    if not shutil.which("valgrind"):
        print("bench-instr needs valgrind (Debian/Ubuntu: apt-get install valgrind)", file=sys.stderr)
        return 1
    procs: list[Proc] = []
    with tempfile.TemporaryDirectory(prefix="switchyard-instr-") as tmp:
        out_dir = Path(tmp)
        try:
            nats = start_nats_server(log_dir=out_dir, store_dir=out_dir / "jetstream")
            procs.append(nats)
            port = free_port()
            procs.append(spawn_python_service("sandbox", "services.sandbox", env={"PORT": str(port), **QUIET},
                                              log_dir=out_dir, health_url=f"http://127.0.0.1:{port}/healthz"))
            front, back, url = start_counted(nats.url, f"http://127.0.0.1:{port}", out_dir)
            procs += [back, front]
            counted = (front, back)
            body = chat_body(NONSTREAM_TOKENS, False)
            with httpx.Client(trust_env=False, timeout=60) as client:
                post_until_ok(client, url + "/v1/chat/completions", body, within=120)
                for _ in range(WARM):  # imports, caches and the JIT of valgrind itself settle
                    client.post(url + "/v1/chat/completions", json=body).raise_for_status()
                for proc in counted:
                    subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], check=True, capture_output=True)
                for _ in range(N):
                    client.post(url + "/v1/chat/completions", json=body).raise_for_status()
                for proc in counted:
                    subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True)
            kind = "skeleton (floor)" if SKELETON else "gateway"
            print(f"user-space instructions per non-stream request, {kind}, {N} requests at c=1:")
            for proc in counted:
                dumps = sorted(out_dir.glob(f"{proc.name}.out.*"))
                print(f"  {proc.name:<8} {instructions(dumps[-1]) / N / 1000:8.1f} k")
        finally:
            for proc in reversed(procs):
                proc.stop(grace=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
