"""The latency the gateway adds to a large image answer: the same ~1 MB `b64_json` image
(512x512 of noise, which PNG cannot compress) asked of the sandbox directly and through the edge
(edge -> bus -> image-worker -> sandbox -> back), one request at a time, alternating.

    python -m tools.bench_images --edge http://127.0.0.1:8080 --sandbox http://127.0.0.1:8000 --key KEY [-n 20]

`image_latency` is what the bench calls; it returns milliseconds (p50 and p90 of each path, and
the p50 the gateway adds).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

import httpx

BODY = {"model": "sandbox-image", "prompt": "[sandbox image_pattern=noise] the gateway's overhead",
        "size": "512x512", "response_format": "b64_json"}
WARMUP = 2


async def _timed(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> tuple[float, int]:
    started = time.perf_counter()
    response = await client.post(url, json=body)
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed, len(response.content)


def _bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"} if key else {}


def _ms(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000, 2)


async def image_latency(
    edge_url: str, sandbox_url: str, key: str, n: int, *, sandbox_key: str = "", model: str = "sandbox-image",
) -> dict[str, Any]:
    """p50/p90 (ms) of `n` ~1 MB b64_json image requests to the sandbox directly and through the
    edge, and the p50 the gateway adds. `key` is the edge's; `sandbox_key` the sandbox's, if it
    wants one. The edge must route `model` to an image worker whose upstream is that sandbox."""
    body = {**BODY, "model": model}
    direct: list[float] = []
    edged: list[float] = []
    size = 0
    timeout = httpx.Timeout(60.0)
    async with httpx.AsyncClient(timeout=timeout, headers=_bearer(sandbox_key)) as to_sandbox, \
            httpx.AsyncClient(timeout=timeout, headers=_bearer(key)) as to_edge:
        for i in range(WARMUP + n):  # alternating: both paths see the same machine load
            seconds, size = await _timed(to_sandbox, sandbox_url.rstrip("/") + "/v1/images/generations", body)
            if i >= WARMUP:
                direct.append(seconds)
            seconds, _ = await _timed(to_edge, edge_url.rstrip("/") + "/v1/images/generations", body)
            if i >= WARMUP:
                edged.append(seconds)
    return {
        "n": n, "answer_bytes": size,
        "direct_p50_ms": _ms(direct, 0.5), "direct_p90_ms": _ms(direct, 0.9),
        "edge_p50_ms": _ms(edged, 0.5), "edge_p90_ms": _ms(edged, 0.9),
        "added_p50_ms": round((statistics.median(edged) - statistics.median(direct)) * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edge", required=True)
    parser.add_argument("--sandbox", required=True)
    parser.add_argument("--key", default="", help="the edge's API key")
    parser.add_argument("--sandbox-key", default="")
    parser.add_argument("-n", type=int, default=20)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(image_latency(args.edge, args.sandbox, args.key, args.n,
                                               sandbox_key=args.sandbox_key))))


if __name__ == "__main__":
    main()
