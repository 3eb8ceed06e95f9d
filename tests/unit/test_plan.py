"""services.edge.plan.plan_jobs: one client request → jobs, by what the routed pool does natively."""

from __future__ import annotations

from typing import Any

import pytest

from libs.errors import InvalidRequest
from services.edge.plan import chat_to_completion, plan_jobs
from services.edge.routing import Route

CHAT_ONLY = Route("m", "p", frozenset({"chat"}))
CHAT_N = Route("m", "p", frozenset({"chat", "n"}))
COMPLETION = Route("m", "p", frozenset({"chat", "completion"}))
COMPLETION_N = Route("m", "p", frozenset({"chat", "completion", "n"}))

MESSAGES = [{"role": "user", "content": "hi"}]


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": "alias", "messages": MESSAGES, **extra}


def completion_body(prompt: Any, **extra: Any) -> dict[str, Any]:
    return {"model": "alias", "prompt": prompt, **extra}


def test_plan_carries_route_model_and_pool() -> None:
    plan = plan_jobs("chat", chat_body(), Route("upstream-model", "pool-a", frozenset({"chat"})))
    assert (plan.model, plan.pool) == ("upstream-model", "pool-a")


# ---- chat ----------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [None, 1])
@pytest.mark.parametrize("route", [CHAT_ONLY, CHAT_N])
def test_chat_single_choice_is_one_job(n: int | None, route: Route) -> None:
    body = chat_body() if n is None else chat_body(n=n)
    plan = plan_jobs("chat", body, route)
    assert plan.choices == 1
    assert [(j.kind, j.body, j.index_offset) for j in plan.jobs] == [("chat", body, 0)]
    choices = [{"index": 0, "delta": {"content": "x"}}]
    assert plan.convert(choices) is choices


@pytest.mark.parametrize("n", [2, 4])
def test_chat_n_passes_through_to_native_pool(n: int) -> None:
    body = chat_body(n=n, temperature=0.5)
    plan = plan_jobs("chat", body, CHAT_N)
    assert plan.choices == n
    assert len(plan.jobs) == 1
    job = plan.jobs[0]
    assert (job.kind, job.body, job.index_offset) == ("chat", body, 0)


@pytest.mark.parametrize("n", [2, 3, 5])
def test_chat_n_fans_out_without_native_n(n: int) -> None:
    body = chat_body(n=n, temperature=0.5)
    plan = plan_jobs("chat", body, CHAT_ONLY)
    assert plan.choices == n
    assert [j.index_offset for j in plan.jobs] == list(range(n))
    for job in plan.jobs:
        assert job.kind == "chat"
        assert job.body == {**body, "n": 1}
    assert body["n"] == n  # the client's body is not mutated


# ---- completions, native -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "prompt", "n", "choices"),
    [
        (COMPLETION, "once", None, 1),
        (COMPLETION, ["a", "b", "c"], 1, 3),
        (COMPLETION, [1, 2, 3], None, 1),
        (COMPLETION, [[1, 2], [3]], None, 2),
        (COMPLETION_N, "once", 3, 3),
        (COMPLETION_N, ["a", "b"], 3, 6),
    ],
)
def test_native_completion_is_one_job(route: Route, prompt: Any, n: int | None, choices: int) -> None:
    body = completion_body(prompt) if n is None else completion_body(prompt, n=n)
    plan = plan_jobs("completion", body, route)
    assert plan.choices == choices
    assert [(j.kind, j.body, j.index_offset) for j in plan.jobs] == [("completion", body, 0)]
    raw = [{"index": 0, "text": "x"}]
    assert plan.convert(raw) is raw


def test_native_completion_single_prompt_fans_out_n() -> None:
    body = completion_body("once", n=3, echo=True)
    plan = plan_jobs("completion", body, COMPLETION)
    assert plan.choices == 3
    assert [(j.kind, j.index_offset) for j in plan.jobs] == [("completion", 0), ("completion", 1), ("completion", 2)]
    assert all(j.body == {**body, "n": 1} for j in plan.jobs)


def test_native_completion_prompt_list_fans_out_per_prompt_and_choice() -> None:
    body = completion_body(["p0", "p1", "p2"], n=2, max_tokens=5)
    plan = plan_jobs("completion", body, COMPLETION)
    assert plan.choices == 6
    assert [(j.body["prompt"], j.index_offset) for j in plan.jobs] == [
        ("p0", 0), ("p0", 1), ("p1", 2), ("p1", 3), ("p2", 4), ("p2", 5),
    ]  # fmt: skip
    for job in plan.jobs:
        assert job.kind == "completion"
        assert job.body["n"] == 1
        assert job.body["max_tokens"] == 5


