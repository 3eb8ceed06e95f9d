"""`make bench`: sandbox direct vs plain core NATS vs the full gateway path, in one run.

Starts nats-server (JetStream), the sandbox upstream, one openai-worker, one edge and a tiny core
NATS responder on 127.0.0.1, and drives them from separate load-generator processes, so that every
process's CPU can be read from /proc per scenario: `wrk` for the non-stream HTTP rows where it is
installed (BENCH_WRK=0 turns it off), and tools/bench_client.py (an asyncio aiohttp client under
uvloop) for streams, the NATS rows, warm-ups, and the non-stream rows where wrk is missing. Prints
a table with the issue's targets next to the figures and writes every number to bench-results.json.
Every process it started is stopped by PID at the end.

    python -m tools.bench                 # full run (~3-4 minutes on 2 cores)
    BENCH_SCALE=0.2 python -m tools.bench  # quick run: request counts (and wrk's seconds) x0.2
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from libs.devproc import REPO_ROOT, Proc, free_port, spawn, spawn_python_service, start_nats_server

SCALE = float(os.environ.get("BENCH_SCALE", "1.0") or 1.0)
RESULTS_PATH = REPO_ROOT / "bench-results.json"
CLK_TCK = os.sysconf("SC_CLK_TCK")
MODEL = "sandbox-chat"
QUIET = {"NO_LOG": "1", "LOG_LEVEL": "WARNING"}  # the services' env: no request logs to write
NONSTREAM_TOKENS = 8
STREAM_TOKENS = 50
TIME_CAP = float(os.environ.get("BENCH_TIME_CAP", "25"))  # seconds per scenario, at most
ONLY = {k for k in os.environ.get("BENCH_ONLY", "").split(",") if k}  # scenario keys, e.g. nonstream_c1
RUNS = max(1, int(os.environ.get("BENCH_RUNS", "1") or 1))  # repeat the scenarios; ranges are printed
PROFILE_DIR = os.environ.get("BENCH_PROFILE", "")  # py-spy profiles of edge and worker per gateway run
PROFILE_FORMAT = os.environ.get("BENCH_PROFILE_FORMAT", "flamegraph")  # or raw (collapsed stacks), speedscope
WRK = shutil.which("wrk") if os.environ.get("BENCH_WRK", "1") != "0" else None
# wrk runs for a time, not a count. A non-stream row is measured in SLICES short runs that take
# turns with the other wrk rows of its scenario (direct, skeleton, gateway): this machine's speed
# drifts by up to 30 % within seconds, and interleaving puts every row through the same spells.
# A row reports the median slice; its per-slice figures and its mean are kept beside it.
SLICES = max(1, int(os.environ.get("BENCH_SLICES", "5") or 5))
WRK_SECONDS = min(TIME_CAP / SLICES, max(1.0, 2.0 * SCALE))  # per slice: 5 x 2 s per row at scale 1

TARGETS = {
    "gateway_cpu_ms_per_request": 0.8,
    "gateway_cpu_ms_per_stream": 3.5,
    "added_latency_p50_ms_c1": 1.5,
    "throughput_ratio_c64": 0.15,
    "chunks_ratio_c32": 0.15,
    "added_ttft_p50_ms": 2.0,
    "edge_rss_mb": 120.0,
}


def scaled(n: int) -> int:
    return max(10, round(n * SCALE))


def chat_body(tokens: int, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "You are a benchmark."},
            {"role": "user", "content": f"Say something short. [sandbox tokens={tokens}]"},
        ],
    }
    if stream:
        body["stream"] = True
    return body


# Rows of a scenario: the upstream alone, the bus alone (core, JetStream), the thinnest possible
# edge + worker chain (tools/bench_skeleton.py), and the gateway.
PATHS = ("direct", "nats", "jetstream", "skeleton", "gateway")
# the processes whose CPU a gateway-like path spends (each path loads only its own; the rest idle)
GATEWAY_PROCESSES = ("edge", "worker", "sk-front", "sk-back", "nats-server")

# Shapes: (key, stream, concurrency, count)
SHAPES = [
    ("nonstream_c1", False, 1, 1500),
    ("nonstream_c64", False, 64, 4000),
    ("stream_c1", True, 1, 300),
    ("stream_c32", True, 32, 1000),
]


# ---------------------------------------------------------------- /proc readings


def show_log_tails(procs: list[Proc]) -> None:
    """What each started service last logged: why a bench run failed."""
    for proc in procs:
        tail = proc.log()[-1500:]
        if tail.strip():
            progress(f"--- {proc.name} log tail ---\n{tail}")


def stop_all(procs: list[Proc], tmp: tempfile.TemporaryDirectory[str]) -> None:
    """Every process a bench started, by PID, newest first; then its logs."""
    for proc in reversed(procs):
        with contextlib.suppress(Exception):
            proc.stop(grace=10)
    with contextlib.suppress(Exception):
        tmp.cleanup()


def cpu_seconds(pid: int) -> float:
    """utime + stime (fields 14 and 15 of /proc/<pid>/stat) in seconds."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    rest = raw[raw.rindex(")") + 2 :].split()  # fields from 3 on; comm may contain spaces
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


