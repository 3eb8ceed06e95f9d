"""Edge request validation: every rule, with its exact OpenAI-style param path and code."""

from __future__ import annotations

from typing import Any

import pytest

from libs.errors import InvalidRequest
from services.edge.validation import (
    CHAT_FIELDS,
    COMPLETION_FIELDS,
    validate_chat_request,
    validate_completion_request,
)

TYPE, VALUE, MISSING = "invalid_type", "invalid_value", "missing_required_parameter"
USER = {"role": "user", "content": "hi"}
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": [USER], **fields}


def with_message(message: Any) -> dict[str, Any]:
    """A chat body whose third message (index 2) is `message`, so paths read `messages[2]...`."""
    return chat(messages=[USER, {"role": "assistant", "content": "hello"}, message])


def user_parts(*parts: Any) -> dict[str, Any]:
    return {"role": "user", "content": list(parts)}


def completion(**fields: Any) -> dict[str, Any]:
    return {"model": "gpt-3.5-turbo-instruct", "prompt": "Say hi", **fields}


def expect_error(validate: Any, body: Any, param: str | None, code: str) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        validate(body)
    err = caught.value
    assert (err.param, err.code, err.status) == (param, code, 400), err.message
    assert err.message and (param is None or param in err.message)
    return err


# ---- chat: top-level fields -----------------------------------------------------------------------

CHAT_FIELD_CASES = [
    # model / messages (required; the edge routes by the model)
    ({"messages": [USER]}, "model", MISSING),
    (chat(model=None), "model", MISSING),
    (chat(model=5), "model", TYPE),
    (chat(model=""), "model", VALUE),
    ({"model": "m"}, "messages", MISSING),
    (chat(messages=None), "messages", MISSING),
    (chat(messages="hi"), "messages", TYPE),
    (chat(messages={"role": "user"}), "messages", TYPE),
    (chat(messages=[]), "messages", VALUE),
    # forwarded scalars: their JSON type only
    (chat(store="yes"), "store", TYPE),
    (chat(store=1), "store", TYPE),
    (chat(reasoning_effort=1), "reasoning_effort", TYPE),
    (chat(metadata=["a"]), "metadata", TYPE),
    (chat(frequency_penalty="1"), "frequency_penalty", TYPE),
    (chat(frequency_penalty=True), "frequency_penalty", TYPE),
    (chat(presence_penalty=[1]), "presence_penalty", TYPE),
    (chat(logit_bias=[1]), "logit_bias", TYPE),
    (chat(logit_bias={"50256": "1"}), "logit_bias.50256", TYPE),
    (chat(logit_bias={"50256": True}), "logit_bias.50256", TYPE),
    (chat(logprobs=1), "logprobs", TYPE),
    (chat(logprobs=True, top_logprobs=1.0), "top_logprobs", TYPE),
    (chat(max_tokens=True), "max_tokens", TYPE),
    (chat(max_tokens=1.0), "max_tokens", TYPE),
    (chat(max_tokens="5"), "max_tokens", TYPE),
    (chat(max_completion_tokens=2.5), "max_completion_tokens", TYPE),
    # n: the edge fans out by it
    (chat(n=0), "n", VALUE),
    (chat(n=-3), "n", VALUE),
    (chat(n=True), "n", TYPE),
    (chat(n=2.0), "n", TYPE),
    (chat(modalities="text"), "modalities", TYPE),
    (chat(modalities=["text", 1]), "modalities[1]", TYPE),
    (chat(prediction="x"), "prediction", TYPE),
    (chat(audio=[]), "audio", TYPE),
    (chat(response_format="json"), "response_format", TYPE),
    (chat(response_format={"type": 1}), "response_format.type", TYPE),
    (chat(seed=1.5), "seed", TYPE),
    (chat(seed=True), "seed", TYPE),
    (chat(seed="1"), "seed", TYPE),
    (chat(service_tier=1), "service_tier", TYPE),
    # stop
    (chat(stop=5), "stop", TYPE),
    (chat(stop={"a": 1}), "stop", TYPE),
    (chat(stop=["a", 1]), "stop[1]", TYPE),
    (chat(stop=[None]), "stop[0]", TYPE),
    # stream / stream_options: the edge acts on both (and the worker rewrites stream_options)
    (chat(stream="true"), "stream", TYPE),
    (chat(stream=1), "stream", TYPE),
    (chat(stream_options={"include_usage": True}), "stream_options", VALUE),
    (chat(stream=False, stream_options={"include_usage": True}), "stream_options", VALUE),
    (chat(stream=True, stream_options="x"), "stream_options", TYPE),
    (chat(stream=True, stream_options={"include_usage": "yes"}), "stream_options.include_usage", TYPE),
    # sampling: numbers, finite
    (chat(temperature="hot"), "temperature", TYPE),
    (chat(temperature=True), "temperature", TYPE),
    (chat(temperature=float("inf")), "temperature", VALUE),
    (chat(temperature=float("-inf")), "temperature", VALUE),
    (chat(temperature=float("nan")), "temperature", VALUE),
    (chat(frequency_penalty=float("nan")), "frequency_penalty", VALUE),
    (chat(top_p=False), "top_p", TYPE),
    # tools: an array of objects whose `type` is a string
    (chat(tools="x"), "tools", TYPE),
    (chat(tools=[1]), "tools[0]", TYPE),
    (chat(tools=[TOOL, "f"]), "tools[1]", TYPE),
    (chat(tools=[{"type": 5}]), "tools[0].type", TYPE),
    (chat(tool_choice=5), "tool_choice", TYPE),
    (chat(tool_choice=["auto"]), "tool_choice", TYPE),
    (chat(tool_choice={"type": True}), "tool_choice.type", TYPE),
    (chat(parallel_tool_calls="no"), "parallel_tool_calls", TYPE),
    (chat(user=5), "user", TYPE),
    # legacy functions
    (chat(function_call=5), "function_call", TYPE),
    (chat(function_call=["f"]), "function_call", TYPE),
    (chat(functions="x"), "functions", TYPE),
    (chat(functions=[{}, "f"]), "functions[1]", TYPE),
]


