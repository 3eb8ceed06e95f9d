"""In-process embeddings baseline: single-string requests straight into the micro-batcher, no bus, no HTTP.

The gateway embeddings bench compares against these figures: what the built-in model gives per request at
concurrency 1 and 32, batched and unbatched, on this machine. Texts are tokenised once up front (tokenising a short
text costs tens of microseconds; the model call costs milliseconds), so these are model + batcher costs only.

    python -m tools.bench_embeddings_inprocess [--threads N] [--seconds S] [--max-wait S ...]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import resource
import statistics
import time
from collections.abc import Awaitable
from dataclasses import dataclass

from services.embeddings_worker.batcher import DEFAULT_MAX_WAIT, MicroBatcher
from services.embeddings_worker.local_model import DEFAULT_THREADS, LocalModel

# Query- and sentence-like inputs (5-17 tokens with [CLS]/[SEP]), the typical single-string embeddings request.
SENTENCES = [
    "a cat sits on the mat",
    "how do I reset my password",
    "the quarterly report is due on friday",
    "best hiking trails near the lake",
    "stock market falls as rates rise",
    "what is the capital of australia",
    "recipe for a quick vegetable soup",
    "the train was delayed by twenty minutes",
    "error: connection refused on port 4222",
    "summarise this article in two sentences",
    "cheap flights from berlin to lisbon in may",
    "my order arrived damaged, I want a refund",
    "python asyncio cancel a task safely",
    "the museum opens at nine on weekdays",
    "symptoms of a common cold",
    "translate good morning into spanish",
]
# Two- or three-word search queries (3-5 tokens), where a model call is mostly its fixed cost.
SHORT = ["cat", "weather today", "reset password", "stock market", "soup recipe", "flights lisbon", "cold symptoms"]


@dataclass(frozen=True)
class Rate:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    loop_lag_max_ms: float  # the worst lateness of a 5 ms timer on the same loop during the run
    # Process CPU (loop + model thread) per request: the efficiency figure that other load on the box does not skew.
    cpu_ms: float


async def _lag_probe(stop: asyncio.Event, lags: list[float], period: float = 0.005) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        due = loop.time() + period
        await asyncio.sleep(period)
        lags.append(loop.time() - due)


async def inprocess_rate(
    batcher: MicroBatcher,
    token_ids: list[list[int]],
    concurrency: int,
    *,
    seconds: float = 3.0,
    requests: int = 100_000,
) -> Rate:
    """Single-input requests from ``concurrency`` callers, cycling through ``token_ids``, until ``seconds`` have
    passed or ``requests`` have completed (whichever first)."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    picks = itertools.cycle(token_ids)
    started = loop.time()
    deadline = started + seconds

    async def caller() -> None:
        while len(latencies) < requests and loop.time() < deadline:
            ids = next(picks)
            sent = loop.time()
            await batcher.embed([ids])
            latencies.append(loop.time() - sent)

    return await _measured(started, latencies, asyncio.gather(*(caller() for _ in range(concurrency))))


async def openloop_rate(
    batcher: MicroBatcher, token_ids: list[list[int]], rps: float, *, seconds: float = 3.0, seed: int = 1
) -> Rate:
    """Single-input requests arriving at random (Poisson, mean ``rps``) for ``seconds``, as jobs come off the bus:
    unlike the closed loop, arrivals are not lined up by the previous batch's completion, so ``max_wait`` matters.
    """
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    rng = random.Random(seed)
    picks = itertools.cycle(token_ids)

    async def one(ids: list[int]) -> None:
        sent = loop.time()
        await batcher.embed([ids])
        latencies.append(loop.time() - sent)

    async def arrivals() -> None:
        deadline = loop.time() + seconds
        due = loop.time()
        requests: list[asyncio.Task[None]] = []
        while due < deadline:
            due += rng.expovariate(rps)
            await asyncio.sleep(max(0.0, due - loop.time()))
            requests.append(asyncio.create_task(one(next(picks))))
        await asyncio.gather(*requests)

    return await _measured(loop.time(), latencies, arrivals())