# ---------------------------------------------------------------- the stack


class LoadGen:
    """The load-generator subprocess: JSON commands in on stdin, JSON results out on stdout."""

    def __init__(self, log_dir: Path) -> None:
        self.log_path = log_dir / "bench-client.log"
        with open(self.log_path, "wb") as log:
            popen = subprocess.Popen(
                [sys.executable, "-m", "tools.bench_client"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=REPO_ROOT,
                env=dict(os.environ, PYTHONUNBUFFERED="1"),
                start_new_session=True,
            )
        self.proc = Proc(name="loadgen", popen=popen, log_path=self.log_path)
        hello = self._read()
        self.description = hello.get("client", "asyncio aiohttp client")

    def _read(self) -> dict[str, Any]:
        assert self.proc.popen.stdout is not None
        line = self.proc.popen.stdout.readline()
        if not line:
            raise RuntimeError(f"load generator exited:\n{self.proc.log()[-3000:]}")
        return json.loads(line)

    def run(self, cmd: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.popen.stdin is not None
        self.proc.popen.stdin.write(json.dumps(cmd).encode() + b"\n")
        self.proc.popen.stdin.flush()
        return self._read()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.proc.alive() and self.proc.popen.stdin:
                self.proc.popen.stdin.write(b"\n")
                self.proc.popen.stdin.flush()
                self.proc.popen.wait(timeout=5)
        self.proc.stop(grace=5)


def start_responder(nats_url: str, log_dir: Path) -> Proc:
    proc = spawn(
        "responder", [sys.executable, "-m", "tools.bench_responder"], env={"NATS_URL": nats_url}, log_dir=log_dir
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"responder exited:\n{proc.log()}")
        if "ready" in proc.log():
            return proc
        time.sleep(0.02)
    raise RuntimeError(f"responder not ready:\n{proc.log()}")


def start_skeleton(nats_url: str, sandbox_url: str, log_dir: Path) -> tuple[Proc, Proc, str]:
    """tools/bench_skeleton.py: back (NATS -> upstream) and front (HTTP -> NATS); returns their URL."""
    back = spawn("sk-back", [sys.executable, "-m", "tools.bench_skeleton", "back"], log_dir=log_dir,
                 env={"NATS_URL": nats_url, "UPSTREAM_URL": sandbox_url + "/v1/chat/completions"})
    port = free_port()
    front = spawn("sk-front", [sys.executable, "-m", "tools.bench_skeleton", "front"], log_dir=log_dir,
                  env={"NATS_URL": nats_url, "PORT": str(port)})
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for proc in (back, front):
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited:\n{proc.log()}")
        with contextlib.suppress(httpx.HTTPError):
            if "ready" in back.log() and httpx.post(url, json=chat_body(2, False), timeout=2,
                                                    trust_env=False).status_code == 200:
                return back, front, url
        time.sleep(0.05)
    raise RuntimeError(f"skeleton not ready:\n{back.log()}\n{front.log()}")


def clean_environment() -> None:
    """The services this process starts run open, and never through a proxy on loopback."""
    for var in ("AUTH_TOKEN", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        os.environ.pop(var, None)


def start_gateway(nats_url: str, sandbox_url: str, log_dir: Path, *, suffix: str = "",
                  code: Path | None = None) -> tuple[Proc, Proc]:
    """(edge, worker) serving MODEL from the sandbox; `code`: a checkout to run instead of this one."""
    w_port, e_port = free_port(), free_port()
    # the edge first: it makes the work queue, and a worker is ready only once it can pull from it
    edge = spawn_python_service(f"edge{suffix}", "services.edge", env={
        "PORT": str(e_port), "NATS_URL": nats_url, "SY_ROUTES": "sandbox-*=openai", "EDGE_ID": f"bench-edge{suffix}",
        **QUIET,
    }, log_dir=log_dir, health_url=f"http://127.0.0.1:{e_port}/readyz", cwd=code)
    worker = spawn_python_service(f"worker{suffix}", "services.openai_worker", env={
        "PORT": str(w_port), "NATS_URL": nats_url, "WORKER_POOL": "openai", "WORKER_CAPACITY": "128",
        "WORKER_ID": f"bench-worker{suffix}", "OPENAI_BASE_URL": sandbox_url + "/v1", "OPENAI_API_KEY": "x",
        "OPENAI_MODELS": MODEL, **QUIET,
    }, log_dir=log_dir, health_url=f"http://127.0.0.1:{w_port}/readyz", cwd=code)
    return edge, worker


def wait_for_model(edge_url: str, within: float = 20.0, model: str = MODEL) -> None:
    deadline = time.monotonic() + within
    last = ""
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, TypeError):
            resp = httpx.get(edge_url + "/v1/models", timeout=2.0, trust_env=False)
            last = resp.text[:300]
            if model in {m["id"] for m in resp.json()["data"]}:
                return
        time.sleep(0.05)
    raise RuntimeError(f"model {model} never became live at the edge: {last}")


# ---------------------------------------------------------------- running scenarios


def profilers(label: str, procs: dict[str, int]) -> list[subprocess.Popen[bytes]]:
    """py-spy recorders for edge and worker (BENCH_PROFILE=<dir>); they stop with the run."""
    spy = shutil.which("py-spy", path=sysconfig.get_path("scripts")) or shutil.which("py-spy")
    if not PROFILE_DIR or not spy:
        return []
    out = Path(PROFILE_DIR)
    suffix = {"flamegraph": "svg", "raw": "txt"}.get(PROFILE_FORMAT, "json")
    out.mkdir(parents=True, exist_ok=True)
    return [
        subprocess.Popen(
            [spy, "record", "--pid", str(procs[name]), "--rate", "250", "--nonblocking",
             "--format", PROFILE_FORMAT, "--output", str(out / f"{label}-{name}.{suffix}")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for name in ("edge", "worker")
    ]


def measured(
    loadgen: LoadGen, procs: dict[str, int], cmd: dict[str, Any], profile_label: str = ""
) -> dict[str, Any]:
    spies = profilers(profile_label, procs) if profile_label else []
    before = {name: cpu_seconds(pid) for name, pid in procs.items()}
    result = run_wrk(cmd) if cmd["kind"] == "wrk" else loadgen.run(cmd)
    after = {name: cpu_seconds(pid) for name, pid in procs.items()}
    if "loadgen_cpu_s" in result:  # wrk's own, from rusage (the asyncio client idled meanwhile)
        before["loadgen"], after["loadgen"] = 0.0, result.pop("loadgen_cpu_s")
    for spy in spies:  # py-spy writes its output on SIGINT
        spy.send_signal(2)
    for spy in spies:
        spy.wait(timeout=30)
    done = result.get("ok", 0)  # CPU per successful request/stream; none when nothing succeeded
    result["cpu_ms_total"] = {name: round((after[name] - before[name]) * 1000, 1) for name in procs}
    result["cpu_ms_per_op"] = {name: (after[name] - before[name]) * 1000 / done if done else None for name in procs}
    per = result["cpu_ms_per_op"]
    result["gateway_cpu_ms_per_op"] = (
        sum(per.get(k) or 0.0 for k in GATEWAY_PROCESSES) if done else None
    )
    result["cmd"] = {k: v for k, v in cmd.items() if k not in ("body", "payload")}
    return result


def measured_slices(
    loadgen: LoadGen, procs: dict[str, int], rows: list[tuple[str, dict[str, Any]]], profile_label: str = ""
) -> dict[str, dict[str, Any]]:
    """wrk rows measured in SLICES turns each, interleaved (A B C, A B C, ...): one result per row,
    the median slice's figures, with every slice's gateway CPU and the mean over all slices kept."""
    slices: dict[str, list[dict[str, Any]]] = {path: [] for path, _cmd in rows}
    for turn in range(SLICES):
        for path, cmd in rows:
            label = profile_label if path == "gateway" and turn == 0 else ""
            slices[path].append(measured(loadgen, procs, cmd, label))
    return {path: combine_slices(got) for path, got in slices.items()}


def combine_slices(got: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from its slices: totals for counts, medians for rates, latencies and CPU per request."""
    ok = sum(r.get("ok", 0) for r in got)
    busy = sum(r["ok"] / r["rps"] for r in got if r.get("ok") and r.get("rps"))
    result: dict[str, Any] = {
        "ok": ok,
        "errors": sum(r.get("errors", 0) for r in got),
        "rps": ok / busy if busy else 0.0,
        "slices": len(got),
        "cmd": got[0]["cmd"],
    }
    for field in ("p50_ms", "p99_ms"):
        values = [r[field] for r in got if r.get(field) is not None]
        result[field] = statistics.median(values) if values else None
    for field in ("first_error", "fatal"):
        first = next((r[field] for r in got if r.get(field)), None)
        if first:
            result[field] = first
    names = got[0]["cpu_ms_total"].keys()
    result["cpu_ms_total"] = {n: round(sum(r["cpu_ms_total"][n] for r in got), 1) for n in names}
    result["cpu_ms_per_op"] = {
        n: _median_or_none([r["cpu_ms_per_op"][n] for r in got]) for n in names
    }
    per_slice = [r["gateway_cpu_ms_per_op"] for r in got]
    result["gateway_cpu_ms_per_op"] = _median_or_none(per_slice)
    result["gateway_cpu_ms_per_op_slices"] = per_slice
    result["gateway_cpu_ms_per_op_mean"] = (
        sum(result["cpu_ms_total"].get(k, 0.0) for k in GATEWAY_PROCESSES) / ok if ok else None
    )
    return result


def _median_or_none(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known and len(known) == len(values) else None


def http_cmd(url: str, stream: bool, conc: int, count: int, *, by_wrk: bool = True) -> dict[str, Any]:
    tokens = STREAM_TOKENS if stream else NONSTREAM_TOKENS
    if WRK and by_wrk and not stream:
        return {"kind": "wrk", "url": url, "body": chat_body(tokens, False), "concurrency": conc,
                "seconds": WRK_SECONDS, "count": f"{SLICES} x {WRK_SECONDS:g} s of"}
    return {
        "kind": "http",
        "url": url,
        "body": chat_body(tokens, stream),
        "stream": stream,
        "concurrency": conc,
        "count": scaled(count),
        "time_cap": TIME_CAP,
    }


def nats_cmd(nats_url: str, conc: int, count: int) -> dict[str, Any]:
    payload = json.dumps(chat_body(NONSTREAM_TOKENS, False))
    payload += " " * max(0, 300 - len(payload))
    return {
        "kind": "nats",
        "url": nats_url,
        "subject": "bench.echo",
        "payload": payload,
        "concurrency": conc,
        "count": scaled(count),
        "time_cap": TIME_CAP,
    }


def progress(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def run_wrk(cmd: dict[str, Any]) -> dict[str, Any]:
    """One non-stream row driven by wrk (one thread, `concurrency` keep-alive connections, for
    `seconds`): the same result fields as tools/bench_client.py, and wrk's own CPU from getrusage."""
    assert WRK is not None
    script = Path(tempfile.mkdtemp(prefix="switchyard-wrk-")) / "post.lua"
    script.write_text(
        f'wrk.method = "POST"\nwrk.body = {json.dumps(json.dumps(cmd["body"]))}\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    seconds = max(1, round(cmd["seconds"]))
    argv = [WRK, "-t1", f"-c{cmd['concurrency']}", f"-d{seconds}s", "--latency", "-s", str(script), cmd["url"]]
    spent = resource.getrusage(resource.RUSAGE_CHILDREN)  # cumulative over waited-for children
    popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = popen.communicate(timeout=seconds + 30)
    except subprocess.TimeoutExpired:
        popen.kill()
        out, _ = popen.communicate()
    finally:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        shutil.rmtree(script.parent, ignore_errors=True)
    result = parse_wrk(out)
    result["loadgen_cpu_s"] = usage.ru_utime + usage.ru_stime - spent.ru_utime - spent.ru_stime
    return result


def parse_wrk(out: str) -> dict[str, Any]:
    """wrk's report: requests, errors (non-2xx responses and socket errors), rate, p50/p99."""
    result: dict[str, Any] = {"ok": 0, "errors": 0, "rps": 0.0}
    done = elapsed = 0.0
    for line in out.splitlines():
        parts = line.split()
        if " requests in " in line:
            done, elapsed = float(parts[0]), _wrk_ms(parts[3].rstrip(",")) / 1000
        elif line.strip().startswith("Non-2xx or 3xx responses:"):
            result["errors"] += int(parts[-1])
        elif line.strip().startswith("Socket errors:"):
            result["errors"] += sum(int(p.rstrip(",")) for p in parts[3::2])
        elif len(parts) == 2 and parts[0] in ("50%", "99%"):
            result[f"p{parts[0][:-1]}_ms"] = _wrk_ms(parts[1])
    if not done:
        return {**result, "fatal": f"wrk gave no result: {out[-500:]}"}
    result["ok"] = max(0, int(done) - result["errors"])
    result["rps"] = result["ok"] / elapsed if elapsed else 0.0
    if result["errors"]:
        result["first_error"] = "wrk counted errors (non-2xx responses or socket errors)"
    return result


def _wrk_ms(text: str) -> float:
    for suffix, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0), ("m", 60000.0)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


# ---------------------------------------------------------------- report


def fmt(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _span(values: list[float], digits: int) -> str:
    low, high = fmt(min(values), digits), fmt(max(values), digits)
    return low if low == high else f"{low}-{high}"


def render_ranges(runs: list[dict[str, Any]]) -> list[str]:
    """min-max across BENCH_RUNS runs of the same stack: the figures to quote, given the noise."""
    lines = ["", f"Across {len(runs)} runs (min-max):"]
    for key, _stream, _conc, _n in SHAPES:
        for path in ("direct", "gateway"):
            got = [r["scenarios"].get(key, {}).get(path) for r in runs]
            if not all(got):
                continue
            rps = [g["rps"] for g in got]
            p50 = [g["p50_ms"] for g in got]
            line = f"  {key:<16}{path:<9} req/s {_span(rps, 0):>15}   p50 {_span(p50, 2):>11} ms"
            if path == "gateway":
                cpu = [g["gateway_cpu_ms_per_op"] for g in got if g.get("gateway_cpu_ms_per_op") is not None]
                if cpu:
                    line += f"   gateway CPU {_span(cpu, 3)} ms/op"
            lines.append(line)
    lines.append("")
    for index, item in enumerate(runs[0]["targets"]):
        values = [r["targets"][index]["value"] for r in runs if r["targets"][index]["value"] is not None]
        if not values:
            continue
        judged = [r["targets"][index]["pass"] for r in runs if r["targets"][index]["pass"] is not None]
        verdicts = f"passed {sum(judged)}/{len(judged)}" if judged else "info"
        shown = item["shown"].split()
        unit = shown[-1] if len(shown) > 1 else ""
        if item["target"].startswith(">="):
            span = f"{min(values):.1%}-{max(values):.1%}"
        else:
            span = f"{_span(values, 3)} {unit}"
        lines.append(f"  {verdicts:<12} {item['name']:<52} {span:>20}   target {item['target']}")
    return lines


def render(res: dict[str, Any]) -> str:
    lines: list[str] = []
    sc = res["scenarios"]
    lines.append(f"Switchyard bench  (scale {SCALE}, {res['machine']}, load generator: {res['client']})")
    lines.append("")
    header = (
        f"{'scenario':<16}{'path':<11}{'ok':>6}{'err':>5}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'TTFT p50':>10}{'TTFT p99':>10}{'events/s':>10}{'tokens/s':>10}{'tok/strm':>9}{'gw CPU ms/op':>14}"
    )
    lines.append(header)
    lines.append("-" * len(header))
    for key, stream, _conc, _n in SHAPES:
        for path in PATHS:
            r = sc.get(key, {}).get(path)
            if not r:
                continue
            gw = fmt(r["gateway_cpu_ms_per_op"], 3) if path in ("skeleton", "gateway") else ""

            def col(field: str, width: int, digits: int = 2, r: dict[str, Any] = r, shown: bool = stream) -> str:
                return f"{fmt(r.get(field), digits) if shown else '':>{width}}"

            lines.append(
                f"{key:<16}{path:<11}{r.get('ok', 0):>6}{r.get('errors', 0):>5}{fmt(r.get('rps'), 0):>10}"
                f"{fmt(r.get('p50_ms')):>9}{fmt(r.get('p99_ms')):>9}"
                f"{col('ttft_p50_ms', 10)}{col('ttft_p99_ms', 10)}{col('chunks_per_s', 10, 0)}"
                f"{col('tokens_per_s', 10, 0)}{col('tokens_per_stream', 9, 0)}{gw:>14}"
            )
            if r.get("first_error") or r.get("fatal"):
                lines.append(f"    ! {r.get('first_error') or r.get('fatal')}")
    lines.append("")
    lines.append("CPU ms per request/stream, by process (gateway: edge + worker + nats-server; skeleton: "
                 "sk-front + sk-back + nats-server):")
    names = ["loadgen", "sandbox", "responder", "nats-server", "sk-front", "sk-back", "edge", "worker"]
    header = f"{'scenario':<16}{'path':<11}" + "".join(f"{n:>12}" for n in names) + f"{'gateway':>10}"
    lines.append(header)
    lines.append("-" * len(header))
    for key, _stream, _conc, _n in SHAPES:
        for path in PATHS:
            r = sc.get(key, {}).get(path)
            if not r or "cpu_ms_per_op" not in r:
                continue
            per = r["cpu_ms_per_op"]
            lines.append(
                f"{key:<16}{path:<11}"
                + "".join(f"{fmt(per.get(n), 3):>12}" for n in names)
                + f"{fmt(r['gateway_cpu_ms_per_op'], 3):>10}"
            )

    sliced = [
        (key, path, r) for key, *_ in SHAPES for path in ("skeleton", "gateway")
        if (r := sc.get(key, {}).get(path)) and r.get("gateway_cpu_ms_per_op_slices")
    ]
    if sliced:
        lines.append("")
        lines.append(f"Non-stream HTTP rows: the median of {sliced[0][2]['slices']} interleaved slices "
                     "(direct, skeleton, gateway in turn). CPU ms per request of each slice, and the mean over all:")
        for key, path, r in sliced:
            each = " ".join(fmt(v, 3) for v in r["gateway_cpu_ms_per_op_slices"])
            lines.append(f"  {key:<16}{path:<10}{each}   mean {fmt(r['gateway_cpu_ms_per_op_mean'], 3)}")

    lines.append("")
    lines.append("Targets:")
    for item in res["targets"]:
        mark = "n/a" if item["value"] is None else "info" if item["pass"] is None else verdict(item["pass"])
        lines.append(
            f"  {mark:<5} "
            f"{item['name']:<52} {item['shown']:>12}   target {item['target']}"
        )
    if "runs" in res:
        lines.extend(render_ranges(res["runs"]))
    rss = res["rss_mb"]
    lines.append("")
    lines.append(f"Peak RSS (VmHWM): edge {fmt(rss.get('edge'), 1)} MB, worker {fmt(rss.get('worker'), 1)} MB")
    lines.append(f"Results written to {RESULTS_PATH.name}; total {res['total_s']:.0f} s")
    return "\n".join(lines)


def evaluate(sc: dict[str, Any], rss: dict[str, float]) -> list[dict[str, Any]]:
    def get(key: str, path: str, field: str) -> float | None:
        r = sc.get(key, {}).get(path)
        return None if not r or not r.get("ok") else r.get(field)

    items: list[dict[str, Any]] = []

    def at_most(name: str, value: float | None, limit: float, unit: str, digits: int = 2) -> None:
        items.append({
            "name": name, "value": value, "target": f"<= {limit} {unit}",
            "pass": value is not None and value <= limit, "shown": f"{fmt(value, digits)} {unit}",
        })

    def added(key: str, field: str) -> float | None:
        d, g = get(key, "direct", field), get(key, "gateway", field)
        return None if d is None or g is None else g - d

    def ratio_at_least(name: str, key: str, field: str, limit: float) -> None:
        d, g = get(key, "direct", field), get(key, "gateway", field)
        value = None if not d or g is None else g / d
        items.append({
            "name": name, "value": value, "target": f">= {limit:.0%}",
            "pass": value is not None and value >= limit, "shown": f"{value:.1%}" if value is not None else "-",
        })

    for key in ("nonstream_c1", "nonstream_c64"):
        at_most(f"gateway CPU per non-stream request ({key})", get(key, "gateway", "gateway_cpu_ms_per_op"),
                TARGETS["gateway_cpu_ms_per_request"], "ms", 3)
    for key in ("stream_c1", "stream_c32"):
        at_most(f"gateway CPU per 50-chunk stream ({key})", get(key, "gateway", "gateway_cpu_ms_per_op"),
                TARGETS["gateway_cpu_ms_per_stream"], "ms", 3)
    for key in ("nonstream_c1", "nonstream_c64"):
        # the floor: what the thinnest edge + worker chain on the same stack costs (not judged)
        sk, gw = get(key, "skeleton", "gateway_cpu_ms_per_op"), get(key, "gateway", "gateway_cpu_ms_per_op")
        items.append({
            "name": f"skeleton CPU per request ({key}: floor, info)", "value": sk, "pass": None,
            "target": f"info: gateway {fmt(gw, 3)} ms = skeleton + {fmt(gw - sk, 3) if sk and gw else '-'} ms",
            "shown": f"{fmt(sk, 3)} ms",
        })
    at_most("added latency p50, non-stream c1 (gateway - direct)", added("nonstream_c1", "p50_ms"),
            TARGETS["added_latency_p50_ms_c1"], "ms")
    ratio_at_least("throughput gateway/direct, non-stream c64", "nonstream_c64", "rps",
                   TARGETS["throughput_ratio_c64"])
    ratio_at_least("streamed tokens/s gateway/direct, c32", "stream_c32", "tokens_per_s", TARGETS["chunks_ratio_c32"])
    at_most("added TTFT p50 (stream_c1)", added("stream_c1", "ttft_p50_ms"), TARGETS["added_ttft_p50_ms"], "ms")
    # At c32 both paths are saturated (2 cores): a closed loop of 32 streams waits 32/throughput
    # each (Little's law), so added TTFT there is set by throughput, whose own target is >= 15 %
    # (+67 ms at 15 %). It is shown with the value Little's law predicts, not judged.
    measured_c32 = added("stream_c32", "ttft_p50_ms")
    d32, g32 = get("stream_c32", "direct", "rps"), get("stream_c32", "gateway", "rps")
    predicted = 32 / g32 * 1000 - 32 / d32 * 1000 if d32 and g32 else None
    items.append({
        "name": "added TTFT p50 (stream_c32, saturated: info)", "value": measured_c32, "target": (
            f"info: 32/gateway - 32/direct = {fmt(predicted)} ms" if predicted is not None else "info"
        ), "pass": None, "shown": f"{fmt(measured_c32)} ms",
    })
    failed = {f"{k}/{p}": r.get("errors", 0) for k, paths in sc.items() for p, r in paths.items() if r.get("errors")}
    at_most("errors (every request/stream must succeed)", float(sum(failed.values())), 0, "errors", 0)
    if failed:
        items[-1]["failed"] = failed
    at_most("edge peak RSS", rss.get("edge"), TARGETS["edge_rss_mb"], "MB", 1)
    return items


# ---------------------------------------------------------------- main


def main() -> int:
    started = time.monotonic()
    clean_environment()
    procs: list[Proc] = []
    loadgen: LoadGen | None = None
    tmp = tempfile.TemporaryDirectory(prefix="switchyard-bench-")
    log_dir = Path(tmp.name)
    ok = False
    try:
        progress(f"starting the stack (logs in {log_dir}), BENCH_SCALE={SCALE}")
        nats_proc = start_nats_server(log_dir=log_dir, store_dir=log_dir / "jetstream")
        procs.append(nats_proc)
        sb_port = free_port()
        sandbox = spawn_python_service(
            "sandbox",
            "services.sandbox",
            env={"PORT": str(sb_port), **QUIET},
            log_dir=log_dir,
            health_url=f"http://127.0.0.1:{sb_port}/healthz",
        )
        procs.append(sandbox)
        sandbox_url = f"http://127.0.0.1:{sb_port}"
        edge, worker = start_gateway(nats_proc.url, sandbox_url, log_dir)
        procs += [worker, edge]
        edge_url = edge.url
        responder = start_responder(nats_proc.url, log_dir)
        procs.append(responder)
        sk_back, sk_front, skeleton_url = start_skeleton(nats_proc.url, sandbox_url, log_dir)
        procs += [sk_back, sk_front]
        wait_for_model(edge_url)
        loadgen = LoadGen(log_dir)
        progress(f"load generator: {loadgen.description}, pid {loadgen.proc.pid}")

        pids = {
            "loadgen": loadgen.proc.pid,
            "sandbox": sandbox.pid,
            "responder": responder.pid,
            "sk-front": sk_front.pid,
            "sk-back": sk_back.pid,
            "nats-server": nats_proc.pid,
            "edge": edge.pid,
            "worker": worker.pid,
        }
        direct_url = sandbox_url + "/v1/chat/completions"
        gateway_url = edge_url + "/v1/chat/completions"

        progress("warm-up")
        warm = {"count": max(50, round(200 * min(1.0, SCALE * 2))), "time_cap": 30.0}
        loadgen.run({**http_cmd(skeleton_url, False, 8, 0, by_wrk=False), **warm})
        for url in (direct_url, gateway_url):
            loadgen.run({**http_cmd(url, False, 8, 0, by_wrk=False), **warm})
            loadgen.run({**http_cmd(url, True, 8, 0), "count": 40, "time_cap": 30.0})
        loadgen.run({**nats_cmd(nats_proc.url, 8, 0), **warm})
        loadgen.run({**nats_cmd(nats_proc.url, 8, 0), **warm, "kind": "jetstream"})

        all_runs: list[dict[str, dict[str, Any]]] = []
        for run in range(1, RUNS + 1):
            if RUNS > 1:
                progress(f"run {run} of {RUNS}")
            scenarios: dict[str, dict[str, Any]] = {}
            for key, stream, conc, count in SHAPES:
                if ONLY and key not in ONLY:
                    continue
                scenarios[key] = {}
                runs = [("direct", http_cmd(direct_url, stream, conc, count))]
                if not stream:
                    runs.append(("nats", nats_cmd(nats_proc.url, conc, count)))
                    runs.append(("jetstream", {**nats_cmd(nats_proc.url, conc, count), "kind": "jetstream"}))
                    runs.append(("skeleton", http_cmd(skeleton_url, stream, conc, count)))
                runs.append(("gateway", http_cmd(gateway_url, stream, conc, count)))
                sliced = [(path, cmd) for path, cmd in runs if cmd["kind"] == "wrk"]
                if sliced:
                    names = ", ".join(path for path, _cmd in sliced)
                    progress(f"{key} {names}: {SLICES} interleaved slices of {WRK_SECONDS:g} s each, at c{conc}")
                    scenarios[key].update(measured_slices(loadgen, pids, sliced, f"{key}-gateway-run{run}"))
                for path, cmd in runs:
                    if cmd["kind"] != "wrk":  # the wrk rows were measured above, in slices
                        progress(f"{key} {path}: {cmd['count']} {'streams' if stream else 'requests'} at c{conc}")
                        label = f"{key}-{path}-run{run}" if path == "gateway" else ""
                        scenarios[key][path] = measured(loadgen, pids, cmd, label)
                    r = scenarios[key][path]
                    progress(f"  {path} -> {r.get('ok')} ok, {r.get('errors')} errors, {fmt(r.get('rps'), 0)}/s, "
                             f"p50 {fmt(r.get('p50_ms'))} ms")
            all_runs.append(scenarios)

        rss = {
            name: status_kb(pid, "VmHWM") / 1024
            for name, pid in (
                ("edge", edge.pid),
                ("worker", worker.pid),
                ("sandbox", sandbox.pid),
                ("loadgen", loadgen.proc.pid),
            )
        }
        results: dict[str, Any] = {
            "scale": SCALE,
            "time_cap_s": TIME_CAP,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
            "client": (f"wrk (non-stream HTTP rows), {loadgen.description} (streams, NATS rows)" if WRK
                       else loadgen.description),
            "payload": {"nonstream_tokens": NONSTREAM_TOKENS, "stream_tokens": STREAM_TOKENS, "model": MODEL},
            "scenarios": scenarios,
            "rss_mb": rss,
        }
        results["targets"] = evaluate(scenarios, rss)
        if RUNS > 1:
            results["runs"] = [{"scenarios": sc, "targets": evaluate(sc, rss)} for sc in all_runs]
        results["total_s"] = time.monotonic() - started
        RESULTS_PATH.write_text(json.dumps(results, indent=2) + "\n")
        print(render(results), flush=True)
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
