"""The rows of `make bench` for chat through chatgpt-web-worker (issue 12), beside the openai-worker path.

    python -m tools.bench_web
    BENCH_SCALE=0.2 python -m tools.bench_web   # quick run: request counts x0.2, 3 slices

Starts nats-server, the sandbox (its OpenAI fake and its fake of the ChatGPT web backend), one edge, one
openai-worker serving `sandbox-chat` from the OpenAI fake and one chatgpt-web-worker with ACCOUNTS fake
accounts (`sandbox-session-<user>` cookies) on 127.0.0.1; the load generator is tools/bench_client.py in
its own process, as in tools/bench.py. Then:

1. Gateway CPU (edge + worker, from /proc) per request: a short non-stream answer and a 50-token stream
   at c=CONC (fewer clients than accounts, so accounts never bind), the same messages on both paths
   (`sandbox-chat` through openai-worker, `gpt-4o` through chatgpt-web-worker, `[sandbox tokens=N]` in
   the prompt), measured in interleaved slices (the order alternates per slice) to share this
   machine's drifting speed; each row reports its median slice. Target: web / openai <= 1.5x.
2. Pool overhead: every write to the KV bucket of accounts during R sequential requests, seen by a
   subscription to `$KV.SY_V1_ACCOUNTS.>` on a separate connection, each classified from the value
   it wrote (lease, release, renewal); KV reads of the bucket are counted from `$JS.API.>`.
   Target: <= 2 round trips per request. Their time: the p50 of a lease and of a release by
   libs/account_pool in this process, on the same nats-server, in a pool of its own (no worker reads it).
3. Throughput with more requests than accounts: the worker is replaced by one with FEW accounts, an
   answer of known length (`[sandbox tokens=10 token_delay_ms=30]`) is timed alone end to end (c=1),
   then CLIENTS concurrent clients send a fixed number of them. Target: throughput >= 0.9 x accounts /
   answer time; the fake must never have seen two turns at once on one account (its /stats).

Figures go into bench-results.json under "chatgpt_web"; the file's other keys are kept. Every process
it started is stopped by PID at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pstats
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import nats
import orjson
from nats.aio.msg import Msg

from libs.account_pool.buckets import ACCOUNTS_BUCKET, CONVERSATIONS_BUCKET
from libs.account_pool.outcome import Outcome
from libs.account_pool.pool import AccountPool, AccountSpec
from libs.devproc import Proc, free_port, spawn, spawn_python_service, start_nats_server, wait_http_ok
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
    wait_for_model,
)

OPENAI_MODEL = "sandbox-chat"
WEB_MODEL = "gpt-4o"
WEB_POOL = "chatgpt-web"
ACCOUNTS = 8
CONC = 4  # clients of the CPU rows: half the accounts, so none waits for an account
FEW = 3  # accounts of the throughput row
CLIENTS = 12  # its concurrent clients: four per account
NONSTREAM_TOKENS = 8
STREAM_TOKENS = 50
PACED = "[sandbox tokens=10 token_delay_ms=30]"  # the throughput row's answer: ~0.3 s
SLICES = max(1, int(os.environ.get("BENCH_SLICES", "5" if SCALE >= 0.5 else "3")))
TIME_CAP = 60.0
PROFILE_DIR = os.environ.get("BENCH_PROFILE", "")  # py-spy as in tools/bench.py; else tools/cpu_profile.py
CPROFILE = bool(PROFILE_DIR) and not shutil.which("py-spy")
PROFILED: list[tuple[Proc, Path]] = []
TARGETS = {"cpu_ratio": 1.5, "kv_round_trips": 2.0, "throughput_ratio": 0.9, "max_concurrent": 1}
# (key, stream, tokens, requests per slice and path at scale 1)
CPU_ROWS = [
    ("nonstream_c4", False, NONSTREAM_TOKENS, 300),
    ("stream50_c4", True, STREAM_TOKENS, 150),
]


def chat_body(model: str, prompt: str, stream: bool) -> dict[str, Any]:
    """The request of every row: only `model` differs between the two paths."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a benchmark."},
            {"role": "user", "content": f"Say something short. {prompt}"},
        ],
    }
    if stream:
        body["stream"] = True
    return body


