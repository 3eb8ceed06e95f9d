"""How one client request becomes jobs, given what the routed pool can do natively.

- `n > 1` passes through to pools with the `n` feature; otherwise the edge fans out n jobs of
  n=1, whose choices are re-indexed through `index_offset`.
- `/v1/completions` goes natively to pools with the `completion` feature; otherwise each prompt
  becomes one chat job (prompt → one user message) and chat deltas are turned back into
  `text_completion` choices. Choice indexes follow OpenAI: prompt_index * n + i.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from libs.errors import InvalidRequest
from services.edge.openai_format import Kind
from services.edge.routing import Route

Choices = list[dict[str, Any]]

# Completions-only fields that mean nothing to a chat upstream.
_COMPLETION_ONLY = ("prompt", "suffix", "echo", "best_of", "logprobs")


@dataclass(frozen=True)
class PlannedJob:
    kind: str  # what the worker calls: "chat" or "completion"
    body: dict[str, Any]
    index_offset: int


def _same(choices: Choices) -> Choices:
    return choices


def chat_to_completion(choices: Choices) -> Choices:
    converted = []
    for choice in choices:
        delta = choice.get("delta") or {}
        converted.append({
            "index": choice.get("index", 0),
            "text": delta.get("content") or "",
            "logprobs": None,
            "finish_reason": choice.get("finish_reason"),
        })
    return converted


@dataclass(frozen=True)
class JobPlan:
    model: str
    pool: str
    jobs: list[PlannedJob]
    choices: int
    convert: Callable[[Choices], Choices] = _same


def _fan_out(kind: str, body: dict[str, Any], n: int, native_n: bool, base: int) -> list[PlannedJob]:
    if n == 1 or native_n:
        return [PlannedJob(kind, body, base)]
    single = {**body, "n": 1}
    return [PlannedJob(kind, single, base + i) for i in range(n)]


def plan_jobs(kind: Kind, body: dict[str, Any], route: Route) -> JobPlan:
    n = int(body.get("n") or 1)
    native_n = "n" in route.features
    if kind == "chat":
        return JobPlan(route.model, route.pool, _fan_out("chat", body, n, native_n, 0), n)
    prompt = body["prompt"]
    prompts: list[Any] = [prompt] if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)) else prompt
    total = n * len(prompts)
    if "completion" in route.features:
        if native_n or n == 1:
            return JobPlan(route.model, route.pool, [PlannedJob("completion", body, 0)], total)
        jobs = [job for p_index, p in enumerate(prompts)
                for job in _fan_out("completion", {**body, "prompt": p}, n, False, p_index * n)]
        return JobPlan(route.model, route.pool, jobs, total)
    if any(not isinstance(p, str) for p in prompts):
        raise InvalidRequest(
            f"The model '{body['model']}' is served by a chat-only pool; token-id prompts need a native "
            "completions upstream.", param="prompt",
        )
    chat_base = {k: v for k, v in body.items() if k not in _COMPLETION_ONLY}
    jobs = []
    for p_index, text in enumerate(prompts):
        chat_body = {**chat_base, "messages": [{"role": "user", "content": text}]}
        jobs += _fan_out("chat", chat_body, n, native_n, p_index * n)
    return JobPlan(route.model, route.pool, jobs, total, chat_to_completion)
