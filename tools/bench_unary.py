"""The rows of `make bench` for the unary routes: /v1/embeddings through the gateway against the same model
in-process, and the latency the gateway adds to a ~1 MB image.

    python -m tools.bench_unary
    BENCH_SCALE=0.5 python -m tools.bench_unary  # shorter measurements (rounds stay interleaved)

Starts nats-server, the edge and one embeddings-worker (batched) on loopback, and loads the same model with the
same batcher settings in this process. Single-sentence requests from c concurrent callers (closed loop):
in-process c=1 and c=32, gateway c=1 and c=32 (a keep-alive aiohttp client in this process), measured in
interleaved rounds so that every row goes through the same spells of a shared, drifting machine; each row
reports its median over rounds. Then the worker is replaced by one with EMBEDDINGS_BATCHING=0 for the unbatched
gateway row at c=32 (and the in-process unbatched row beside it, for reference). Targets (issue 11): gateway
c=32 >= 85 % of in-process batched throughput; gateway c=1 adds <= 1.5 ms p50; batching >= 3x unbatched at c=32
(gateway figures); both workers' RSS is stated. Last, the sandbox and an image-worker join the same stack, and
a ~1 MB `b64_json` image is asked of the sandbox directly and through the gateway, alternating
(tools/bench_images.py): the p50 the gateway adds is stated. Figures go into bench-results.json under
"embeddings" and "images"; the file's other keys are kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import uvloop

from libs.devproc import Proc, free_port, spawn_python_service, start_nats_server
from services.embeddings_worker.batcher import DEFAULT_MAX_BATCH, DEFAULT_MAX_WAIT, MicroBatcher
from services.embeddings_worker.local_model import DEFAULT_THREADS, LocalModel
from tools.bench import (
    QUIET,
    RESULTS_PATH,
    SCALE,
    clean_environment,
    progress,
    show_log_tails,
    status_kb,
    stop_all,
    wait_for_model,
)
from tools.bench_embeddings_inprocess import SENTENCES, Rate, inprocess_rate
from tools.bench_images import image_latency

MODEL = LocalModel.name
ROUNDS = 3 if SCALE >= 0.34 else 1
SECONDS = max(0.5, 2.0 * SCALE)  # per row per round
WARMUP_SECONDS = 0.3
HIGH = 32
# The worker's settings, spelled out so the in-process batcher provably runs with the same ones.
THREADS = DEFAULT_THREADS
BATCH_MAX = DEFAULT_MAX_BATCH
BATCH_WAIT_MS = DEFAULT_MAX_WAIT * 1000
TARGETS = {"throughput_ratio_c32": 0.85, "added_p50_ms_c1": 1.5, "batching_gain_c32": 3.0}


@dataclass
class Row:
    """One row's per-round figures and their medians."""

    rps: list[float]
    p50_ms: list[float]
    p99_ms: list[float]
    requests: int = 0
    errors: int = 0

    @property
    def rps_median(self) -> float:
        return statistics.median(self.rps) if self.rps else 0.0

    @property
    def p50_median(self) -> float:
        return statistics.median(self.p50_ms) if self.p50_ms else 0.0

    @property
    def p99_median(self) -> float:
        return statistics.median(self.p99_ms) if self.p99_ms else 0.0


def new_row() -> Row:
    return Row([], [], [])


def add(row: Row, rate: Rate, errors: int = 0) -> None:
    row.rps.append(rate.rps)
    row.p50_ms.append(rate.p50_ms)
    row.p99_ms.append(rate.p99_ms)
    row.requests += rate.requests
    row.errors += errors


# ---------------------------------------------------------------- the stack


def start_worker(nats_url: str, log_dir: Path, *, batching: bool, procs: list[Proc]) -> Proc:
    """One embeddings-worker with the bench's settings; in `procs` before it is awaited, so it is always stopped."""
    port = free_port()
    name = "embeddings-batched" if batching else "embeddings-unbatched"
    return spawn_python_service(name, "services.embeddings_worker", env={
        "PORT": str(port), "NATS_URL": nats_url, "WORKER_ID": f"bench-{name}",
        "EMBEDDINGS_THREADS": str(THREADS), "EMBEDDINGS_BATCH_MAX": str(BATCH_MAX),
        "EMBEDDINGS_BATCH_WAIT_MS": str(BATCH_WAIT_MS), "EMBEDDINGS_BATCHING": "1" if batching else "0",
        **QUIET,
    }, log_dir=log_dir, health_url=f"http://127.0.0.1:{port}/readyz", timeout=60.0, on_spawn=procs.append)


