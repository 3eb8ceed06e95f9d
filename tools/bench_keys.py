"""The row of `make bench` for a managed API key with limits (issue 14): what a key's rpm/tpm cost.

    python -m tools.bench_keys
    BENCH_SCALE=0.2 python -m tools.bench_keys   # quick run: request counts x0.2, 3 slices

Starts nats-server, the sandbox, one edge (AUTH_TOKEN and ADMIN_KEY set) and one openai-worker on
127.0.0.1; makes one managed key with rpm and tpm far above what the run spends (never reached: the
cost measured is the steady state, far from the limit). Then the same chat request (non-stream,
8 tokens) with the static AUTH_TOKEN and with the managed key, in interleaved slices, at c=1 and
c=64: gateway CPU per request (edge + worker + nats-server, from /proc: the key's claims cost the
server too) and the p50 latency, the median slice. Targets: managed / static CPU <= 1.15x, added
p50 <= 0.3 ms, at both concurrencies.

Figures go into bench-results.json under "keys"; the file's other keys are kept. Every process it
started is stopped by PID at the end.
"""

from __future__ import annotations

import re
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from libs.devproc import Proc, free_port, spawn_python_service, start_nats_server
from tools.bench import (
    QUIET,
    RESULTS_PATH,
    SCALE,
    LoadGen,
    clean_environment,
    fmt,
    measured,
    progress,
    scaled,
    show_log_tails,
    stop_all,
    verdict,
)
from tools.bench_web import SLICES, judged, profiles, start_service, write_results

MODEL = "sandbox-chat"
TOKENS = 8
LIMITS = {"rpm": 1_000_000_000, "tpm": 1_000_000_000_000}  # never reached
ROWS = [(1, 400), (64, 3000)]  # (concurrency, requests per slice at scale 1)
TARGETS = {"cpu_ratio": 1.15, "added_p50_ms": 0.3}
PATHS = ("static", "managed")
CPU_OF = ("edge", "worker", "nats-server")
TIME_CAP = 60.0


def chat_body() -> dict[str, Any]:
    prompt = f"Say something short. [sandbox tokens={TOKENS}]"
    return {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "max_tokens": 64}


def http_cmd(url: str, key: str, conc: int, count: int) -> dict[str, Any]:
    return {"kind": "http", "url": url, "body": chat_body(), "stream": False, "concurrency": conc, "count": count,
            "time_cap": TIME_CAP, "headers": {"authorization": f"Bearer {key}"}}


def wait_for_served(edge_url: str, key: str, within: float = 30.0) -> None:
    """Until the edge lists MODEL (a worker serves it); /v1/models wants a key on this edge."""
    deadline = time.monotonic() + within
    while True:
        listed = httpx.get(edge_url + "/v1/models", headers={"authorization": f"Bearer {key}"}, timeout=5)
        if listed.status_code == 200 and any(m["id"] == MODEL for m in listed.json()["data"]):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{MODEL} never became live")
        time.sleep(0.05)


def make_key(edge_url: str, admin_key: str) -> str:
    made = httpx.post(edge_url + "/admin/keys", headers={"authorization": f"Bearer {admin_key}"},
                      json={"name": "bench", **LIMITS}, timeout=10)
    made.raise_for_status()
    key: str = made.json()["key"]
    deadline = time.monotonic() + 10
    while httpx.get(edge_url + "/v1/models", headers={"authorization": f"Bearer {key}"}).status_code != 200:
        if time.monotonic() > deadline:
            raise RuntimeError("the managed key never worked")
        time.sleep(0.05)
    return key


def claims_made(edge_url: str, key: str) -> dict[str, float]:
    """The edge's compare-and-sets on SY_V1_KEY_LIMITS over the whole run, by outcome."""
    text = httpx.get(edge_url + "/metrics", headers={"authorization": f"Bearer {key}"}, timeout=10).text
    found = re.findall(r'^switchyard_edge_limit_claims_total\{result="(\w+)"\} (\S+)$', text, re.M)
    return {result: float(value) for result, value in found}