@pytest.mark.parametrize(("body", "param", "code"), CHAT_FIELD_CASES, ids=[f"{p}-{c}" for _, p, c in CHAT_FIELD_CASES])
def test_chat_fields(body: dict[str, Any], param: str, code: str) -> None:
    expect_error(validate_chat_request, body, param, code)


# ---- chat: messages -------------------------------------------------------------------------------

ASSISTANT_CALLS = {"role": "assistant", "content": None, "tool_calls": [CALL]}

MESSAGE_CASES: list[tuple[object, str, str]] = [
    # shape and role: an object with a string role
    ("hi", "messages[2]", TYPE),
    (None, "messages[2]", TYPE),
    ({"content": "x"}, "messages[2].role", MISSING),
    ({"role": None, "content": "x"}, "messages[2].role", MISSING),
    ({"role": 5, "content": "x"}, "messages[2].role", TYPE),
    # content: a string, an array of content parts, or null
    ({"role": "user", "content": 5}, "messages[2].content", TYPE),
    ({"role": "user", "content": True}, "messages[2].content", TYPE),
    ({"role": "user", "content": {"type": "text", "text": "x"}}, "messages[2].content", TYPE),
    ({"role": "user", "content": ["hi"]}, "messages[2].content[0]", TYPE),
    ({"role": "user", "content": [{"type": "text", "text": "x"}, 7]}, "messages[2].content[1]", TYPE),
    ({"role": "user", "content": [{"type": 5}]}, "messages[2].content[0].type", TYPE),
    ({"role": "user", "content": [{"type": "text", "text": 5}]}, "messages[2].content[0].text", TYPE),
    # the other known message fields: their JSON type
    ({"role": "user", "content": "x", "name": 5}, "messages[2].name", TYPE),
    ({"role": "assistant", "content": None, "tool_calls": "x"}, "messages[2].tool_calls", TYPE),
    ({"role": "assistant", "content": None, "tool_calls": [5]}, "messages[2].tool_calls[0]", TYPE),
    ({"role": "assistant", "content": "x", "refusal": 5}, "messages[2].refusal", TYPE),
    ({"role": "assistant", "content": None, "function_call": "f"}, "messages[2].function_call", TYPE),
    ({"role": "assistant", "content": None, "audio": "a"}, "messages[2].audio", TYPE),
    ({"role": "tool", "content": "42", "tool_call_id": 5}, "messages[2].tool_call_id", TYPE),
]


@pytest.mark.parametrize(("message", "param", "code"), MESSAGE_CASES, ids=[f"{p}-{c}" for _, p, c in MESSAGE_CASES])
def test_chat_messages(message: Any, param: str, code: str) -> None:
    expect_error(validate_chat_request, with_message(message), param, code)


# ---- completions ----------------------------------------------------------------------------------

