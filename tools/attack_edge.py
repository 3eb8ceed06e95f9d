"""Pre-request resource attacks on an edge, measured: its RSS and whether a normal client is served.

    python -m tools.attack_edge [CODE_DIR] [SCENARIO ...]

CODE_DIR: a checkout whose edge to attack (default: this one; e.g. a `git worktree` of an older
revision for a before/after comparison). Each scenario gets a fresh edge (production limits, no
SY_TIME_SCALE) in front of one nats-server, worker and sandbox, and runs on loopback only:

- big_headers: 20 connections each sending an 8 MB header (never finished)
- many_headers: 20 connections each sending a complete head of 10,000 header fields
- silent: 2,000 connections that never send a byte, held 30 s
- slow_body: 200 requests whose body comes at 1 byte/s, held 30 s
- fd_limit: 1,100 idle connections to an edge whose descriptor limit is 1,024 (prlimit)

The edges inherit this process's environment: `SY_PRIVATE_APIS=0 python -m tools.attack_edge`
attacks the public (h11) path. Meanwhile a normal client sends a chat request on a new
connection every 0.25 s. Prints one JSON line per scenario: edge RSS before and at its peak
(VmRSS, sampled every 0.1 s), the probe's successes, failures and latencies, how many attack
connections the edge still held at the end, and what it answered them.
Not part of `make test`: it takes minutes, and opens thousands of sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from libs.devproc import REPO_ROOT, Proc, free_port, spawn, spawn_python_service, start_nats_server, wait_http_ok
from tools.bench import MODEL, QUIET, clean_environment, start_gateway, wait_for_model

CHAT = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi [sandbox tokens=4]"}]}).encode()
Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def sample_rss(pid: int, peak: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(OSError):
            peak[0] = max(peak[0], rss_kib(pid))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)


async def probe(url: str, stop: asyncio.Event) -> dict[str, Any]:
    """A normal client: a chat request on a new connection every 0.25 s, 5 s timeout each."""
    latencies: list[float] = []
    failures: list[str] = []
    async with httpx.AsyncClient(timeout=5, limits=httpx.Limits(max_keepalive_connections=0)) as http:
        while not stop.is_set():
            started = time.monotonic()
            try:
                reply = await http.post(url + "/v1/chat/completions", content=CHAT,
                                        headers={"content-type": "application/json"})
                if reply.status_code == 200:
                    latencies.append(time.monotonic() - started)
                else:
                    failures.append(str(reply.status_code))
            except httpx.HTTPError as exc:
                failures.append(type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)
    return {
        "ok": len(latencies), "failed": len(failures), "failures": sorted(set(failures)),
        "p50_ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
        "max_ms": round(max(latencies) * 1000, 1) if latencies else None,
    }


async def watch_close(reader: asyncio.StreamReader, closed: list[float], statuses: list[str], started: float) -> None:
    """Read what the edge sends until it closes; record when, and the status of its first answer."""
    first = b""
    with contextlib.suppress(OSError):
        while chunk := await reader.read(65536):
            first = first or chunk[:12]
    closed.append(time.monotonic() - started)
    statuses.append(first.decode(errors="replace")[9:12] or "none")


async def open_many(port: int, count: int) -> list[Conn]:
    conns: list[Conn] = []
    for _ in range(count):
        try:
            conns.append(await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5))
        except (OSError, TimeoutError):
            break
    return conns


async def send_quietly(writer: asyncio.StreamWriter, data: bytes) -> None:
    with contextlib.suppress(OSError):
        writer.write(data)
        await writer.drain()


Senders = list["asyncio.Future[None]"]


def big_headers(conns: list[Conn]) -> Senders:
    head = b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 8_000_000
    return [asyncio.ensure_future(send_quietly(writer, head)) for _, writer in conns]


def many_headers(conns: list[Conn]) -> Senders:
    fields = b"".join(f"x-h{i}: v\r\n".encode() for i in range(10_000))
    head = b"GET /healthz HTTP/1.1\r\nhost: x\r\n" + fields + b"\r\n"
    return [asyncio.ensure_future(send_quietly(writer, head)) for _, writer in conns]


def nothing(conns: list[Conn]) -> Senders:
    return []


def slow_body(conns: list[Conn]) -> Senders:
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: 100000\r\n\r\n")

    async def trickle(writer: asyncio.StreamWriter) -> None:
        await send_quietly(writer, head)
        while not writer.is_closing():
            await send_quietly(writer, b" ")
            await asyncio.sleep(1.0)

    return [asyncio.ensure_future(trickle(writer)) for _, writer in conns]


SCENARIOS: dict[str, tuple[int, float, Callable[[list[Conn]], Senders], int | None]] = {
    # name: (connections, seconds held, what each sends, the edge's descriptor limit)
    "big_headers": (20, 15.0, big_headers, None),
    "many_headers": (20, 15.0, many_headers, None),
    "silent": (2000, 30.0, nothing, None),
    "slow_body": (200, 30.0, slow_body, None),
    "fd_limit": (1100, 15.0, nothing, 1024),
}


def start_edge(code: Path, nats_url: str, log_dir: Path, name: str, nofile: int | None) -> Proc:
    port = free_port()
    env = {"PORT": str(port), "NATS_URL": nats_url, "SY_ROUTES": "sandbox-*=openai", "EDGE_ID": name, **QUIET}
    argv = [sys.executable, "-m", "services.edge"]
    if nofile is not None:
        argv = ["prlimit", f"--nofile={nofile}:{nofile}", *argv]
    proc = spawn(name, argv, env=env, log_dir=log_dir, cwd=code)
    wait_http_ok(proc, f"http://127.0.0.1:{port}/readyz", timeout=30)
    proc.url = f"http://127.0.0.1:{port}"
    return proc


async def run(name: str, edge: Proc) -> dict[str, Any]:
    count, hold, attack, _ = SCENARIOS[name]
    port = int(edge.url.rsplit(":", 1)[1])
    stop = asyncio.Event()
    quiet_prober = asyncio.ensure_future(probe(edge.url, stop))
    await asyncio.sleep(2.0)
    stop.set()
    before_probe = await quiet_prober
    before = rss_kib(edge.pid)
    stop = asyncio.Event()
    peak = [before]
    sampler = asyncio.ensure_future(sample_rss(edge.pid, peak, stop))
    started = time.monotonic()
    conns = await open_many(port, count)
    closed: list[float] = []
    statuses: list[str] = []
    watchers = [asyncio.ensure_future(watch_close(reader, closed, statuses, started)) for reader, _ in conns]
    senders = attack(conns)
    prober = asyncio.ensure_future(probe(edge.url, stop))
    await asyncio.sleep(max(0.0, hold - (time.monotonic() - started)))
    still_open = len(conns) - len(closed)
    stop.set()
    during = await prober
    await sampler
    for _, writer in conns:
        writer.close()
    for task in [*watchers, *senders]:
        task.cancel()
    return {
        "scenario": name, "connections_opened": len(conns), "held_s": hold, "still_open_at_end": still_open,
        "closed_by_edge_median_s": round(statistics.median(closed), 2) if closed else None,
        "answers": {status: statuses.count(status) for status in sorted(set(statuses))},
        "rss_before_mib": round(before / 1024, 1), "rss_peak_mib": round(peak[0] / 1024, 1),
        "normal_client_before": before_probe, "normal_client_during": during,
        "edge_alive": edge.alive(),
    }


def main() -> int:
    args = sys.argv[1:]
    code = Path(args.pop(0)).resolve() if args and Path(args[0]).is_dir() else REPO_ROOT
    names = args or list(SCENARIOS)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # this process holds thousands of sockets
    clean_environment()
    procs: list[Proc] = []
    with tempfile.TemporaryDirectory(prefix="switchyard-attack-") as tmp:
        work = Path(tmp)
        try:
            s_port = free_port()
            procs.append(spawn_python_service("sandbox", "services.sandbox", env={"PORT": str(s_port), **QUIET},
                                              log_dir=work, health_url=f"http://127.0.0.1:{s_port}/healthz"))
            nats = start_nats_server(log_dir=work, store_dir=work / "js")
            procs.append(nats)
            first_edge, worker = start_gateway(nats.url, f"http://127.0.0.1:{s_port}", work, suffix="-base", code=code)
            procs += [worker, first_edge]
            wait_for_model(first_edge.url)
            for name in names:
                edge = start_edge(code, nats.url, work, f"edge-{name}", SCENARIOS[name][3])
                try:
                    wait_for_model(edge.url)
                    print(json.dumps(asyncio.run(run(name, edge))), flush=True)
                finally:
                    edge.stop(grace=5)
        finally:
            for proc in reversed(procs):
                proc.stop(grace=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
