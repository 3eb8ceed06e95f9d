"""The rows of `make bench` for chat through sydney-worker (issue 13), beside the openai-worker path.

    python -m tools.bench_sydney
    BENCH_SCALE=0.2 python -m tools.bench_sydney   # quick run: request counts x0.2, 3 slices

Starts nats-server, the sandbox (its OpenAI fake and its fake of Bing), one edge, one openai-worker
serving `sandbox-chat` and one sydney-worker with ACCOUNTS fake Bing accounts (`_U=sandbox-u-<user>`)
on 127.0.0.1; the load generator is tools/bench_client.py in its own process. Then:

1. Gateway CPU (edge + worker, from /proc) per 50-token stream at c=CONC (fewer clients than
   accounts), the same messages on both paths (`sandbox-chat` through openai-worker,
   `sydney-creative` through sydney-worker, `[sandbox tokens=50 ...]` in the prompt: both fakes
   answer 50 words), in interleaved slices; the median slice. Two rows: `paced`, both fakes sending
   one token every PACE_MS (as real upstreams stream: every token is its own read on both paths;
   the target, sydney / openai <= 2x), and `burst`, each fake as fast as it can (the OpenAI fake
   then writes the whole answer in one read while Bing's protocol still sends a frame per word:
   stated, not judged).
2. Time to first token, c=1: through the gateway (the load generator's TTFT p50) against the fake's
   own (a direct client in this process, libs/bing: conversation create, websocket, handshake,
   invocation, the first text). Target: added <= 3 ms p50. The websocket set-up of a turn (create
   + connect + handshake, which every turn pays: Bing conversations are made per turn) is stated.

Figures go into bench-results.json under "sydney"; the file's other keys are kept. Every process it
started is stopped by PID at the end.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from libs.bing.client import BingEndpoints, chat, create_conversation
from libs.bing.invocation import ChatRequest, build_invocation
from libs.bing.turn import SydneyEvent, TurnReader
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
    wait_for_model,
)
from tools.bench_web import SLICES, combine, http_cmd, judged, profiles, start_service, write_results

OPENAI_MODEL = "sandbox-chat"
SYDNEY_MODEL = "sydney-creative"
ACCOUNTS = 8
CONC = 4
STREAM_TOKENS = 50
PACE_MS = 2
PROMPT = f"[sandbox tokens={STREAM_TOKENS}]"
# (row, the prompt's directives per path): the two fakes name their pacing differently
CPU_ROWS = [
    ("paced", {"openai": f"[sandbox tokens={STREAM_TOKENS} token_delay_ms={PACE_MS}]",
               "sydney": f"[sandbox tokens={STREAM_TOKENS} latency_ms={PACE_MS}]"}),
    ("burst", {"openai": PROMPT, "sydney": PROMPT}),
]
TARGETS = {"cpu_ratio": 2.0, "ttft_added_ms": 3.0}


def chat_body(model: str, prompt: str, stream: bool) -> dict[str, Any]:
    """The request of every row, only `model` differing between paths. One user message: a system
    message would become Bing's web-page context, which the fake acknowledges with a sentence of
    its own, and the answers would differ in length."""
    return {"model": model, "messages": [{"role": "user", "content": f"Say something short. {prompt}"}],
            "stream": stream}


def accounts_file(folder: Path, users: list[str]) -> Path:
    path = folder / "bing-accounts.toml"
    path.write_text("".join(f'[[accounts]]\nname = "{u}"\ncookies = "_U=sandbox-u-{u}"\n\n' for u in users))
    return path


def cpu_rows(loadgen: LoadGen, url: str, pids: dict[str, int], worker_pids: dict[str, int]) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    n = scaled(150)
    for key, prompts in CPU_ROWS:
        progress(f"{key} stream50_c{CONC}: {SLICES} interleaved slices of {n} streams per path")
        slices: dict[str, list[dict[str, Any]]] = {"openai": [], "sydney": []}
        for turn in range(SLICES):
            for path in (("openai", "sydney") if turn % 2 == 0 else ("sydney", "openai")):
                model = OPENAI_MODEL if path == "openai" else SYDNEY_MODEL
                cmd = http_cmd(url, chat_body(model, prompts[path], True), CONC, n)
                slices[path].append(measured(loadgen, {**pids, "worker": worker_pids[path]}, cmd))
        rows[key] = {path: combine(got) for path, got in slices.items()}
        for path, r in rows[key].items():
            progress(f"  {path}: {r['ok']} ok, {r['errors']} errors, edge+worker {fmt(r['gateway_ms'], 3)} ms/stream")
    return rows


async def direct_turns(endpoints: BingEndpoints, rounds: int) -> dict[str, Any]:
    """The fake's own time to first token and a turn's set-up, by a direct client (libs/bing) in this
    process, sequential, on one account no worker holds."""
    ttft: list[float] = []
    setup: list[float] = []
    cookies = {"_U": "sandbox-u-benchdirect"}
    async with httpx.AsyncClient(trust_env=False) as http:
        for i in range(rounds + 5):
            t0 = time.perf_counter()
            conversation, merged = await create_conversation(http, endpoints, cookies)
            invocation = build_invocation(ChatRequest(prompt=f"Say something short. {PROMPT}", no_search=True,
                                                      gpt4turbo=True), conversation)
            items = chat(endpoints, conversation, merged, invocation, proxy=None,
                         reader=TurnReader(endpoints.base_url))
            first: float | None = None
            opened: float | None = None
            async for item in items:
                if opened is None:
                    opened = time.perf_counter()
                if first is None and isinstance(item, SydneyEvent) and item.type == "message":
                    first = time.perf_counter()
            if i >= 5 and first is not None and opened is not None:  # the first ones warm both sides
                ttft.append((first - t0) * 1000)
                setup.append((opened - t0) * 1000)
    return {"rounds": len(ttft), "ttft_p50_ms": statistics.median(ttft), "setup_p50_ms": statistics.median(setup)}


def ttft_row(loadgen: LoadGen, url: str, endpoints: BingEndpoints) -> dict[str, Any]:
    rounds = max(30, scaled(100))
    progress(f"time to first token: {rounds} sequential streams through the gateway and directly, interleaved")
    gateway: list[float] = []
    direct: list[dict[str, Any]] = []
    for _ in range(SLICES):
        got = loadgen.run(http_cmd(url, chat_body(SYDNEY_MODEL, PROMPT, True), 1, rounds))
        if got.get("errors"):
            raise RuntimeError(f"the gateway's streams failed: {got.get('first_error')}")
        gateway.append(got["ttft_p50_ms"])
        direct.append(asyncio.run(direct_turns(endpoints, rounds)))
    through = statistics.median(gateway)
    own = statistics.median(d["ttft_p50_ms"] for d in direct)
    return {"rounds": rounds, "slices": SLICES, "gateway_ttft_p50_ms": through, "gateway_slices": gateway,
            "fake_ttft_p50_ms": own, "fake_slices": [d["ttft_p50_ms"] for d in direct],
            "added_ms": through - own, "setup_p50_ms": statistics.median(d["setup_p50_ms"] for d in direct)}


def evaluate(res: dict[str, Any]) -> list[dict[str, Any]]:
    limit = TARGETS["cpu_ratio"]
    t = res["ttft"]
    errors = sum(row[p]["errors"] for row in res["cpu"].values() for p in ("openai", "sydney"))
    items = []
    for key, _prompts in CPU_ROWS:
        o, s = res["cpu"][key]["openai"]["gateway_ms"], res["cpu"][key]["sydney"]["gateway_ms"]
        ratio = s / o if o and s is not None else None
        judged_row = key == "paced"
        items.append(judged(f"gateway CPU sydney/openai, 50-token stream c{CONC}, {key}", ratio,
                            (ratio is not None and ratio <= limit) if judged_row else None,
                            f"{fmt(ratio)}x ({fmt(s, 3)} / {fmt(o, 3)} ms)",
                            f"<= {limit}x" if judged_row else "info: stated"))
    return [
        *items,
        judged("added time to first token, p50 (gateway - the fake's own)", t["added_ms"],
               t["added_ms"] <= TARGETS["ttft_added_ms"], f"{fmt(t['added_ms'])} ms",
               f"<= {TARGETS['ttft_added_ms']:g} ms"),
        judged("a turn's Bing set-up (create + websocket + handshake), p50", t["setup_p50_ms"], None,
               f"{fmt(t['setup_p50_ms'])} ms", "info: stated"),
        judged("errors (every request must succeed)", errors, errors == 0, f"{errors}", "== 0"),
    ]


def render(res: dict[str, Any]) -> str:
    lines = [f"Bing Chat (issue 13): sydney-worker ({SYDNEY_MODEL}, {ACCOUNTS} fake accounts) beside openai-worker "
             f"({OPENAI_MODEL}), same messages; scale {SCALE}, median of {SLICES} interleaved slices", ""]
    header = f"{'row':<14}{'ok':>6}{'err':>5}{'TTFT p50':>10}{'edge':>9}{'worker':>9}{'nats':>9}{'edge+worker':>13}"
    lines += [f"CPU ms per 50-token stream at c{CONC} by process:", header, "-" * len(header)]
    for key, _prompts in CPU_ROWS:
        for path in ("openai", "sydney"):
            r = res["cpu"][key][path]
            per = r["cpu_ms_per_op"]
            lines.append(f"{key + ' ' + path:<14}{r['ok']:>6}{r['errors']:>5}{fmt(r['ttft_p50_ms']):>10}"
                         + "".join(f"{fmt(per.get(n), 3):>9}" for n in ("edge", "worker", "nats-server"))
                         + f"{fmt(r['gateway_ms'], 3):>13}   slices "
                         + " ".join(fmt(v, 3) for v in r["gateway_ms_slices"]))
    t = res["ttft"]
    lines += ["", f"Time to first token, c1, {t['rounds']} streams x {t['slices']} slices: gateway "
              f"{fmt(t['gateway_ttft_p50_ms'])} ms p50 ({' '.join(fmt(v) for v in t['gateway_slices'])}), the fake's "
              f"own {fmt(t['fake_ttft_p50_ms'])} ms ({' '.join(fmt(v) for v in t['fake_slices'])}); a turn's set-up "
              f"{fmt(t['setup_p50_ms'])} ms", "", "Targets:"]
    for item in res["targets"]:
        mark = "info" if item["pass"] is None else verdict(item["pass"])
        lines.append(f"  {mark:<5} {item['name']:<58} {item['shown']:>26}   target {item['target']}")
    lines.append(f"Results written to {RESULTS_PATH.name} (key sydney); total {res['total_s']:.0f} s")
    return "\n".join(lines)


def main() -> int:
    started = time.monotonic()
    clean_environment()
    procs: list[Proc] = []
    loadgen: LoadGen | None = None
    tmp = tempfile.TemporaryDirectory(prefix="switchyard-bench-sydney-")
    log_dir = Path(tmp.name)
    ok = False
    try:
        progress(f"sydney: starting the stack (logs in {log_dir}), BENCH_SCALE={SCALE}")
        nats_proc = start_nats_server(log_dir=log_dir, store_dir=log_dir / "jetstream", on_spawn=procs.append)
        sb_port = free_port()
        sandbox = spawn_python_service("sandbox", "services.sandbox", env={"PORT": str(sb_port), **QUIET},
                                       log_dir=log_dir, health_url=f"http://127.0.0.1:{sb_port}/healthz",
                                       on_spawn=procs.append)
        endpoints = BingEndpoints(create_url=f"{sandbox.url}/edgesvc/turing/conversation/create",
                                  chathub_url=f"ws://127.0.0.1:{sb_port}/sydney/ChatHub", base_url=sandbox.url)
        edge = start_service("edge", "services.edge", {
            "PORT": str(free_port()), "NATS_URL": nats_proc.url, "SY_ROUTES": "sandbox-*=openai",
            "EDGE_ID": "bench-edge-sydney", **QUIET,
        }, log_dir, procs)
        openai_worker = start_service("openai-worker", "services.openai_worker", {
            "PORT": str(free_port()), "NATS_URL": nats_proc.url, "WORKER_POOL": "openai", "WORKER_CAPACITY": "128",
            "WORKER_ID": "bench-openai-worker", "OPENAI_BASE_URL": sandbox.url + "/v1", "OPENAI_API_KEY": "x",
            "OPENAI_MODELS": OPENAI_MODEL, **QUIET,
        }, log_dir, procs)
        accounts = accounts_file(log_dir, [f"bench{i}" for i in range(1, ACCOUNTS + 1)])
        sydney_worker = start_service("sydney-worker", "services.sydney_worker", {
            "PORT": str(free_port()), "NATS_URL": nats_proc.url, "WORKER_POOL": "sydney",
            "WORKER_ID": "bench-sydney-worker", "SYDNEY_ACCOUNTS_FILE": str(accounts),
            "SYDNEY_CREATE_URL": endpoints.create_url, "SYDNEY_CHATHUB_URL": endpoints.chathub_url,
            "BING_BASE_URL": endpoints.base_url, **QUIET,
        }, log_dir, procs)
        wait_for_model(edge.url, 30.0, OPENAI_MODEL)
        wait_for_model(edge.url, 30.0, SYDNEY_MODEL)
        loadgen = LoadGen(log_dir)
        url = edge.url + "/v1/chat/completions"
        pids = {"loadgen": loadgen.proc.pid, "sandbox": sandbox.pid, "nats-server": nats_proc.pid, "edge": edge.pid}
        progress("warm-up")
        for model in (OPENAI_MODEL, SYDNEY_MODEL):
            warm = loadgen.run(http_cmd(url, chat_body(model, PROMPT, True), CONC, max(40, scaled(100))))
            if warm.get("errors"):
                raise RuntimeError(f"warm-up of {model} failed: {warm.get('first_error')}")
        profiles(True)  # BENCH_PROFILE=<dir> without py-spy: the CPU row under tools/cpu_profile.py
        cpu = cpu_rows(loadgen, url, pids, {"openai": openai_worker.pid, "sydney": sydney_worker.pid})
        profiles(False)
        ttft = ttft_row(loadgen, url, endpoints)
        figures: dict[str, Any] = {"scale": SCALE, "slices": SLICES, "accounts": ACCOUNTS, "concurrency": CONC,
                                   "models": {"openai": OPENAI_MODEL, "sydney": SYDNEY_MODEL},
                                   "tokens": STREAM_TOKENS, "cpu": cpu, "ttft": ttft}
        figures["targets"] = evaluate(figures)
        figures["total_s"] = time.monotonic() - started
        write_results(figures, "sydney")
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