COMPLETION_CASES = [
    ({"prompt": "x"}, "model", MISSING),
    (completion(model=[]), "model", TYPE),
    # prompt: the edge splits it into choices, so its shape is checked fully
    ({"model": "m"}, "prompt", MISSING),
    (completion(prompt=None), "prompt", MISSING),
    (completion(prompt=5), "prompt", TYPE),
    (completion(prompt={"text": "x"}), "prompt", TYPE),
    (completion(prompt=[]), "prompt", VALUE),
    (completion(prompt=["a", 1]), "prompt[1]", TYPE),
    (completion(prompt=[1, "a"]), "prompt[1]", TYPE),
    (completion(prompt=[1, -1]), "prompt[1]", VALUE),
    (completion(prompt=[True]), "prompt[0]", TYPE),
    (completion(prompt=[1.0]), "prompt[0]", TYPE),
    (completion(prompt=[{}]), "prompt[0]", TYPE),
    (completion(prompt=[[1, 2], []]), "prompt[1]", VALUE),
    (completion(prompt=[[1, 2], [3, 1.0]]), "prompt[1][1]", TYPE),
    (completion(prompt=[[1], [-5]]), "prompt[1][0]", VALUE),
    (completion(prompt=[[1], "a"]), "prompt[1]", TYPE),
    (completion(best_of=True), "best_of", TYPE),
    (completion(best_of=2, n=3), "best_of", VALUE),  # a fan-out sends n=1: the upstream could not tell
    (completion(echo="yes"), "echo", TYPE),
    (completion(presence_penalty="0"), "presence_penalty", TYPE),
    (completion(logit_bias={"50256": "x"}), "logit_bias.50256", TYPE),
    (completion(logprobs=True), "logprobs", TYPE),
    (completion(logprobs=2.0), "logprobs", TYPE),
    (completion(max_tokens=True), "max_tokens", TYPE),
    (completion(n=0), "n", VALUE),
    (completion(seed=1.0), "seed", TYPE),
    (completion(stop=["a", 2]), "stop[1]", TYPE),
    (completion(stream="yes"), "stream", TYPE),
    (completion(stream_options={"include_usage": True}), "stream_options", VALUE),
    (completion(stream=True, stream_options={"include_usage": 1}), "stream_options.include_usage", TYPE),
    (completion(suffix=5), "suffix", TYPE),
    (completion(temperature=float("inf")), "temperature", VALUE),
    (completion(top_p=True), "top_p", TYPE),
    (completion(user=["u"]), "user", TYPE),
]


@pytest.mark.parametrize(("body", "param", "code"), COMPLETION_CASES, ids=[f"{p}-{c}" for _, p, c in COMPLETION_CASES])
def test_completion_fields(body: dict[str, Any], param: str, code: str) -> None:
    expect_error(validate_completion_request, body, param, code)


# ---- body shape and messages ----------------------------------------------------------------------