def row(loadgen: LoadGen, url: str, keys: dict[str, str], pids: dict[str, int], conc: int, n: int) -> dict[str, Any]:
    progress(f"c{conc}: {SLICES} interleaved slices of {n} requests per path")
    slices: dict[str, list[dict[str, Any]]] = {p: [] for p in PATHS}
    for turn in range(SLICES):
        for path in (PATHS if turn % 2 == 0 else PATHS[::-1]):
            slices[path].append(measured(loadgen, pids, http_cmd(url, keys[path], conc, n)))
    out: dict[str, Any] = {}
    for path, got in slices.items():
        cpu = [sum(r["cpu_ms_per_op"].get(k) or 0.0 for k in CPU_OF) if r.get("ok") else None for r in got]
        edge = [r["cpu_ms_per_op"].get("edge") for r in got]
        known = [v for v in cpu if v is not None]
        out[path] = {
            "ok": sum(r.get("ok", 0) for r in got), "errors": sum(r.get("errors", 0) for r in got),
            "first_error": next((r["first_error"] for r in got if r.get("first_error")), None),
            "p50_ms": statistics.median(r["p50_ms"] for r in got), "p50_ms_slices": [r["p50_ms"] for r in got],
            "gateway_ms": statistics.median(known) if known else None, "gateway_ms_slices": cpu,
            "edge_ms": statistics.median(e for e in edge if e is not None),
            "rps": statistics.median(r.get("rps", 0.0) for r in got),
        }
        progress(f"  {path}: {out[path]['ok']} ok, {out[path]['errors']} errors, p50 {fmt(out[path]['p50_ms'], 3)} ms, "
                 f"gateway {fmt(out[path]['gateway_ms'], 3)} ms/request (edge {fmt(out[path]['edge_ms'], 3)})")
    return out


def evaluate(res: dict[str, Any]) -> list[dict[str, Any]]:
    items = []
    errors = 0
    for conc, _n in ROWS:
        r = res["rows"][f"c{conc}"]
        s, m = r["static"], r["managed"]
        errors += s["errors"] + m["errors"]
        ratio = m["gateway_ms"] / s["gateway_ms"] if s["gateway_ms"] and m["gateway_ms"] else None
        added = m["p50_ms"] - s["p50_ms"]
        items.append(judged(f"gateway CPU managed/static key, c{conc}", ratio,
                            ratio is not None and ratio <= TARGETS["cpu_ratio"],
                            f"{fmt(ratio, 3)}x ({fmt(m['gateway_ms'], 3)} / {fmt(s['gateway_ms'], 3)} ms)",
                            f"<= {TARGETS['cpu_ratio']}x"))
        items.append(judged(f"added p50 latency, managed - static, c{conc}", added,
                            added <= TARGETS["added_p50_ms"], f"{fmt(added, 3)} ms",
                            f"<= {TARGETS['added_p50_ms']} ms"))
    items.append(judged("errors (every request must succeed)", errors, errors == 0, f"{errors}", "== 0"))
    return items


def render(res: dict[str, Any]) -> str:
    lines = [f"Managed API key with rpm/tpm limits (issue 14) against the static AUTH_TOKEN, {MODEL} non-stream "
             f"{TOKENS} tokens; scale {SCALE}, median of {SLICES} interleaved slices", ""]
    header = f"{'row':<14}{'ok':>7}{'err':>5}{'p50 ms':>9}{'edge':>9}{'gateway':>10}   gateway slices"
    lines += ["CPU ms per request (gateway = edge + worker + nats-server):", header, "-" * len(header)]
    for conc, _n in ROWS:
        for path in PATHS:
            r = res["rows"][f"c{conc}"][path]
            lines.append(f"{f'c{conc} {path}':<14}{r['ok']:>7}{r['errors']:>5}{fmt(r['p50_ms'], 3):>9}"
                         f"{fmt(r['edge_ms'], 3):>9}{fmt(r['gateway_ms'], 3):>10}   "
                         + " ".join(fmt(v, 3) for v in r["gateway_ms_slices"]))
    managed = sum(res["rows"][f"c{conc}"]["managed"]["ok"] for conc, _n in ROWS)
    lines += ["", f"Claims (compare-and-sets on SY_V1_KEY_LIMITS) over the run, warm-up included: {res['claims']} "
              f"for {managed} measured managed-key requests", "", "Targets:"]
    for item in res["targets"]:
        mark = "info" if item["pass"] is None else verdict(item["pass"])
        lines.append(f"  {mark:<5} {item['name']:<46} {item['shown']:>30}   target {item['target']}")
    lines.append(f"Results written to {RESULTS_PATH.name} (key keys); total {res['total_s']:.0f} s")
    return "\n".join(lines)


