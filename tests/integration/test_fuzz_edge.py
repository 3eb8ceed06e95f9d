"""Random bodies against the running edge: every answer is a success or a well-formed OpenAI error
with a 4xx status, never a 500, and the edge stays healthy. Bounded: a fixed number of requests."""

from __future__ import annotations

import random
from typing import Any

import httpx

from tests.conftest import AUTH_KEY, Stack

VALID: dict[str, object] = {"model": "sandbox-chat",
                             "messages": [{"role": "user", "content": "fuzz [sandbox tokens=2]"}]}
FIELDS = ["model", "messages", "n", "stream", "stream_options", "temperature", "top_p", "stop", "max_tokens",
          "tools", "tool_choice", "logit_bias", "logprobs", "top_logprobs", "response_format", "seed", "user"]


def random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, 1, -1, 2, 3, 129, 2**63, -(2**40)])
    if kind == 3:
        return rng.choice([0.5, -0.0, 1e308, 2.5, 1e-9])
    if kind in (4, 5):
        return rng.choice(["", "x", "sandbox-chat", "user", "auto", "none", "ü" * 3, "a" * 300])
    if kind in (6, 7):
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(["role", "content", "type", "text", "x", "function", "name"]): random_json(rng, depth + 1)
            for _ in range(rng.randrange(4))}


async def test_random_bodies_never_get_a_500(stack: Stack) -> None:
    rng = random.Random(20261123)
    statuses: dict[int, int] = {}
    async with httpx.AsyncClient(base_url=stack.base_url, headers={"authorization": f"Bearer {AUTH_KEY}"},
                                 timeout=30) as http:
        for _ in range(300):
            body = dict(VALID)
            for _ in range(rng.randrange(1, 3)):
                body[rng.choice(FIELDS)] = random_json(rng)
            if body.get("n") and isinstance(body["n"], int) and not isinstance(body["n"], bool):
                body["n"] = min(body["n"], 4)  # keep valid fan-outs small; n itself is fuzzed by validation tests
            response = await http.post("/chat/completions", json=body)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            assert response.status_code < 500, (body, response.text)
            if response.status_code != 200:
                error = response.json()["error"]
                assert set(error) == {"message", "type", "param", "code"} and error["message"]
        health = await http.get(stack.edge_url + "/readyz")
    assert health.status_code == 200
    assert statuses.get(400, 0) > 100 and statuses.get(200, 0) > 10  # both paths were exercised
