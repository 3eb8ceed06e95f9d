"""Load generator for `make bench`: an asyncio keep-alive client (aiohttp / nats-py) under uvloop.

Runs as its own process so the orchestrator (tools/bench.py) can measure its CPU per scenario.
Protocol: one JSON command per line on stdin, one JSON result per line on stdout; an empty line
or EOF ends it. Commands:

  {"kind": "http", "url": ..., "body": {...}, "stream": bool, "concurrency": c, "count": n, "time_cap": s,
   "headers": {...} (optional)}
  {"kind": "nats", "url": nats://..., "subject": ..., "payload": "...", "concurrency": c, "count": n, "time_cap": s}
  {"kind": "jetstream", "url": nats://..., "payload": "...", "concurrency": c, "count": n, "time_cap": s}
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def _content_tokens(line: bytes) -> int:
    """Sandbox tokens are words each followed by one space."""
    chunk = orjson.loads(line[6:])
    count = 0
    for choice in chunk.get("choices") or ():
        text = (choice.get("delta") or {}).get("content") or choice.get("text") or ""
        count += text.count(" ")
    return count


def describe(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"{type(exc).__name__}: status={exc.status} {exc.message}"[:300]
    return f"{type(exc).__name__}: {exc}"[:300]


def summarize(lat: list[float], ttft: list[float], chunks: int, errors: int, elapsed: float) -> dict[str, Any]:
    ok = len(lat)
    out: dict[str, Any] = {
        "ok": ok,
        "errors": errors,
        "elapsed_s": elapsed,
        "rps": ok / elapsed if elapsed > 0 else 0.0,
        "p50_ms": (percentile(lat, 50) or 0.0) * 1000,
        "p99_ms": (percentile(lat, 99) or 0.0) * 1000,
    }
    if ttft:
        out.update(
            chunks=chunks,
            chunks_per_s=chunks / elapsed if elapsed > 0 else 0.0,
            ttft_p50_ms=(percentile(ttft, 50) or 0.0) * 1000,
            ttft_p99_ms=(percentile(ttft, 99) or 0.0) * 1000,
        )
    return out


async def run_http(cmd: dict[str, Any]) -> dict[str, Any]:
    url: str = cmd["url"]
    body = orjson.dumps(cmd["body"])
    stream: bool = cmd.get("stream", False)
    conc: int = cmd["concurrency"]
    count: int = cmd["count"]
    deadline = time.perf_counter() + cmd["time_cap"]
    headers = {"content-type": "application/json", **cmd.get("headers", {})}  # e.g. an API key
    lat: list[float] = []
    ttft: list[float] = []
    chunks = 0
    tokens = 0
    errors = 0
    issued = 0
    first_error = ""

    connector = aiohttp.TCPConnector(limit=conc, limit_per_host=conc, force_close=False)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, trust_env=False, timeout=timeout) as session:

        async def one() -> None:
            nonlocal chunks, tokens, errors, first_error
            t0 = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    if resp.status != 200:
                        errors += 1
                        if not first_error:
                            first_error = f"HTTP {resp.status}: {(await resp.text())[:300]}"
                        await resp.read()
                        return
                    if not stream:
                        await resp.read()
                        lat.append(time.perf_counter() - t0)
                        return
                    first: float | None = None
                    n = 0
                    words = 0
                    async for line in resp.content:
                        if line.startswith(b"data: {"):
                            if first is None:
                                first = time.perf_counter() - t0
                            n += 1
                            words += _content_tokens(line)
                    lat.append(time.perf_counter() - t0)
                    if first is not None:
                        ttft.append(first)
                    chunks += n
                    tokens += words
            except Exception as exc:
                errors += 1
                if not first_error:
                    first_error = describe(exc)

        async def worker() -> None:
            nonlocal issued
            while issued < count and time.perf_counter() < deadline:
                issued += 1
                await one()

        t_start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(conc)))
        elapsed = time.perf_counter() - t_start
    out = summarize(lat, ttft, chunks, errors, elapsed)
    if stream:
        # Content tokens delivered, however they were framed: the sandbox writes a whole answer at
        # once and the gateway coalesces what is already queued, so SSE events are not comparable.
        out.update(tokens=tokens, tokens_per_s=tokens / elapsed if elapsed > 0 else 0.0,
                   tokens_per_stream=tokens / len(lat) if lat else 0.0)
    if stream and not ttft:
        out.update(chunks=0, chunks_per_s=0.0, ttft_p50_ms=0.0, ttft_p99_ms=0.0)
    if first_error:
        out["first_error"] = first_error
    return out


async def timed_calls(cmd: dict[str, Any], call: Callable[[int], Awaitable[object]]) -> dict[str, Any]:
    """`count` calls from `concurrency` loops (bounded by `time_cap`); latencies and errors."""
    deadline = time.perf_counter() + cmd["time_cap"]
    lat: list[float] = []
    errors = 0
    issued = 0
    first_error = ""

    async def worker() -> None:
        nonlocal issued, errors, first_error
        while issued < cmd["count"] and time.perf_counter() < deadline:
            issued += 1
            t0 = time.perf_counter()
            try:
                await call(issued)
                lat.append(time.perf_counter() - t0)
            except Exception as exc:
                errors += 1
                if not first_error:
                    first_error = repr(exc)[:300]

    t_start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(cmd["concurrency"])))
    out = summarize(lat, [], 0, errors, time.perf_counter() - t_start)
    if first_error:
        out["first_error"] = first_error
    return out


async def run_nats(cmd: dict[str, Any]) -> dict[str, Any]:
    import nats

    nc = await nats.connect(cmd["url"])
    subject: str = cmd["subject"]
    payload: bytes = cmd["payload"].encode()
    try:
        return await timed_calls(cmd, lambda _: nc.request(subject, payload, timeout=10))
    finally:
        await nc.drain()


async def run_jetstream(cmd: dict[str, Any]) -> dict[str, Any]:
    """Publish jobs to the bench work queue and wait for each answer on one wildcard inbox, the
    way the edge does (tools/bench_responder.py answers them)."""
    import nats

    nc = await nats.connect(cmd["url"])
    js = nc.jetstream()
    prefix = f"bench.reply.{os.getpid()}."
    waiting: dict[str, asyncio.Future[bytes]] = {}

    async def on_reply(msg: Any) -> None:
        future = waiting.pop(msg.subject[len(prefix):], None)
        if future is not None and not future.done():
            future.set_result(msg.data)

    await nc.subscribe(prefix + "*", cb=on_reply)
    payload: dict[str, Any] = orjson.loads(cmd["payload"])
    loop = asyncio.get_running_loop()

    async def one_job(number: int) -> None:
        token = str(number)
        future: asyncio.Future[bytes] = loop.create_future()
        waiting[token] = future
        try:
            await js.publish("bench.jobs", orjson.dumps({**payload, "reply": prefix + token}))
            await asyncio.wait_for(future, 10)
        finally:
            waiting.pop(token, None)

    try:
        return await timed_calls(cmd, one_job)
    finally:
        await nc.drain()


async def main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print(orjson.dumps({"ready": True, "client": "asyncio aiohttp client (uvloop)"}).decode(), flush=True)
    while True:
        line = await reader.readline()
        if not line.strip():
            return
        cmd = orjson.loads(line)
        try:
            runner = {"nats": run_nats, "jetstream": run_jetstream, "http": run_http}[cmd["kind"]]
            result = await runner(cmd)
        except Exception as exc:
            result = {"ok": 0, "errors": 1, "fatal": repr(exc)[:500]}
        print(orjson.dumps(result).decode(), flush=True)


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