async def _measured(started: float, latencies: list[float], run: Awaitable[object]) -> Rate:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    lags: list[float] = []
    probe = asyncio.create_task(_lag_probe(stop, lags))
    cpu = time.process_time()
    await run
    cpu = time.process_time() - cpu
    elapsed = loop.time() - started
    stop.set()
    await probe
    ordered = sorted(latencies)
    return Rate(
        requests=len(latencies),
        seconds=elapsed,
        rps=len(latencies) / elapsed,
        p50_ms=statistics.median(ordered) * 1000,
        p99_ms=ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
        loop_lag_max_ms=max(lags, default=0.0) * 1000,
        cpu_ms=cpu / max(1, len(latencies)) * 1000,
    )


def _line(mode: str, rate: Rate) -> str:
    return (
        f"{mode:34}: {rate.rps:7.1f} req/s  p50 {rate.p50_ms:6.1f} ms  p99 {rate.p99_ms:6.1f} ms  "
        f"cpu {rate.cpu_ms:5.2f} ms/req  loop lag max {rate.loop_lag_max_ms:5.1f} ms  (n={rate.requests})"
    )


def rss_mb() -> float:
    """Current resident set size (Linux /proc), in MB."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 1e6


async def _memory_figures(model: LocalModel) -> None:
    big = model.tokenize([SENTENCES[i % len(SENTENCES)] for i in range(2048)])
    started = time.perf_counter()
    async with asyncio.timeout(120):
        batcher = MicroBatcher(model)
        await batcher.embed(big)
        await batcher.close()
    print(f"2048-input request through the batcher: {time.perf_counter() - started:.2f} s; RSS after {rss_mb():.0f} MB")
    started = time.perf_counter()
    vectors = model.embed(big)
    print(
        f"2048 inputs in ONE model call: {time.perf_counter() - started:.2f} s; RSS after {rss_mb():.0f} MB "
        f"(peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3:.0f} MB)"
    )
    del vectors


async def _main(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    model = LocalModel.load(args.threads)
    print(f"cold load (import excluded): {time.perf_counter() - started:.3f} s; RSS after load {rss_mb():.0f} MB")
    if not args.skip_memory:
        await _memory_figures(model)
    for label, texts in (("sentences", SENTENCES), ("short", SHORT)):
        token_ids = model.tokenize(texts)
        print(f"-- {label}: {min(map(len, token_ids))}-{max(map(len, token_ids))} tokens, threads={args.threads}")
        for batching, max_wait in [(False, 0.0), *((True, w) for w in args.max_wait)]:
            for concurrency in (1, 32):
                batcher = MicroBatcher(model, batching=batching, max_wait=max_wait)
                await inprocess_rate(batcher, token_ids, concurrency, seconds=0.3)  # warm-up
                rate = await inprocess_rate(batcher, token_ids, concurrency, seconds=args.seconds)
                await batcher.close()
                mode = f"batched max_wait={max_wait * 1000:.1f}ms" if batching else "unbatched"
                print(_line(f"{mode} c={concurrency}", rate))
        for offered in args.open_rps:
            for batching, max_wait in [(False, 0.0), *((True, w) for w in args.max_wait)]:
                batcher = MicroBatcher(model, batching=batching, max_wait=max_wait)
                rate = await openloop_rate(batcher, token_ids, offered, seconds=args.seconds)
                await batcher.close()
                mode = f"batched max_wait={max_wait * 1000:.1f}ms" if batching else "unbatched"
                print(_line(f"{mode} open {offered:.0f}/s", rate))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="onnxruntime intra-op threads")
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--max-wait", type=float, nargs="+", default=[DEFAULT_MAX_WAIT], help="seconds")
    parser.add_argument("--open-rps", type=float, nargs="*", default=[], help="open-loop offered rates to try")
    parser.add_argument("--skip-memory", action="store_true", help="skip the 2048-input load/RSS figures")
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