def test_native_completion_token_prompts_fan_out_as_token_prompts() -> None:
    body = completion_body([[1, 2], [3, 4]], n=2)
    plan = plan_jobs("completion", body, COMPLETION)
    assert [(j.body["prompt"], j.index_offset) for j in plan.jobs] == [
        ([1, 2], 0), ([1, 2], 1), ([3, 4], 2), ([3, 4], 3),
    ]  # fmt: skip


def test_native_completion_single_token_prompt_fans_out_whole() -> None:
    plan = plan_jobs("completion", completion_body([5, 6, 7], n=2), COMPLETION)
    assert [(j.body["prompt"], j.index_offset) for j in plan.jobs] == [([5, 6, 7], 0), ([5, 6, 7], 1)]


# ---- completions on a chat-only pool -------------------------------------------------------


def test_chat_only_pool_turns_prompt_into_user_message() -> None:
    body = completion_body(
        "Say hi", max_tokens=7, temperature=0.2, suffix="!", echo=False, best_of=1, logprobs=2, stream=True
    )
    plan = plan_jobs("completion", body, CHAT_ONLY)
    assert plan.choices == 1
    assert len(plan.jobs) == 1
    job = plan.jobs[0]
    assert job.kind == "chat"
    assert job.index_offset == 0
    assert job.body == {
        "model": "alias",
        "messages": [{"role": "user", "content": "Say hi"}],
        "max_tokens": 7,
        "temperature": 0.2,
        "stream": True,
    }
    for dropped in ("prompt", "suffix", "echo", "best_of", "logprobs"):
        assert dropped not in job.body
    assert plan.convert is chat_to_completion


@pytest.mark.parametrize(
    ("route", "prompts", "n", "expected"),
    [
        (CHAT_ONLY, ["a", "b"], None, [("a", 0, None), ("b", 1, None)]),
        (CHAT_ONLY, ["a", "b"], 2, [("a", 0, 1), ("a", 1, 1), ("b", 2, 1), ("b", 3, 1)]),
        (CHAT_ONLY, "a", 3, [("a", 0, 1), ("a", 1, 1), ("a", 2, 1)]),
        (CHAT_N, ["a", "b", "c"], 2, [("a", 0, 2), ("b", 2, 2), ("c", 4, 2)]),
        (CHAT_N, "a", 4, [("a", 0, 4)]),
    ],
)
def test_chat_only_pool_indexes_follow_prompt_index_times_n(
    route: Route, prompts: Any, n: int | None, expected: list[tuple[str, int, int | None]]
) -> None:
    body = completion_body(prompts) if n is None else completion_body(prompts, n=n)
    plan = plan_jobs("completion", body, route)
    count = len(prompts) if isinstance(prompts, list) else 1
    assert plan.choices == count * (n or 1)
    got = [(j.body["messages"][0]["content"], j.index_offset, j.body.get("n")) for j in plan.jobs]
    assert got == expected
    assert all(j.kind == "chat" and len(j.body["messages"]) == 1 for j in plan.jobs)


@pytest.mark.parametrize("prompt", [[1, 2, 3], [[1, 2], [3]], ["text", [1, 2]]])
def test_token_prompts_on_chat_only_pool_are_rejected(prompt: Any) -> None:
    with pytest.raises(InvalidRequest) as info:
        plan_jobs("completion", completion_body(prompt), CHAT_ONLY)
    err = info.value
    assert err.param == "prompt"
    assert err.status == 400
    assert "alias" in err.message
    assert err.body()["error"]["param"] == "prompt"


def test_convert_turns_chat_choices_into_text_completion_choices() -> None:
    plan = plan_jobs("completion", completion_body(["a", "b"], n=2), CHAT_ONLY)
    chat_choices: list[dict[str, Any]] = [
        {"index": 0, "delta": {"role": "assistant"}, "logprobs": None, "finish_reason": None},
        {"index": 3, "delta": {"content": "Hi"}, "logprobs": {"content": []}, "finish_reason": None},
        {"index": 2, "delta": {}, "finish_reason": "stop"},
        {"delta": {"content": None}, "finish_reason": "length"},
    ]
    assert plan.convert(chat_choices) == [
        {"index": 0, "text": "", "logprobs": None, "finish_reason": None},
        {"index": 3, "text": "Hi", "logprobs": None, "finish_reason": None},
        {"index": 2, "text": "", "logprobs": None, "finish_reason": "stop"},
        {"index": 0, "text": "", "logprobs": None, "finish_reason": "length"},
    ]


def test_chat_to_completion_without_delta() -> None:
    assert chat_to_completion([{"index": 1, "finish_reason": "stop"}]) == [
        {"index": 1, "text": "", "logprobs": None, "finish_reason": "stop"}
    ]
    assert chat_to_completion([]) == []