def main() -> int:
    started = time.monotonic()
    clean_environment()
    procs: list[Proc] = []
    loadgen: LoadGen | None = None
    tmp = tempfile.TemporaryDirectory(prefix="switchyard-bench-keys-")
    log_dir = Path(tmp.name)
    static_key = "sb-static-" + secrets.token_urlsafe(24)
    admin_key = "bench-admin-" + secrets.token_urlsafe(24)
    ok = False
    try:
        progress(f"keys: starting the stack (logs in {log_dir}), BENCH_SCALE={SCALE}")
        nats_proc = start_nats_server(log_dir=log_dir, store_dir=log_dir / "jetstream", on_spawn=procs.append)
        sb_port = free_port()
        sandbox = spawn_python_service("sandbox", "services.sandbox", env={"PORT": str(sb_port), **QUIET},
                                       log_dir=log_dir, health_url=f"http://127.0.0.1:{sb_port}/healthz",
                                       on_spawn=procs.append)
        edge = start_service("edge", "services.edge", {
            "PORT": str(free_port()), "NATS_URL": nats_proc.url, "SY_ROUTES": "sandbox-*=openai",
            "EDGE_ID": "bench-edge-keys", "AUTH_TOKEN": static_key, "ADMIN_KEY": admin_key, **QUIET,
        }, log_dir, procs)
        worker = start_service("openai-worker", "services.openai_worker", {
            "PORT": str(free_port()), "NATS_URL": nats_proc.url, "WORKER_POOL": "openai", "WORKER_CAPACITY": "128",
            "WORKER_ID": "bench-openai-worker", "OPENAI_BASE_URL": sandbox.url + "/v1", "OPENAI_API_KEY": "x",
            "OPENAI_MODELS": MODEL, **QUIET,
        }, log_dir, procs)
        wait_for_served(edge.url, static_key)
        keys = {"static": static_key, "managed": make_key(edge.url, admin_key)}
        loadgen = LoadGen(log_dir)
        url = edge.url + "/v1/chat/completions"
        pids = {"loadgen": loadgen.proc.pid, "sandbox": sandbox.pid, "nats-server": nats_proc.pid, "edge": edge.pid,
                "worker": worker.pid}
        progress("warm-up")
        for path in PATHS:
            warm = loadgen.run(http_cmd(url, keys[path], 16, max(200, scaled(500))))
            if warm.get("errors"):
                raise RuntimeError(f"warm-up with the {path} key failed: {warm.get('first_error')}")
        profiles(True)  # BENCH_PROFILE=<dir> without py-spy: the rows under tools/cpu_profile.py
        rows = {f"c{conc}": row(loadgen, url, keys, pids, conc, scaled(n)) for conc, n in ROWS}
        profiles(False)
        claims = claims_made(edge.url, static_key)
        figures: dict[str, Any] = {"scale": SCALE, "slices": SLICES, "model": MODEL, "tokens": TOKENS,
                                   "limits": LIMITS, "rows": rows, "claims": claims}
        figures["targets"] = evaluate(figures)
        figures["total_s"] = time.monotonic() - started
        write_results(figures, "keys")
        print(render(figures), flush=True)
        ok = True  # the verdicts are in the table and the JSON, as in the other rows
    except Exception:
        show_log_tails(procs)
        raise
    finally:
        if loadgen is not None:
            loadgen.close()
        stop_all(procs, tmp)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
