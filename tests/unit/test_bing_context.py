"""OpenAI messages folded into a prompt and a web-page context, as SydneyQt's
ParseOpenAIMessages (sydney.md §9.5)."""

from __future__ import annotations

from typing import Any

import pytest

from libs.bing.context import MISSING_PROMPT, fold_openai_messages


def test_the_sheet_example_exactly() -> None:
    messages = [
        {"role": "system", "content": "You are Sydney."},
        {"role": "user", "content": "Hello!"},
        {"role": "assistant", "content": "Hi!"},
        {"role": "user", "content": "How are you?"},
    ]
    assert fold_openai_messages(messages) == (
        "How are you?",
        "\n\n[system](#instructions)\nYou are Sydney.\n\n[user](#message)\nHello!\n\n[assistant](#message)\nHi!",
        None,
    )


def test_one_message_has_no_context() -> None:
    assert fold_openai_messages([{"role": "user", "content": "Hi"}]) == ("Hi", "", None)


def test_the_prompt_is_the_last_user_message_not_the_last_message() -> None:
    messages = [
        {"role": "user", "content": "first"},
        {"role": "user", "content": "prompt"},
        {"role": "assistant", "content": "after"},
    ]
    assert fold_openai_messages(messages) == (
        "prompt",
        "\n\n[user](#message)\nfirst\n\n[assistant](#message)\nafter",
        None,
    )


def test_parts_last_text_and_last_image_of_the_prompt() -> None:
    prompt = {
        "role": "user",
        "content": [
            {"type": "text", "text": "ignored"},
            {"type": "image_url", "image_url": {"url": "https://img.test/1.png"}},
            {"type": "text", "text": "describe"},
            "not-a-part",
            {"type": "text", "text": 5},
            {"type": "image_url", "image_url": {"url": "https://img.test/2.png"}},
        ],
    }
    assert fold_openai_messages([prompt]) == ("describe", "", "https://img.test/2.png")


def test_image_url_only_from_the_prompt_message() -> None:
    messages: list[dict[str, Any]] = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "old"}, {"type": "image_url", "image_url": {"url": "u"}}],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "seen"}]},
        {"role": "user", "content": "now"},
    ]
    prompt, context, image = fold_openai_messages(messages)
    assert (prompt, image) == ("now", None)
    assert context == "\n\n[user](#message)\nold\n\n[assistant](#message)\nseen"


def test_other_roles_are_skipped_with_sydneyqts_separators() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "S"},
        {"role": "tool", "content": "T"},
        {"role": "assistant", "content": None},
        {"role": "user", "content": "P"},
        {"role": "function", "content": "F"},
    ]
    # The separator goes by position: the skipped last message leaves "\n\n" after the assistant's.
    assert fold_openai_messages(messages) == (
        "P",
        "\n\n[system](#instructions)\nS\n\n[assistant](#message)\n\n\n",
        None,
    )


@pytest.mark.parametrize(
    "messages",
    [
        [],
        [{"role": "assistant", "content": "no user"}],
        [{"role": "system", "content": "s"}, {"role": "user", "content": ""}],
        [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}],
        [{"role": "user", "content": None}],
    ],
)
def test_missing_prompt(messages: list[dict[str, Any]]) -> None:
    with pytest.raises(ValueError, match=r"^user prompt is missing \(last message is not sent by user\)$"):
        fold_openai_messages(messages)
    assert MISSING_PROMPT == "user prompt is missing (last message is not sent by user)"


@pytest.mark.parametrize("messages", [["hi"], [{"role": 3, "content": "x"}, {"role": "user", "content": "p"}]])
def test_malformed_messages_name_the_index(messages: list[Any]) -> None:
    with pytest.raises(ValueError, match=r"messages\[0\]"):
        fold_openai_messages(messages)


def test_null_role_is_an_unknown_role() -> None:
    messages: list[dict[str, Any]] = [{"role": None, "content": "x"}, {"role": "user", "content": "p"}]
    assert fold_openai_messages(messages) == ("p", "\n\n", None)
