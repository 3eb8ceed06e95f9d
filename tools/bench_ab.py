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

import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from libs.devproc import REPO_ROOT, Proc, free_port, spawn_python_service, start_nats_server
from tools.bench import (
    NONSTREAM_TOKENS,
    QUIET,
    STREAM_TOKENS,
    WRK,
    chat_body,
    clean_environment,
    cpu_seconds,
    run_wrk,
    start_gateway,
    wait_for_model,
)

ROUNDS = int(os.environ.get("ROUNDS", "20"))
SECONDS = int(os.environ.get("SECONDS", "2"))
CONCURRENCY = int(os.environ.get("CONCURRENCY", "1"))
STREAM = os.environ.get("STREAM", "0") not in ("", "0")
MEASURED = ("edge", "worker", "nats")


def wrk(url: str) -> int:
    """Requests answered in one wrk run; raises on errors (a broken side must not look cheap)."""
    tokens = STREAM_TOKENS if STREAM else NONSTREAM_TOKENS
    result = run_wrk({"url": url, "body": chat_body(tokens, STREAM), "concurrency": CONCURRENCY, "seconds": SECONDS})
    if result.get("fatal") or result["errors"]:
        raise RuntimeError(f"wrk against {url}: {result.get('fatal') or result.get('first_error')}")
    return int(result["ok"])


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: python -m tools.bench_ab <git rev>", file=sys.stderr)
        return 2
    if WRK is None:
        print("bench-ab needs wrk (Debian/Ubuntu: apt-get install wrk)", file=sys.stderr)
        return 1
    clean_environment()
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
                nats = start_nats_server(log_dir=work / side, store_dir=work / side / "jetstream")
                edge, worker = start_gateway(nats.url, f"http://127.0.0.1:{port}", work / "logs", suffix=f"-{side}",
                                             code=code)
                procs += [nats, worker, edge]
                wait_for_model(edge.url)
                sides[side] = (edge.url + "/v1/chat/completions", {"edge": edge, "worker": worker, "nats": nats})
            for url, _ in sides.values():  # warm-up
                wrk(url)
            what = f"{'50-token streams' if STREAM else 'non-stream requests'} at c={CONCURRENCY}"
            print(f"A = {sys.argv[1]}, B = the working tree; {ROUNDS} rounds of {SECONDS} s each, {what}")
            totals: dict[str, list[float]] = {"A": [], "B": []}
            for number in range(ROUNDS):
                for side in ("A", "B") if number % 2 == 0 else ("B", "A"):
                    url, measured = sides[side]
                    before = {name: cpu_seconds(proc.pid) for name, proc in measured.items()}
                    answered = wrk(url)
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
