"""The ChatGPT web conversation request body (fact sheet §2.2) and OpenAI messages turned into it."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from libs.errors import InvalidRequest
from services.chatgpt_web_worker.request import conversation_body, openai_to_upstream, user_message


def _is_uuid4(value: object) -> bool:
    return isinstance(value, str) and uuid.UUID(value).version == 4


def test_user_message_shape_and_fresh_ids() -> None:
    one, two = user_message("Hello"), user_message("Be brief.", role="system")
    assert one == {"id": one["id"], "author": {"role": "user"},
                   "content": {"content_type": "text", "parts": ["Hello"]}, "metadata": {}}
    assert two["author"] == {"role": "system"} and two["content"]["parts"] == ["Be brief."]
    assert _is_uuid4(one["id"]) and _is_uuid4(two["id"]) and one["id"] != two["id"]


def test_new_conversation_body() -> None:
    msg = user_message("Hello")
    parent = str(uuid.uuid4())
    body = conversation_body(action="next", messages=[msg], parent_message_id=parent, conversation_id=None,
                             model="text-davinci-002-render-sha")
    assert "conversation_id" not in body  # absent: a new conversation
    assert {k: body[k] for k in ("action", "messages", "parent_message_id", "model", "timezone_offset_min",
                                 "history_and_training_disabled")} == {
        "action": "next", "messages": [msg], "parent_message_id": parent, "model": "text-davinci-002-render-sha",
        "timezone_offset_min": 0, "history_and_training_disabled": False}
    assert body["force_use_sse"] is True  # a 2024 server streams SSE, not a websocket address
    assert body["conversation_mode"] == {"kind": "primary_assistant"}
    assert _is_uuid4(body["websocket_request_id"])


def test_follow_up_variant_and_continue_bodies() -> None:
    msg = user_message("Hello")
    follow = conversation_body(action="next", messages=[msg], parent_message_id="a-1", conversation_id="c-1",
                               model="gpt-4o", history_disabled=True)
    assert (follow["conversation_id"], follow["parent_message_id"], follow["history_and_training_disabled"]) == (
        "c-1", "a-1", True)
    variant = conversation_body(action="variant", messages=[msg], parent_message_id="sys-1", conversation_id="c-1",
                                model="gpt-4o")
    assert variant["action"] == "variant" and variant["messages"] == [msg]
    cont = conversation_body(action="continue", messages=None, parent_message_id="a-1", conversation_id="c-1",
                             model="gpt-4o")
    assert "messages" not in cont and cont["action"] == "continue"


def test_unknown_action_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="action"):
        conversation_body(action="regenerate", messages=[], parent_message_id="p", conversation_id=None, model="m")


def test_every_openai_message_becomes_its_own_upstream_message() -> None:
    out = openai_to_upstream([
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": "Use English."},
        {"role": "user", "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": "there"}],
         "name": "ann"},
        {"role": "assistant", "content": "Hi!"},
        {"role": "user", "content": "How are you?"},
    ])
    assert [(m["author"]["role"], m["content"]["parts"]) for m in out] == [
        ("system", ["Be brief."]), ("system", ["Use English."]), ("user", ["Hello\nthere"]), ("assistant", ["Hi!"]),
        ("user", ["How are you?"])]
    assert len({m["id"] for m in out}) == 5 and all(m["metadata"] == {} for m in out)


@pytest.mark.parametrize(("messages", "param"), [
    ([{"role": "user", "content": "a"}, {"role": "tool", "content": "42", "tool_call_id": "t"}], "messages[1].role"),
    ([{"role": "function", "name": "f", "content": "42"}], "messages[0].role"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}],
     "messages[0].content[0]"),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": [{"type": "text", "text": "see"},
                                                                   {"type": "input_audio", "input_audio": {}}]}],
     "messages[1].content[1]"),
    ([{"role": "assistant", "content": None, "tool_calls": [{"id": "t", "type": "function"}]}],
     "messages[0].tool_calls"),
    ([{"role": "assistant", "content": None}], "messages[0].content"),
    ([{"role": "user", "content": 3}], "messages[0].content"),
    ([{"role": "user", "content": ["loose string"]}], "messages[0].content[0]"),
    (["not an object"], "messages[0]"),
    ([], "messages"),
])
def test_what_a_web_account_cannot_take_is_refused_by_path(messages: list[Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        openai_to_upstream(messages)
    assert caught.value.param == param
    assert caught.value.status == 400
    assert param in caught.value.message


@pytest.mark.parametrize("messages", [
    [{"role": "tool", "content": "42", "tool_call_id": "t"}],
    [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}],
    [{"role": "assistant", "content": None, "tool_calls": [{"id": "t", "type": "function"}]}],
])
def test_the_refusal_says_web_accounts_take_text_only(messages: list[Any]) -> None:
    with pytest.raises(InvalidRequest, match="ChatGPT web accounts take text only"):
        openai_to_upstream(messages)
