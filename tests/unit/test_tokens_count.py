"""Real token counts (libs/tokens.py `count_text`, `chat_usage`) for upstreams that report no usage:
OpenAI's published ids and chat counts, the model -> encoding choice, the lazy once-per-process load."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from libs import tokens
from libs.tokens import chat_usage, count_text, encoding_name

ROOT = Path(__file__).resolve().parents[2]

# tiktoken's own tests (tests/test_encoding.py) for cl100k_base; o200k_base "hello world" as published.
PUBLISHED_IDS = [
    ("cl100k_base", "hello world", [15339, 1917]),
    ("cl100k_base", "rer", [38149]),
    ("cl100k_base", "'rer", [2351, 81]),
    ("cl100k_base", "today\n ", [31213, 198, 220]),
    ("cl100k_base", "today\n \n", [31213, 27907]),
    ("cl100k_base", "today\n  \n", [31213, 14211]),
    ("cl100k_base", " \x850", [220, 126, 227, 15]),
    ("cl100k_base", "👍", [9468, 239, 235]),
    ("o200k_base", "hello world", [24912, 2375]),
]
MODEL_OF = {"o200k_base": "gpt-4o", "cl100k_base": "gpt-4"}


@pytest.mark.parametrize(("encoding", "text", "ids"), PUBLISHED_IDS)
def test_the_tokenizer_gives_the_published_ids(encoding: str, text: str, ids: list[int]) -> None:
    tokens.preload(MODEL_OF[encoding])  # imports bpe_openai as libs.tokens does (its import warns)
    from bpe_openai import _bindings  # what libs.tokens counts with

    assert list(_bindings.tokenizer_for_encoding(encoding).encode(text)) == ids
    assert count_text(text, MODEL_OF[encoding]) == len(ids)


# The OpenAI cookbook's example ("How to count tokens with tiktoken"): 129 prompt tokens for
# gpt-3.5-turbo and gpt-4, 124 for gpt-4o and gpt-4o-mini.
COOKBOOK_MESSAGES = [
    {"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate jargon "
                                  "into plain English."},
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
    {"role": "system", "name": "example_user", "content": "Let's circle back when we have more bandwidth to touch "
                                                          "base on opportunities for increased leverage."},
    {"role": "system", "name": "example_assistant", "content": "Let's talk later when we're less busy about how to "
                                                               "do better."},
    {"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client "
                                "deliverable."},
]


@pytest.mark.parametrize(("model", "prompt_tokens"),
                         [("gpt-3.5-turbo", 129), ("gpt-4", 129), ("gpt-4o", 124), ("gpt-4o-mini", 124)])
def test_chat_usage_matches_the_cookbook_counts(model: str, prompt_tokens: int) -> None:
    assert chat_usage(COOKBOOK_MESSAGES, "", model) == {
        "prompt_tokens": prompt_tokens, "completion_tokens": 0, "total_tokens": prompt_tokens, "estimated": False}


def test_chat_usage_by_hand() -> None:
    # o200k_base: "user" 1, "hello world" 2, "assistant" 1, "hi there" 2, "bob" 1 ("Bob" too)
    assert [count_text(t, "gpt-4o") for t in ("user", "hello world", "assistant", "hi there", "bob")] == [1, 2, 1, 2, 1]
    one = chat_usage([{"role": "user", "content": "hello world"}], "hi there", "gpt-4o")
    assert one == {"prompt_tokens": 3 + 1 + 2 + 3, "completion_tokens": 2, "total_tokens": 11, "estimated": False}

    named = chat_usage([{"role": "user", "name": "bob", "content": "hello world"}], "", "gpt-4o")
    assert named["prompt_tokens"] == 3 + 1 + 2 + (1 + 1) + 3

    # list content: its text parts count, an image part does not; a null content (tool calls) counts 0
    parts: list[dict[str, Any]] = [
        {"role": "user", "content": [{"type": "text", "text": "hello world"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                                     {"type": "text", "text": "hi there"}]},
        {"role": "assistant", "content": None},
    ]
    assert chat_usage(parts, "", "gpt-4o")["prompt_tokens"] == (3 + 1 + 2 + 2) + (3 + 1) + 3

    # several choices: the completion counts every one
    many = chat_usage([{"role": "user", "content": "hello world"}], ["hi there", "hello world", ""], "gpt-4o")
    assert many["completion_tokens"] == 2 + 2 + 0
    assert many["total_tokens"] == many["prompt_tokens"] + 4
    assert chat_usage([], "", "gpt-4o")["prompt_tokens"] == 3  # just the reply's priming


@pytest.mark.parametrize(("model", "encoding"), [
    ("gpt-4o", "o200k_base"), ("gpt-4o-mini", "o200k_base"), ("GPT-4o", "o200k_base"), ("o1", "o200k_base"),
    ("o1-mini", "o200k_base"), ("o3-mini-high", "o200k_base"), ("gpt-4.1", "o200k_base"),
    ("gpt-4.1-mini", "o200k_base"), ("gpt-5", "o200k_base"), ("gpt-5-thinking", "o200k_base"), ("auto", "o200k_base"),
    ("gpt-4", "cl100k_base"), ("gpt-4-turbo", "cl100k_base"), ("gpt-3.5-turbo", "cl100k_base"),
    ("text-davinci-002-render-sha", "cl100k_base"), ("some-future-model", "cl100k_base"), ("", "cl100k_base"),
])
def test_each_model_counts_with_its_encoding(model: str, encoding: str) -> None:
    assert encoding_name(model) == encoding
    # a text the two encodings count differently: the count follows the encoding
    counts = {"o200k_base": 8, "cl100k_base": 12}
    assert count_text("日本語の文章を書きます。", model) == counts[encoding]


@pytest.mark.parametrize(("text", "o200k", "cl100k"), [
    ("naïve café", 4, 4),
    ("e\u0301", 2, 2),  # a combining mark
    ("Привет, мир!", 5, 7),
    ("こんにちは世界 🌍", 4, 7),
    ("👩\u200d👩\u200d👧\u200d👦", 11, 18),  # a ZWJ emoji sequence
    ("<|endoftext|>", 7, 7),  # a special token's text is counted as text, never refused
    ("", 0, 0),
])
def test_non_ascii_counts(text: str, o200k: int, cl100k: int) -> None:
    assert (count_text(text, "gpt-4o"), count_text(text, "gpt-4")) == (o200k, cl100k)


def test_a_lone_surrogate_counts_as_the_replacement_character() -> None:
    # JSON may carry "\ud83d" alone; tiktoken counts it as U+FFFD, and so must we rather than raise
    assert count_text("a\ud83d", "gpt-4o") == count_text("a\ufffd", "gpt-4o")
    assert chat_usage([{"role": "user", "content": "\ud83d"}], "\udc4d", "gpt-4")["total_tokens"] > 0


def test_a_text_too_long_for_the_tiktoken_shaped_wrapper_is_counted() -> None:
    # bpe_openai.Encoding refuses 1M characters and 200k tokens; a request body may be 25 MB
    assert count_text("hello world " * 100_000, "gpt-4o") == 200_001


def test_importing_libs_tokens_loads_no_encoding() -> None:
    code = ("import sys\nimport libs.tokens\nimport services.edge.routes.generation\n"
            "assert 'bpe_openai' not in sys.modules, 'imported bpe_openai'\n"
            "assert not libs.tokens._counters\n"
            "libs.tokens.count_text('x', 'gpt-4o')\n"
            "assert list(libs.tokens._counters) == ['o200k_base'], libs.tokens._counters\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_concurrent_first_counts_load_the_encoding_once(monkeypatch: pytest.MonkeyPatch) -> None:
    tokens.preload("gpt-4o")  # imports bpe_openai as libs.tokens does (its import warns)
    from bpe_openai import _bindings

    real = _bindings.tokenizer_for_encoding
    loads: list[str] = []
    second_load = threading.Event()

    def counting_load(name: str) -> Any:
        loads.append(name)
        if len(loads) == 1:
            # hold the first load open so a second, unguarded one would overlap it; bounded, and
            # only long enough for the other threads (already past the barrier) to arrive
            second_load.wait(timeout=0.3)
        else:
            second_load.set()
        return real(name)

    monkeypatch.setattr(tokens, "_counters", {})
    monkeypatch.setattr(_bindings, "tokenizer_for_encoding", counting_load)
    start = threading.Barrier(8)
    results: list[int] = []

    def first_count() -> None:
        start.wait(timeout=10)
        results.append(count_text("hello world", "gpt-4o"))

    threads = [threading.Thread(target=first_count) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert results == [2] * 8
    assert loads == ["o200k_base"]


def test_the_public_path_counts_alike_and_takes_texts_past_the_wrappers_limits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With private APIs switched off (or an untested bpe-openai), counting goes through the
    package's public Encoding, on pieces below its limits."""
    from libs.fenced.bpe_openai_internals import token_counter

    private = token_counter("o200k_base")
    monkeypatch.setenv("SY_PRIVATE_APIS", "0")
    public = token_counter("o200k_base")
    assert public is not private
    text = "The quick brown fox jumps over the lazy dog. " * 20
    assert public(text) == private(text)
    huge = "word " * 300_000  # 1.5M characters: the public wrapper alone refuses it
    assert abs(public(huge) - private(huge)) <= 8
