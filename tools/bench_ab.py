"""`make bench-ab REV=<rev>`: gateway CPU per request of a git revision (A) against the working tree (B).

This machine's speed drifts by up to 30 % within minutes, more than most changes to the hot path
are worth, so two `make bench` runs minutes apart compare the drift as much as the code. Here both
gateways run side by side (each with its own nats-server, edge and openai-worker; one sandbox
serves both) and short wrk runs alternate between them, A then B, then B then A. Drift hits both
sides alike, and the share of rounds in which B spent less tells whether a change helps.

    ROUNDS=20 SECONDS=2 CONCURRENCY=1 STREAM=0 python -m tools.bench_ab <rev>

Prints one line per run (CPU ms per request of edge, worker and nats-server, and their sum, the
`make bench` figure) and a summary. A is a throwaway git worktree of REV, run with this checkout's
.venv: its own modules come first (a module it lacks resolves to the working tree's through the
editable install, which A's code does not import). Needs wrk. Every process is stopped by PID.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from libs.devproc import REPO_ROOT, Proc, free_port, spawn_python_service, start_nats_server
from tools.bench import MODEL, NONSTREAM_TOKENS, STREAM_TOKENS, chat_body, cpu_seconds, parse_wrk, wait_for_model

ROUNDS = int(os.environ.get("ROUNDS", "20"))
SECONDS = int(os.environ.get("SECONDS", "2"))
CONCURRENCY = int(os.environ.get("CONCURRENCY", "1"))
STREAM = os.environ.get("STREAM", "0") not in ("", "0")
QUIET = {"NO_LOG": "1", "LOG_LEVEL": "WARNING"}
MEASURED = ("edge", "worker", "nats")


def start_gateway(side: str, code: Path, upstream: str, log_dir: Path) -> tuple[str, dict[str, Proc]]:
    """(chat URL, the measured processes) of one side's gateway, running the code in `code`."""
    nats = start_nats_server(log_dir=log_dir / side, store_dir=log_dir / side / "jetstream")
    w_port, e_port = free_port(), free_port()
    worker = spawn_python_service(f"worker-{side}", "services.openai_worker", env={
        "PORT": str(w_port), "NATS_URL": nats.url, "WORKER_POOL": "openai", "WORKER_CAPACITY": "128",
        "WORKER_ID": f"ab-worker-{side}", "OPENAI_BASE_URL": upstream + "/v1", "OPENAI_API_KEY": "x",
        "OPENAI_MODELS": MODEL, **QUIET,
    }, log_dir=log_dir, health_url=f"http://127.0.0.1:{w_port}/readyz", cwd=code)
    edge = spawn_python_service(f"edge-{side}", "services.edge", env={
        "PORT": str(e_port), "NATS_URL": nats.url, "SY_ROUTES": "sandbox-*=openai", "EDGE_ID": f"ab-edge-{side}",
        **QUIET,
    }, log_dir=log_dir, health_url=f"http://127.0.0.1:{e_port}/readyz", cwd=code)
    url = f"http://127.0.0.1:{e_port}"
    wait_for_model(url)
    return url + "/v1/chat/completions", {"edge": edge, "worker": worker, "nats": nats}


def wrk(wrk_path: str, script: Path, url: str, seconds: int) -> int:
    """Requests answered in one wrk run; raises on errors (a broken side must not look cheap)."""
    argv = [wrk_path, "-t1", f"-c{CONCURRENCY}", f"-d{seconds}s", "-s", str(script), url]
    result = parse_wrk(subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30).stdout)
    if result.get("fatal") or result["errors"]:
        raise RuntimeError(f"wrk against {url}: {result.get('fatal') or result.get('first_error')}")
    return int(result["ok"])


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: python -m tools.bench_ab <git rev>", file=sys.stderr)
        return 2
    wrk_path = shutil.which("wrk")
    if wrk_path is None:
        print("bench-ab needs wrk (Debian/Ubuntu: apt-get install wrk)", file=sys.stderr)
        return 1
    for var in ("AUTH_TOKEN", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        os.environ.pop(var, None)
    procs: list[Proc] = []
    with tempfile.TemporaryDirectory(prefix="switchyard-ab-") as tmp:
        work = Path(tmp)
        a_code = work / "a"
        git = ["git", "-C", str(REPO_ROOT), "worktree"]
        subprocess.run([*git, "add", "--detach", "--force", str(a_code), sys.argv[1]], check=True, capture_output=True)
        try:
            port = free_port()
            procs.append(spawn_python_service("sandbox", "services.sandbox", env={"PORT": str(port), **QUIET},
                                              log_dir=work / "logs", health_url=f"http://127.0.0.1:{port}/healthz"))
            sides: dict[str, tuple[str, dict[str, Proc]]] = {}
            for side, code in (("A", a_code), ("B", REPO_ROOT)):
                sides[side] = start_gateway(side, code, f"http://127.0.0.1:{port}", work / "logs")
                procs += list(sides[side][1].values())
            tokens = STREAM_TOKENS if STREAM else NONSTREAM_TOKENS
            script = work / "post.lua"
            script.write_text(f'wrk.method = "POST"\nwrk.body = {json.dumps(json.dumps(chat_body(tokens, STREAM)))}\n'
                              'wrk.headers["Content-Type"] = "application/json"\n')
            for url, _ in sides.values():  # warm-up
                wrk(wrk_path, script, url, 2)
            what = f"{'50-token streams' if STREAM else 'non-stream requests'} at c={CONCURRENCY}"
            print(f"A = {sys.argv[1]}, B = the working tree; {ROUNDS} rounds of {SECONDS} s each, {what}")
            totals: dict[str, list[float]] = {"A": [], "B": []}
            for number in range(ROUNDS):
                for side in ("A", "B") if number % 2 == 0 else ("B", "A"):
                    url, measured = sides[side]
                    before = {name: cpu_seconds(proc.pid) for name, proc in measured.items()}
                    answered = wrk(wrk_path, script, url, SECONDS)
                    per_request = {name: (cpu_seconds(proc.pid) - before[name]) * 1000 / answered
                                   for name, proc in measured.items()}
                    total = sum(per_request.values())
                    totals[side].append(total)
                    print(f"round {number:2d} {side}  {answered / SECONDS:7.0f} req/s  "
                          + "  ".join(f"{name} {per_request[name]:.3f}" for name in MEASURED)
                          + f"  gateway {total:.3f} ms", flush=True)
            for side, values in totals.items():
                print(f"{side}: median {statistics.median(values):.3f} ms, mean {statistics.mean(values):.3f} ms")
            lower = sum(b < a for a, b in zip(totals["A"], totals["B"], strict=True))
            change = statistics.median(totals["B"]) / statistics.median(totals["A"]) - 1
            print(f"B spent less in {lower} of {ROUNDS} rounds; medians {change:+.1%}")
        finally:
            for proc in reversed(procs):
                proc.stop(grace=10)
            subprocess.run([*git, "remove", "--force", str(a_code)], capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