@pytest.mark.parametrize("body", [[], [1, 2], "x", 1, 1.5, True, None])
@pytest.mark.parametrize("validate", [validate_chat_request, validate_completion_request])
def test_body_must_be_an_object(validate: Any, body: Any) -> None:
    err = expect_error(validate, body, None, TYPE)
    assert err.message == "The request body must be a JSON object."


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (chat(temperature="hot"), "Invalid type for 'temperature': expected a number, but got a string."),
        (chat(n=True), "Invalid type for 'n': expected an integer, but got a boolean."),
        (chat(max_tokens=1.0), "Invalid type for 'max_tokens': expected an integer, but got a number."),
        (chat(n=0), "'n' must be at least 1, got 0."),
        (chat(temperature=float("nan")), "'temperature' must be a finite number, got NaN."),
        (chat(messages=[]), "'messages' must not be empty."),
        ({"model": "m"}, "Missing required parameter: 'messages'."),
        (chat(reasoning_effort=["high"]), "Invalid type for 'reasoning_effort': expected a string, but got an array."),
        (chat(stream_options={}), "'stream_options' is only allowed when 'stream' is true."),
        (
            chat(n=5),
            "'n' asks for 5 choices; this gateway allows at most 4 per request (MAX_N).",
        ),
    ],
)
def test_messages_are_plain_english(body: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        validate_chat_request(body, max_n=4)
    assert caught.value.message == message


def test_first_violation_in_table_order_wins() -> None:
    # model comes before messages in the table, temperature before tools.
    expect_error(validate_chat_request, {"messages": []}, "model", MISSING)
    expect_error(validate_chat_request, chat(temperature="5", tools="x"), "temperature", TYPE)


def test_the_reported_violation_does_not_depend_on_the_order_of_the_fields() -> None:
    # the body lists the later-in-table field first, at the top level and inside a message
    body = {"tools": "x", "temperature": "5", "model": "m", "messages": [{"role": "user", "content": "hi"}]}
    expect_error(validate_chat_request, body, "temperature", TYPE)
    body = {"model": "m", "messages": [{"name": 5, "content": 7, "role": "user"}]}
    expect_error(validate_chat_request, body, "messages[0].content", "invalid_type")
    body = {"stream": "yes", "model": "m"}  # a present field's error before a missing required one after it
    expect_error(validate_chat_request, body, "messages", MISSING)


def test_shared_rules_are_shared_objects() -> None:
    shared = set(CHAT_FIELDS) & set(COMPLETION_FIELDS) - {"logprobs"}
    assert shared >= {"model", "frequency_penalty", "logit_bias", "n", "seed", "stop", "stream_options", "temperature"}
    for name in shared:
        assert CHAT_FIELDS[name] is COMPLETION_FIELDS[name], name


# ---- valid bodies ---------------------------------------------------------------------------------

KITCHEN_SINK_CHAT: dict[str, Any] = {
    "model": "gpt-4o",
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
        {
            "role": "user",
            "name": "ada",
            "content": [
                {"type": "text", "text": "What is in this image, and the weather?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "high"}},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
                {"type": "file", "file": {"file_id": "file-abc"}},
            ],
        },
        {"role": "assistant", "content": None, "tool_calls": [CALL], "refusal": None},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 3}'},
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "again"}]},
        {"role": "assistant", "function_call": {"name": "get_weather", "arguments": "{}"}},
        {"role": "function", "name": "get_weather", "content": "cold"},
        {"role": "assistant", "content": [{"type": "text", "text": "A cat."}, {"type": "refusal", "refusal": "no"}]},
        {"role": "user", "content": "thanks"},
    ],
    "store": False,
    "reasoning_effort": "minimal",
    "metadata": {"team": "core"},
    "frequency_penalty": -2,
    "presence_penalty": 2.0,
    "logit_bias": {"50256": -100, "15": 100, "7": 0.5},
    "logprobs": True,
    "top_logprobs": 20,
    "max_tokens": 1,
    "max_completion_tokens": 4096,
    "n": 128,
    "modalities": ["text"],
    "prediction": {"type": "content", "content": "x"},
    "audio": {"voice": "alloy", "format": "wav"},
    "response_format": {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
    },
    "seed": -42,
    "service_tier": "auto",
    "stop": ["\n", "END", "x", "y"],
    "stream": True,
    "stream_options": {"include_usage": True},
    "temperature": 0,
    "top_p": 1,
    "tools": [
        TOOL,
        {"type": "function", "function": {"name": "Lookup-2_x", "description": "d", "strict": False}},
    ],
    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    "parallel_tool_calls": True,
    "user": "user-1",
    "function_call": {"name": "get_weather"},
    "functions": [{"name": "get_weather", "parameters": {}}],
}


