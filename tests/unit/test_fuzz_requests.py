"""Property tests: no request body, however malformed, gets anything but a clean 400 from the edge's
pure request pipeline (validation, then planning of jobs) — never an unexpected exception (a 500)."""

from __future__ import annotations

from typing import Any, cast

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libs.errors import InvalidRequest
from services.edge.plan import plan_jobs
from services.edge.routing import Route
from services.edge.validation import validate_chat_request, validate_completion_request

json_scalars = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=25,
)

CHAT = {
    "model": "m",
    "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "hi"},
                                     {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "ok"},
    ],
    "n": 2, "stream": True, "stream_options": {"include_usage": True}, "temperature": 1, "stop": ["x"],
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
}
COMPLETION = {"model": "m", "prompt": ["a", "b"], "n": 2, "max_tokens": 5, "logprobs": 2, "echo": False}
CHAT_FIELDS = [*sorted(CHAT), "top_p", "logit_bias", "logprobs", "top_logprobs", "max_tokens", "seed",
               "response_format", "tool_choice", "user", "presence_penalty", "functions"]
COMPLETION_FIELDS = [*sorted(COMPLETION), "suffix", "best_of", "stream", "stop", "temperature"]
MAX_N = 128  # the edge's default: the route passes its MAX_N, so planning never sees a larger n
ROUTES = [Route("m", "p", frozenset(f)) for f in ({"chat"}, {"chat", "n"}, {"chat", "completion"},
                                                  {"chat", "completion", "n"})]


def pipeline(kind: str, body: Any) -> None:
    # what the edge does with a body: the JSON round trip, validation, then a plan for every pool kind
    body = orjson.loads(orjson.dumps(body)) if _encodable(body) else body
    try:
        if kind == "chat":
            validate_chat_request(body, max_n=MAX_N)
        else:
            validate_completion_request(body, max_n=MAX_N)
        for route in ROUTES:
            plan = plan_jobs("chat" if kind == "chat" else "completion", body, route)
            assert plan.jobs and plan.choices >= 1
    except InvalidRequest as err:
        assert err.status == 400 and err.body()["error"]["message"]


def _encodable(value: Any) -> bool:
    try:
        orjson.dumps(value)
        return True
    except (TypeError, orjson.JSONEncodeError):
        return False


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_any_json_body(body: Any) -> None:
    pipeline("chat", body)
    pipeline("completion", body)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(CHAT_FIELDS), json_values)
def test_a_valid_chat_body_with_one_field_replaced(field: str, value: Any) -> None:
    pipeline("chat", {**CHAT, field: value})


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 3), st.sampled_from(["role", "content", "tool_calls", "tool_call_id", "name"]), json_values)
def test_a_valid_chat_body_with_one_message_field_replaced(index: int, field: str, value: Any) -> None:
    messages = [dict(m) for m in cast(list[dict[str, Any]], CHAT["messages"])]
    messages[index][field] = value
    pipeline("chat", {**CHAT, "messages": messages})


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(COMPLETION_FIELDS), json_values)
def test_a_valid_completion_body_with_one_field_replaced(field: str, value: Any) -> None:
    pipeline("completion", {**COMPLETION, field: value})