def http_cmd(url: str, body: dict[str, Any], conc: int, count: int) -> dict[str, Any]:
    return {"kind": "http", "url": url, "body": body, "stream": bool(body.get("stream")), "concurrency": conc,
            "count": count, "time_cap": TIME_CAP}


# ---------------------------------------------------------------- pool writes, classified


def classify_write(previous: dict[str, Any] | None, value: dict[str, Any]) -> str:
    """What one write to an account's key did, from the value before it (None: not seen yet) and the
    value written: "lease" (a new lease id), "release" (the lease cleared), "renewal" (the same lease,
    only its expiry moved), "update" (anything else: a cooldown, a `wanted` mark, the first write)."""
    lease = value.get("lease_id") or ""
    before = (previous or {}).get("lease_id") or ""
    if lease and lease != before:
        return "lease"
    if not lease and before:
        return "release"
    if lease and previous is not None:
        moved = {k for k in set(value) | set(previous) if value.get(k) != previous.get(k)}
        if moved <= {"lease_until"}:
            return "renewal"
    return "update"


class KVTap:
    """Counts, on its own NATS connection, the writes to the accounts bucket (classified per key) and
    to the conversations bucket, and the JetStream API calls reading either bucket."""

    def __init__(self) -> None:
        self.writes: Counter[str] = Counter()
        self.reads: Counter[str] = Counter()
        self.conversation_writes = 0
        self._last: dict[str, dict[str, Any]] = {}
        self._nc: Any = None

    async def start(self, nats_url: str) -> None:
        self._nc = await nats.connect(nats_url, name="bench-web-kv-tap")
        kv = await self._nc.jetstream().key_value(ACCOUNTS_BUCKET)
        for key in await kv.keys():  # every key's current value: the first write seen is classified too
            if key.startswith(WEB_POOL + "."):
                entry = await kv.get(key)
                self._last[key] = orjson.loads(entry.value) if entry.value else {}
        await self._nc.subscribe(f"$KV.{ACCOUNTS_BUCKET}.>", cb=self._account_write)
        await self._nc.subscribe(f"$KV.{CONVERSATIONS_BUCKET}.>", cb=self._conversation_write)
        await self._nc.subscribe("$JS.API.>", cb=self._api_call)
        await self._nc.flush()

    def reset(self) -> None:
        self.writes.clear()
        self.reads.clear()
        self.conversation_writes = 0

    async def _account_write(self, msg: Msg) -> None:
        key = msg.subject[len(f"$KV.{ACCOUNTS_BUCKET}."):]
        if not key.startswith(WEB_POOL + "."):
            return
        try:
            value = orjson.loads(msg.data) if msg.data else {}
        except orjson.JSONDecodeError:
            value = {}
        self.writes[classify_write(self._last.get(key), value)] += 1
        self._last[key] = value

    async def _conversation_write(self, msg: Msg) -> None:
        self.conversation_writes += 1

    async def _api_call(self, msg: Msg) -> None:
        for bucket in (ACCOUNTS_BUCKET, CONVERSATIONS_BUCKET):
            if f"KV_{bucket}" in msg.subject and (".GET" in msg.subject):
                self.reads[bucket] += 1

    async def settle(self, releases: int, within: float = 3.0) -> None:
        """Until `releases` releases and as many leases were seen (the last request's release and the
        lease after it may follow its response), or `within` seconds."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            await self._nc.flush()
            if self.writes["release"] >= releases and self.writes["lease"] >= releases:
                return
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        if self._nc is not None:
            await self._nc.close()


async def pool_overhead(nats_url: str, loadgen: LoadGen, url: str, requests: int) -> dict[str, Any]:
    """Writes and reads of the KV buckets per request over `requests` sequential requests."""
    tap = KVTap()
    await tap.start(nats_url)
    try:
        await asyncio.sleep(0.2)  # renewals in flight before the window land before it
        tap.reset()
        started = time.monotonic()
        body = chat_body(WEB_MODEL, f"[sandbox tokens={NONSTREAM_TOKENS}]", False)
        result = await asyncio.to_thread(loadgen.run, http_cmd(url, body, 1, requests))
        await tap.settle(result.get("ok", 0))
        window = time.monotonic() - started
    finally:
        await tap.close()
    done = max(1, result.get("ok", 0))
    writes = dict(tap.writes)
    return {
        "requests": requests, "ok": result.get("ok", 0), "errors": result.get("errors", 0),
        "window_s": window, "account_writes": writes,
        "account_writes_per_request": sum(writes.values()) / done,
        "per_request": {kind: n / done for kind, n in writes.items()},
        "account_reads_per_request": tap.reads[ACCOUNTS_BUCKET] / done,
        "conversation_writes_per_request": tap.conversation_writes / done,
        "conversation_reads_per_request": tap.reads[CONVERSATIONS_BUCKET] / done,
        "first_error": result.get("first_error"),
    }


async def pool_timing(nats_url: str, rounds: int) -> dict[str, Any]:
    """p50 / p99 of a lease and of a release (with a health outcome) by libs/account_pool, on the same
    nats-server, in a pool no worker reads: the round trips a request pays, in ms."""
    nc = await nats.connect(nats_url, name="bench-web-pool-probe")
    pool = AccountPool(nc.jetstream(), "bench-probe", [AccountSpec("probe")], holder="bench-probe")
    lease_ms: list[float] = []
    release_ms: list[float] = []
    try:
        await pool.start()
        for i in range(rounds + 10):
            t0 = time.perf_counter()
            lease = await pool.acquire(None, timeout=5.0)
            t1 = time.perf_counter()
            await lease.release(Outcome.ok())
            t2 = time.perf_counter()
            if i >= 10:  # the first ones warm the connection and the bucket
                lease_ms.append((t1 - t0) * 1000)
                release_ms.append((t2 - t1) * 1000)
    finally:
        await pool.stop()
        await nc.close()
    return {"rounds": rounds, "lease_p50_ms": statistics.median(lease_ms), "lease_p99_ms": _p99(lease_ms),
            "release_p50_ms": statistics.median(release_ms), "release_p99_ms": _p99(release_ms)}


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


# ---------------------------------------------------------------- the stack


def accounts_file(folder: Path, users: list[str]) -> Path:
    path = folder / f"accounts-{len(users)}-{users[0]}.toml"
    path.write_text("".join(f'[[accounts]]\nname = "{u}"\nsession_token = "sandbox-session-{u}"\n\n' for u in users))
    return path


def start_service(name: str, module: str, env: dict[str, str], log_dir: Path, procs: list[Proc]) -> Proc:
    """`python -m module` on env["PORT"], ready once /readyz answers; under tools/cpu_profile.py (idle until
    profiles_on) when BENCH_PROFILE names a directory and py-spy is missing."""
    health_url = f"http://127.0.0.1:{env['PORT']}/readyz"
    if not CPROFILE:
        return spawn_python_service(name, module, env=env, log_dir=log_dir, health_url=health_url,
                                    on_spawn=procs.append)
    out = Path(PROFILE_DIR) / f"{name}.prof"
    proc = spawn(name, [sys.executable, "-m", "tools.cpu_profile", str(out), module], env=env, log_dir=log_dir)
    procs.append(proc)
    wait_http_ok(proc, health_url, timeout=30.0)
    proc.url = f"http://127.0.0.1:{env['PORT']}"
    PROFILED.append((proc, out))
    return proc


def profiles(on: bool) -> None:
    """Profiling of the CPU rows only (tools/cpu_profile.py): SIGUSR1 on; SIGUSR2 off, the stats written,
    then the top functions by own CPU time as text beside them."""
    for proc, _out in PROFILED:
        if proc.alive():
            proc.signal(signal.SIGUSR1 if on else signal.SIGUSR2)
    if on:
        return
    for _proc, out in PROFILED:
        deadline = time.monotonic() + 10
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(OSError, TypeError, EOFError), open(out.with_suffix(".txt"), "w") as text:
            pstats.Stats(str(out), stream=text).sort_stats("tottime").print_stats(40)
            progress(f"profile: {out} (+ .txt summary)")


def start_web_worker(nats_url: str, fake_url: str, accounts: Path, name: str, log_dir: Path,
                     procs: list[Proc]) -> Proc:
    return start_service(name, "services.chatgpt_web_worker", {
        "PORT": str(free_port()), "NATS_URL": nats_url, "WORKER_POOL": WEB_POOL, "WORKER_ID": f"bench-{name}",
        "CHATGPT_BASE_URL": fake_url, "CHATGPT_ACCOUNTS_FILE": str(accounts), **QUIET,
    }, log_dir, procs)


def fake_stats(sandbox_url: str) -> dict[str, dict[str, int]]:
    stats: dict[str, dict[str, int]] = httpx.get(sandbox_url + "/_sandbox/chatgpt/stats", timeout=5,
                                                 trust_env=False).json()["stats"]
    return stats


# ---------------------------------------------------------------- the CPU rows


def cpu_rows(loadgen: LoadGen, url: str, pids: dict[str, int], worker_pids: dict[str, int]) -> dict[str, Any]:
    """Each row on both paths in SLICES interleaved turns (openai, web; then web, openai; ...)."""
    rows: dict[str, Any] = {}
    for key, stream, tokens, count in CPU_ROWS:
        n = scaled(count)
        progress(f"{key}: {SLICES} interleaved slices of {n} {'streams' if stream else 'requests'} "
                 f"per path at c{CONC}")
        slices: dict[str, list[dict[str, Any]]] = {"openai": [], "web": []}
        for turn in range(SLICES):
            order = ("openai", "web") if turn % 2 == 0 else ("web", "openai")
            for path in order:
                model = OPENAI_MODEL if path == "openai" else WEB_MODEL
                cmd = http_cmd(url, chat_body(model, f"[sandbox tokens={tokens}]", stream), CONC, n)
                procs = {**pids, "worker": worker_pids[path]}
                label = f"web-{key}-{path}" if turn == 0 else ""
                slices[path].append(measured(loadgen, procs, cmd, label))
        rows[key] = {path: combine(got) for path, got in slices.items()}
        for path in ("openai", "web"):
            r = rows[key][path]
            progress(f"  {path}: {r['ok']} ok, {r['errors']} errors, edge+worker {fmt(r['gateway_ms'], 3)} ms/op")
    return rows


def combine(got: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from its slices: totals for counts, medians for rates, latencies and CPU per op."""
    def per(r: dict[str, Any], name: str) -> float | None:
        value: float | None = r["cpu_ms_per_op"].get(name)
        return value

    def median(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return statistics.median(known) if known and len(known) == len(values) else None

    gateway = [None if per(r, "edge") is None else (per(r, "edge") or 0.0) + (per(r, "worker") or 0.0) for r in got]
    row: dict[str, Any] = {
        "ok": sum(r.get("ok", 0) for r in got),
        "errors": sum(r.get("errors", 0) for r in got),
        "slices": len(got),
        "rps": median([r.get("rps") for r in got]),
        "p50_ms": median([r.get("p50_ms") for r in got]),
        "ttft_p50_ms": median([r.get("ttft_p50_ms") for r in got]) if "ttft_p50_ms" in got[0] else None,
        "tokens_per_stream": median([r.get("tokens_per_stream") for r in got]) if "tokens_per_stream" in got[0]
        else None,
        # SSE events a client got per stream: what the edge wrote, one bus message or more each
        "events_per_stream": median([r["chunks"] / r["ok"] if r.get("ok") else None for r in got])
        if "chunks" in got[0] else None,
        "cpu_ms_per_op": {n: median([per(r, n) for r in got]) for n in got[0]["cpu_ms_per_op"]},
        "gateway_ms": median(gateway),
        "gateway_ms_slices": gateway,
        "cmd": got[0]["cmd"],
    }
    first_error = next((r["first_error"] for r in got if r.get("first_error")), None)
    if first_error:
        row["first_error"] = first_error
    return row


# ---------------------------------------------------------------- throughput with few accounts


def throughput_row(loadgen: LoadGen, url: str) -> dict[str, Any]:
    body = chat_body(WEB_MODEL, PACED, False)
    singles = scaled(20)
    progress(f"throughput: {singles} single requests (c1) to time the answer, then {scaled(120)} at c{CLIENTS} "
             f"on {FEW} accounts")
    alone = loadgen.run(http_cmd(url, body, 1, singles))
    crowd = loadgen.run(http_cmd(url, body, CLIENTS, scaled(120)))
    answer_s = alone["p50_ms"] / 1000 if alone.get("ok") else None
    expected = FEW / answer_s if answer_s else None
    ratio = crowd["rps"] / expected if expected and crowd.get("ok") else None
    return {
        "accounts": FEW, "clients": CLIENTS, "prompt": PACED,
        "single": {k: alone.get(k) for k in ("ok", "errors", "p50_ms", "p99_ms", "first_error")},
        "crowd": {k: crowd.get(k) for k in ("ok", "errors", "rps", "p50_ms", "p99_ms", "elapsed_s", "first_error")},
        "answer_s": answer_s, "expected_rps": expected, "ratio": ratio,
    }


# ---------------------------------------------------------------- report


def judged(name: str, value: float | None, passed: bool | None, shown: str, target: str) -> dict[str, Any]:
    return {"name": name, "value": value, "pass": passed, "shown": shown, "target": target}


def evaluate(res: dict[str, Any]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    limit = TARGETS["cpu_ratio"]
    for key, _stream, _tokens, _count in CPU_ROWS:
        o, w = res["cpu"][key]["openai"]["gateway_ms"], res["cpu"][key]["web"]["gateway_ms"]
        ratio = w / o if o and w is not None else None
        items.append(judged(f"gateway CPU web/openai, {key}", ratio, ratio is not None and ratio <= limit,
                            f"{fmt(ratio)}x ({fmt(w, 3)} / {fmt(o, 3)} ms)", f"<= {limit}x"))
    kv, timing = res["pool"], res["pool_timing"]
    trips = kv["account_writes_per_request"] + kv["account_reads_per_request"]
    items.append(judged("pool KV round trips per request (every write + read)", trips,
                        trips <= TARGETS["kv_round_trips"], fmt(trips), f"<= {TARGETS['kv_round_trips']:g}"))
    per = kv["per_request"]
    pool_ms = per.get("lease", 0.0) * timing["lease_p50_ms"] + per.get("release", 0.0) * timing["release_p50_ms"]
    items.append(judged("pool time per request (leases x p50 + releases x p50)", pool_ms, None,
                        f"{fmt(pool_ms, 3)} ms", "info: stated in ms"))
    t = res["throughput"]
    ratio = t["ratio"]
    items.append(judged(f"throughput {FEW} accounts, c{CLIENTS} / ({FEW} / answer time)", ratio,
                        ratio is not None and ratio >= TARGETS["throughput_ratio"], fmt(ratio, 3),
                        f">= {TARGETS['throughput_ratio']}"))
    worst = max((s["max_concurrent"] for s in res["fake_stats"].values()), default=None)
    items.append(judged("max concurrent turns per account (the fake's /stats)", worst,
                        worst == TARGETS["max_concurrent"], f"{worst}", f"== {TARGETS['max_concurrent']}"))
    errors = sum(r[p]["errors"] for r in res["cpu"].values() for p in ("openai", "web"))
    errors += (kv["errors"] or 0) + (t["single"]["errors"] or 0) + (t["crowd"]["errors"] or 0)
    items.append(judged("errors (every request must succeed)", errors, errors == 0, f"{errors}", "== 0"))
    return items


def cpu_line(key: str, path: str, r: dict[str, Any]) -> str:
    per = r["cpu_ms_per_op"]
    cells = [f"{key:<15}{path:<8}{r['ok']:>6}{r['errors']:>5}", f"{fmt(r['rps'], 0):>8}{fmt(r['p50_ms']):>8}",
             f"{fmt(r['ttft_p50_ms']):>9}{fmt(r['tokens_per_stream'], 0):>9}{fmt(r['events_per_stream'], 0):>9}"]
    cells += [f"{fmt(per.get(name), 3):>9}" for name in ("edge", "worker", "nats-server", "sandbox")]
    cells.append(f"{fmt(r['gateway_ms'], 3):>13}")
    return "".join(cells)


def render(res: dict[str, Any]) -> str:
    lines = [f"ChatGPT web accounts (issue 12): chatgpt-web-worker ({WEB_MODEL}, {ACCOUNTS} fake accounts) beside "
             f"openai-worker ({OPENAI_MODEL}), same messages; scale {SCALE}, median of {SLICES} interleaved slices", ""]
    header = (f"{'row':<15}{'path':<8}{'ok':>6}{'err':>5}{'req/s':>8}{'p50 ms':>8}{'TTFT p50':>9}{'tok/strm':>9}"
              f"{'evt/strm':>9}{'edge':>9}{'worker':>9}{'nats':>9}{'sandbox':>9}{'edge+worker':>13}")
    lines += ["CPU ms per request/stream by process (gateway = edge + worker):", header, "-" * len(header)]
    for key, *_ in CPU_ROWS:
        for path in ("openai", "web"):
            r = res["cpu"][key][path]
            lines.append(cpu_line(key, path, r))
            if r.get("first_error"):
                lines.append(f"    ! {r['first_error']}")
    lines.append("edge+worker ms per slice:")
    for key, *_ in CPU_ROWS:
        for path in ("openai", "web"):
            each = " ".join(fmt(v, 3) for v in res["cpu"][key][path]["gateway_ms_slices"])
            lines.append(f"  {key:<15}{path:<8}{each}")
    kv, timing = res["pool"], res["pool_timing"]
    writes = ", ".join(f"{k} {v:.3f}" for k, v in sorted(kv["per_request"].items()))
    lines += ["", f"Pool (KV bucket {ACCOUNTS_BUCKET}) over {kv['ok']} sequential requests ({kv['window_s']:.1f} s): "
              f"writes per request {writes}; reads {kv['account_reads_per_request']:.3f}",
              f"  one lease {timing['lease_p50_ms']:.3f} ms p50 ({timing['lease_p99_ms']:.3f} p99), one release "
              f"{timing['release_p50_ms']:.3f} ms p50 ({timing['release_p99_ms']:.3f} p99): libs/account_pool in the "
              f"bench process, same nats-server, {timing['rounds']} rounds",
              f"  besides the pool: {kv['conversation_writes_per_request']:.3f} writes and "
              f"{kv['conversation_reads_per_request']:.3f} reads of {CONVERSATIONS_BUCKET} per request "
              "(conversation continuity, not pool overhead)"]
    t = res["throughput"]
    single, crowd = t["single"], t["crowd"]
    lines += ["", f"Throughput on {FEW} accounts: answer alone p50 {fmt(single['p50_ms'])} ms (n={single['ok']}); "
              f"c{CLIENTS}: {crowd['ok']} ok in {fmt(crowd['elapsed_s'])} s = {fmt(crowd['rps'])}/s "
              f"vs {FEW}/answer = {fmt(t['expected_rps'])}/s; p50 {fmt(crowd['p50_ms'])} ms",
              "  fake /stats max_concurrent per user: "
              + ", ".join(f"{u} {s['max_concurrent']}" for u, s in sorted(res["fake_stats"].items()))]
    lines += ["", "Targets:"]
    for item in res["targets"]:
        mark = "info" if item["pass"] is None else verdict(item["pass"])
        lines.append(f"  {mark:<5} {item['name']:<58} {item['shown']:>26}   target {item['target']}")
    lines.append(f"Results written to {RESULTS_PATH.name} (key chatgpt_web); total {res['total_s']:.0f} s")
    return "\n".join(lines)


def write_results(figures: dict[str, Any], key: str = "chatgpt_web") -> None:
    """`figures` under `key` in bench-results.json; the file's other keys kept."""
    existing: dict[str, Any] = {}
    with contextlib.suppress(FileNotFoundError, ValueError):
        loaded = json.loads(RESULTS_PATH.read_text())
        if isinstance(loaded, dict):
            existing = loaded
    existing[key] = figures
    RESULTS_PATH.write_text(json.dumps(existing, indent=2) + "\n")


# ---------------------------------------------------------------- main


def main() -> int:
    started = time.monotonic()
    clean_environment()
    procs: list[Proc] = []
    loadgen: LoadGen | None = None
    tmp = tempfile.TemporaryDirectory(prefix="switchyard-bench-web-")
    log_dir = Path(tmp.name)
    ok = False
    try:
        progress(f"chatgpt-web: starting the stack (logs in {log_dir}), BENCH_SCALE={SCALE}")
        nats_proc = start_nats_server(log_dir=log_dir, store_dir=log_dir / "jetstream", on_spawn=procs.append)
        sb_port = free_port()
        sandbox = spawn_python_service("sandbox", "services.sandbox", env={"PORT": str(sb_port), **QUIET},
                                       log_dir=log_dir, health_url=f"http://127.0.0.1:{sb_port}/healthz",
                                       on_spawn=procs.append)
        edge = start_service("edge", "services.edge", {
            "PORT": str(free_port()), "NATS_URL": nats_proc.url, "SY_ROUTES": "sandbox-*=openai",
            "EDGE_ID": "bench-edge-web", **QUIET,
        }, log_dir, procs)
        openai_worker = start_service("openai-worker", "services.openai_worker", {
            "PORT": str(free_port()), "NATS_URL": nats_proc.url, "WORKER_POOL": "openai", "WORKER_CAPACITY": "128",
            "WORKER_ID": "bench-openai-worker", "OPENAI_BASE_URL": sandbox.url + "/v1", "OPENAI_API_KEY": "x",
            "OPENAI_MODELS": OPENAI_MODEL, **QUIET,
        }, log_dir, procs)
        many = accounts_file(log_dir, [f"bench{i}" for i in range(1, ACCOUNTS + 1)])
        web_worker = start_web_worker(nats_proc.url, sandbox.url, many, "web-worker", log_dir, procs)
        wait_for_model(edge.url, 30.0, OPENAI_MODEL)
        wait_for_model(edge.url, 30.0, WEB_MODEL)
        loadgen = LoadGen(log_dir)
        url = edge.url + "/v1/chat/completions"
        pids = {"loadgen": loadgen.proc.pid, "sandbox": sandbox.pid, "nats-server": nats_proc.pid, "edge": edge.pid}
        worker_pids = {"openai": openai_worker.pid, "web": web_worker.pid}

        progress("warm-up (every web account mints its access token)")
        for model in (OPENAI_MODEL, WEB_MODEL):
            for stream in (False, True):
                tokens = STREAM_TOKENS if stream else NONSTREAM_TOKENS
                warm = loadgen.run(http_cmd(url, chat_body(model, f"[sandbox tokens={tokens}]", stream), CONC,
                                            max(40, scaled(100))))
                if warm.get("errors"):
                    raise RuntimeError(f"warm-up of {model} failed: {warm.get('first_error')}")

        profiles(True)
        cpu = cpu_rows(loadgen, url, pids, worker_pids)
        profiles(False)
        sequential = scaled(200)
        progress(f"pool overhead: KV writes over {sequential} sequential requests; lease/release timing")
        pool = asyncio.run(pool_overhead(nats_proc.url, loadgen, url, sequential))
        timing = asyncio.run(pool_timing(nats_proc.url, max(50, scaled(300))))

        progress(f"throughput: replacing the web worker by one with {FEW} accounts")
        web_worker.stop(grace=10)
        few = accounts_file(log_dir, [f"few{i}" for i in range(1, FEW + 1)])
        start_web_worker(nats_proc.url, sandbox.url, few, "web-worker-few", log_dir, procs)
        wait_for_model(edge.url, 30.0, WEB_MODEL)
        loadgen.run(http_cmd(url, chat_body(WEB_MODEL, PACED, False), FEW, 2 * FEW))  # tokens minted
        throughput = throughput_row(loadgen, url)
        stats = fake_stats(sandbox.url)

        figures: dict[str, Any] = {
            "scale": SCALE, "slices": SLICES, "accounts": ACCOUNTS, "concurrency": CONC,
            "models": {"openai": OPENAI_MODEL, "web": WEB_MODEL},
            "tokens": {"nonstream": NONSTREAM_TOKENS, "stream": STREAM_TOKENS},
            "gateway_processes": ["edge", "worker"],
            "cpu": cpu, "pool": pool, "pool_timing": timing, "throughput": throughput, "fake_stats": stats,
        }
        figures["targets"] = evaluate(figures)
        figures["total_s"] = time.monotonic() - started
        write_results(figures)
        print(render(figures), flush=True)
        ok = True
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