def wait_model_gone(edge_url: str, *, within: float = 10.0) -> None:
    """After the batched worker stops: its announce must lapse before the unbatched one's counts alone."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, TypeError):
            resp = httpx.get(edge_url + "/v1/models", timeout=2.0, trust_env=False)
            if MODEL not in {m["id"] for m in resp.json()["data"]}:
                return
        time.sleep(0.05)
    # Not fatal: the stopped worker sends no more replies, so no job can reach it; a lingering listing only
    # means the edge has not noticed yet.


def worker_rss_mb(proc: Proc) -> dict[str, float]:
    return {"vm_hwm_mb": status_kb(proc.pid, "VmHWM") / 1024, "vm_rss_mb": status_kb(proc.pid, "VmRSS") / 1024}


# ---------------------------------------------------------------- the gateway client


async def gateway_rate(
    session: aiohttp.ClientSession, url: str, concurrency: int, *, seconds: float
) -> tuple[Rate, Counter[str]]:
    """Single-sentence POST /v1/embeddings from ``concurrency`` callers for ``seconds``: only 200s count."""
    clock = time.perf_counter
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    bodies = itertools.cycle([json.dumps({"model": MODEL, "input": s}).encode() for s in SENTENCES])
    headers = {"Content-Type": "application/json"}
    started = clock()
    deadline = started + seconds
    cpu = time.process_time()

    async def caller() -> None:
        while clock() < deadline:
            sent = clock()
            try:
                async with session.post(url, data=next(bodies), headers=headers) as resp:
                    await resp.read()
                    status = resp.status
            except (TimeoutError, aiohttp.ClientError) as exc:
                errors[type(exc).__name__] += 1
                continue
            if status == 200:
                latencies.append(clock() - sent)
            else:
                errors[str(status)] += 1

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    elapsed = clock() - started
    cpu = time.process_time() - cpu
    ordered = sorted(latencies) or [0.0]
    rate = Rate(
        requests=len(latencies), seconds=elapsed, rps=len(latencies) / elapsed,
        p50_ms=statistics.median(ordered) * 1000,
        p99_ms=ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
        loop_lag_max_ms=0.0, cpu_ms=cpu / max(1, len(latencies)) * 1000,
    )
    return rate, errors


# ---------------------------------------------------------------- measuring


class Bench:
    def __init__(self, model: LocalModel, edge_url: str) -> None:
        self.model = model
        self.token_ids = model.tokenize(SENTENCES)
        self.url = edge_url + "/v1/embeddings"
        self.rows: dict[str, Row] = {}
        self.errors: Counter[str] = Counter()

    def row(self, key: str) -> Row:
        return self.rows.setdefault(key, new_row())

    # Each row runs on its own event loop. In-process rows: asyncio's default loop, as in
    # tools/bench_embeddings_inprocess.py, whose timing uses loop.time() (uvloop's clock ticks in whole
    # milliseconds, which would quantise every p50). Gateway rows: uvloop, like the bench's other load
    # generator, timed with perf_counter.

    def inprocess(self, key: str, concurrency: int, *, batching: bool) -> None:
        async def run() -> Rate:
            batcher = MicroBatcher(
                self.model, batching=batching, max_wait=BATCH_WAIT_MS / 1000, max_batch=BATCH_MAX)
            try:
                await inprocess_rate(batcher, self.token_ids, concurrency, seconds=WARMUP_SECONDS)
                return await inprocess_rate(batcher, self.token_ids, concurrency, seconds=SECONDS)
            finally:
                await batcher.close()

        add(self.row(key), asyncio.run(run()))

    def gateway(self, key: str, concurrency: int) -> None:
        async def run() -> tuple[Rate, Counter[str]]:
            connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency, force_close=False)
            timeout = aiohttp.ClientTimeout(total=30)
            async with aiohttp.ClientSession(connector=connector, trust_env=False, timeout=timeout) as session:
                await gateway_rate(session, self.url, concurrency, seconds=WARMUP_SECONDS)
                return await gateway_rate(session, self.url, concurrency, seconds=SECONDS)

        rate, errors = uvloop.run(run())
        add(self.row(key), rate, sum(errors.values()))
        self.errors.update({f"{key}:{k}": v for k, v in errors.items()})


def batched_rounds(bench: Bench) -> None:
    for i in range(ROUNDS):
        progress(f"embeddings round {i + 1}/{ROUNDS} (batched)")
        bench.inprocess("inprocess_c1", 1, batching=True)
        bench.gateway("gateway_c1", 1)
        bench.inprocess(f"inprocess_c{HIGH}", HIGH, batching=True)
        bench.gateway(f"gateway_c{HIGH}", HIGH)


def unbatched_rounds(bench: Bench) -> None:
    for i in range(ROUNDS):
        progress(f"embeddings round {i + 1}/{ROUNDS} (unbatched)")
        bench.gateway(f"gateway_unbatched_c{HIGH}", HIGH)
        bench.inprocess(f"inprocess_unbatched_c{HIGH}", HIGH, batching=False)


# ---------------------------------------------------------------- results


def evaluate(rows: dict[str, Row]) -> dict[str, dict[str, Any]]:
    def rps(key: str) -> float:
        return rows[key].rps_median if key in rows else 0.0

    def ratio(a: float, b: float) -> float:
        return a / b if b else 0.0

    added = rows["gateway_c1"].p50_median - rows["inprocess_c1"].p50_median
    throughput = ratio(rps(f"gateway_c{HIGH}"), rps(f"inprocess_c{HIGH}"))
    gain = ratio(rps(f"gateway_c{HIGH}"), rps(f"gateway_unbatched_c{HIGH}"))
    return {
        "throughput_ratio_c32": {"value": throughput, "target": f">= {TARGETS['throughput_ratio_c32']}",
                                 "pass": throughput >= TARGETS["throughput_ratio_c32"]},
        "added_p50_ms_c1": {"value": added, "target": f"<= {TARGETS['added_p50_ms_c1']}",
                            "pass": added <= TARGETS["added_p50_ms_c1"]},
        "batching_gain_c32": {"value": gain, "target": f">= {TARGETS['batching_gain_c32']}",
                              "pass": gain >= TARGETS["batching_gain_c32"]},
    }


def render(res: dict[str, Any]) -> str:
    lines = [
        f"Embeddings ({MODEL}, single sentence per request; threads={THREADS}, batch max {BATCH_MAX}, "
        f"wait {BATCH_WAIT_MS:g} ms; median of {res['rounds']} round(s) x {res['seconds_per_round']:g} s)",
        f"{'row':28} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'n':>7} {'errors':>6}   per round req/s",
    ]
    for key, row in res["rows"].items():
        per_round = " ".join(f"{r:.0f}" for r in row["rps"])
        lines.append(f"{key:28} {row['rps_median']:9.1f} {row['p50_median_ms']:8.2f} {row['p99_median_ms']:8.2f} "
                     f"{row['requests']:7d} {row['errors']:6d}   {per_round}")
    lines.append("targets:")
    for name, t in res["targets"].items():
        lines.append(f"  {name:24} {t['value']:7.2f}  (target {t['target']})  {'PASS' if t['pass'] else 'FAIL'}")
    for name, rss in res["worker_rss"].items():
        lines.append(f"worker RSS {name:10}: VmHWM {rss['vm_hwm_mb']:.0f} MB, VmRSS {rss['vm_rss_mb']:.0f} MB")
    if res["errors"]:
        lines.append(f"errors: {res['errors']}")
    return "\n".join(lines)


def write_results(figures: dict[str, Any], images: dict[str, Any]) -> None:
    existing: dict[str, Any] = {}
    with contextlib.suppress(FileNotFoundError, ValueError):
        loaded = json.loads(RESULTS_PATH.read_text())
        if isinstance(loaded, dict):
            existing = loaded
    existing["embeddings"] = figures
    existing["images"] = images
    RESULTS_PATH.write_text(json.dumps(existing, indent=2) + "\n")


# ---------------------------------------------------------------- main


def image_rows(nats_url: str, edge_url: str, log_dir: Path, procs: list[Proc]) -> dict[str, Any]:
    """The sandbox and an image-worker on the stack; the latency the gateway adds to a ~1 MB image."""
    progress("images: starting the sandbox and an image-worker")
    s_port, w_port = free_port(), free_port()
    sandbox = spawn_python_service("sandbox", "services.sandbox", env={"PORT": str(s_port), **QUIET}, log_dir=log_dir,
                                   health_url=f"http://127.0.0.1:{s_port}/healthz", on_spawn=procs.append)
    spawn_python_service("image-worker", "services.image_worker", env={
        "PORT": str(w_port), "NATS_URL": nats_url, "IMAGES_BASE_URL": f"{sandbox.url}/v1", "IMAGES_API_KEY": "bench",
        "IMAGES_MODELS": "sandbox-image", **QUIET,
    }, log_dir=log_dir, health_url=f"http://127.0.0.1:{w_port}/readyz", on_spawn=procs.append)
    wait_for_model(edge_url, 30.0, "sandbox-image")
    return uvloop.run(image_latency(edge_url, sandbox.url, "", max(5, round(20 * SCALE))))


def main() -> int:
    started = time.monotonic()
    clean_environment()
    procs: list[Proc] = []
    tmp = tempfile.TemporaryDirectory(prefix="switchyard-bench-embeddings-")
    log_dir = Path(tmp.name)
    ok = False
    try:
        progress(f"embeddings: starting the stack (logs in {log_dir}), BENCH_SCALE={SCALE}")
        nats_proc = start_nats_server(log_dir=log_dir, store_dir=log_dir / "jetstream", on_spawn=procs.append)
        e_port = free_port()
        edge = spawn_python_service("edge", "services.edge", env={
            "PORT": str(e_port), "NATS_URL": nats_proc.url, "EDGE_ID": "bench-edge-embeddings", **QUIET,
        }, log_dir=log_dir, health_url=f"http://127.0.0.1:{e_port}/readyz", on_spawn=procs.append)
        worker = start_worker(nats_proc.url, log_dir, batching=True, procs=procs)
        wait_for_model(edge.url, 30.0, MODEL)
        model = LocalModel.load(THREADS)
        bench = Bench(model, edge.url)
        batched_rounds(bench)
        rss = {"batched": worker_rss_mb(worker)}

        progress("embeddings: replacing the worker by one with EMBEDDINGS_BATCHING=0")
        worker.stop(grace=10)
        wait_model_gone(edge.url)
        unbatched = start_worker(nats_proc.url, log_dir, batching=False, procs=procs)
        wait_for_model(edge.url, 30.0, MODEL)
        unbatched_rounds(bench)
        rss["unbatched"] = worker_rss_mb(unbatched)
        images = image_rows(nats_proc.url, edge.url, log_dir, procs)

        figures: dict[str, Any] = {
            "model": MODEL,
            "settings": {"threads": THREADS, "batch_max": BATCH_MAX, "batch_wait_ms": BATCH_WAIT_MS},
            "scale": SCALE,
            "rounds": ROUNDS,
            "seconds_per_round": SECONDS,
            "client": "aiohttp keep-alive in the bench process (uvloop, perf_counter); in-process: asyncio loop",
            "rows": {
                key: {**asdict(row), "rps_median": row.rps_median, "p50_median_ms": row.p50_median,
                      "p99_median_ms": row.p99_median}
                for key, row in bench.rows.items()
            },
            "worker_rss": rss,
            "errors": dict(bench.errors),
        }
        figures["targets"] = evaluate(bench.rows)
        figures["total_s"] = time.monotonic() - started
        write_results(figures, images)
        print(render(figures), flush=True)
        print(f"images: a {images['answer_bytes']:,} B b64_json answer, p50 direct {images['direct_p50_ms']} ms, "
              f"through the gateway {images['edge_p50_ms']} ms: +{images['added_p50_ms']} ms "
              f"(n={images['n']}, alternating)", flush=True)
        ok = True
    except Exception:
        show_log_tails(procs)
        raise
    finally:
        stop_all(procs, tmp)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