@pytest.mark.parametrize(
    "body",
    [
        KITCHEN_SINK_CHAT,
        chat(),
        chat(temperature=2, top_p=0.0, frequency_penalty=2, presence_penalty=-2.0),
        chat(stop="END", tool_choice="required", function_call="none", reasoning_effort="low"),
        chat(stop=[], tools=[], response_format={"type": "json_object"}),
        chat(response_format={"type": "text"}, tool_choice="none", n=1),
        chat(logprobs=False, stream=False),
        chat(logprobs=True, top_logprobs=0),
        chat(tools=[{"type": "function", "function": {"name": "f" * 64}}]),
        with_message({"role": "assistant", "content": "", "tool_calls": [CALL]}),
        with_message({"role": "assistant", "tool_calls": [CALL, {**CALL, "id": "call_2"}]}),
        # explicit nulls are absent for every optional field
        chat(**{name: None for name in CHAT_FIELDS if name not in ("model", "messages")}),
        with_message({"role": "user", "content": "x", "name": None}),
        with_message({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u", "detail": None}}]}),
    ],
)
def test_valid_chat_bodies_pass(body: dict[str, Any]) -> None:
    assert validate_chat_request(body) == []


@pytest.mark.parametrize(
    "body",
    [
        completion(),
        completion(prompt=""),
        completion(prompt=["Say hi", "Say bye"]),
        completion(prompt=[1212, 318, 257, 0]),
        completion(prompt=[[1212, 318], [257]]),
        completion(
            best_of=3,
            n=3,
            echo=True,
            frequency_penalty=0.5,
            presence_penalty=-1,
            logit_bias={"50256": -100},
            logprobs=5,
            max_tokens=0,
            seed=7,
            stop="\n",
            stream=True,
            stream_options={"include_usage": False},
            suffix="!",
            temperature=1.5,
            top_p=0.9,
            user="u",
        ),
        completion(logprobs=0, best_of=20),
        completion(**{name: None for name in COMPLETION_FIELDS if name not in ("model", "prompt")}),
    ],
)
def test_valid_completion_bodies_pass(body: dict[str, Any]) -> None:
    assert validate_completion_request(body) == []


# ---- unknown fields -------------------------------------------------------------------------------


def test_unknown_top_level_fields_are_returned_in_order() -> None:
    body = {"zeta": 1, **chat(temperature=1), "web_search_options": {}, "extra_body": None}
    assert validate_chat_request(body) == ["zeta", "web_search_options", "extra_body"]


def test_unknown_completion_fields_are_returned() -> None:
    # chat-only fields are unknown on /v1/completions
    assert validate_completion_request(completion(messages=[USER], tools=[])) == ["messages", "tools"]


def test_unknown_nested_fields_are_tolerated_and_not_reported() -> None:
    body = chat(
        messages=[{"role": "user", "content": [{"type": "text", "text": "x", "cache_control": {}}], "extra": 1}],
        tools=[{"type": "function", "function": {"name": "f", "x": 1}, "y": 2}],
        stream=True,
        stream_options={"include_usage": True, "include_obfuscation": False},
    )
    assert validate_chat_request(body) == []


# ---- forwarded fields: the upstream judges their values -----------------------------------------

CUSTOM_TOOL = {"type": "custom", "custom": {"name": "code_exec", "format": {"type": "text"}}}

FORWARDED_VALUES = [
    # values OpenAI added after the edge's tables were written
    chat(reasoning_effort="none"),
    chat(reasoning_effort="xhigh"),
    chat(tools=[CUSTOM_TOOL]),
    chat(tools=[TOOL, CUSTOM_TOOL, {"type": "web_search"}], tool_choice={"type": "custom", "custom": {"name": "x"}}),
    chat(tool_choice="allowed"),
    chat(response_format={"type": "grammar", "grammar": "x"}),
    chat(function_call="required"),
    # roles, and what a role may carry
    with_message({"role": "developer", "content": "Be brief."}),
    with_message({"role": "critic", "content": "a role OpenAI may add"}),
    with_message({"role": "user", "content": [{"type": "video_url", "video_url": {"url": "u"}}]}),
    with_message({"role": "system", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}),
    with_message({"role": "user", "content": []}),
    with_message({"role": "user"}),
    with_message({"role": "assistant", "content": None, "tool_calls": [{**CALL, "type": "custom"}]}),
    with_message({"role": "tool", "content": "42"}),
    # ranges and patterns
    chat(temperature=3, top_p=1.5, frequency_penalty=-2.5, presence_penalty=9),
    chat(logit_bias={"abc": 101}, top_logprobs=21, max_tokens=0, max_completion_tokens=-1),
    chat(top_logprobs=3),
    chat(stop=["a", "b", "c", "d", "e"], modalities=["text", "video"]),
    chat(tools=[{"type": "function", "function": {"name": "get weather"}}]),
    chat(n=129),
]


@pytest.mark.parametrize("body", FORWARDED_VALUES)
def test_forwarded_fields_are_checked_for_their_json_type_only(body: dict[str, Any]) -> None:
    assert validate_chat_request(body) == []


@pytest.mark.parametrize(
    "body",
    [completion(best_of=21, logprobs=6, max_tokens=-1, temperature=2.5, frequency_penalty=3, n=2),
     completion(logit_bias={"x": 1})],
)
def test_forwarded_completion_values_pass(body: dict[str, Any]) -> None:
    assert validate_completion_request(body) == []


@pytest.mark.parametrize("validate", [validate_chat_request, validate_completion_request])
def test_n_is_bounded_by_max_n_not_by_openai_s_limit(validate: Any) -> None:
    body = chat(n=200) if validate is validate_chat_request else completion(n=200)
    assert validate(body, max_n=256) == []
    err = expect_error(lambda b: validate(b, max_n=8), {**body, "n": 9}, "n", VALUE)
    assert "(MAX_N)" in err.message
    assert validate({**body, "n": 8}, max_n=8) == []
