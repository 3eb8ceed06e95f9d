"""The one token estimate (libs/tokens.py), shared by the worker and the edge."""

from __future__ import annotations

import pytest

from libs import tokens
from libs.tokens import estimate_tokens


@pytest.mark.parametrize(("text", "expected"), [("", 0), ("a", 1), ("abcd", 1), ("abcde", 2), ("x" * 400, 100)])
def test_about_four_characters_a_token_rounded_up(text: str, expected: int) -> None:
    assert estimate_tokens(text) == expected
    assert estimate_tokens(len(text)) == expected  # a character count gives the same answer


def test_the_worker_and_the_edge_use_the_one_estimate() -> None:
    from services.edge.routes import generation
    from services.openai_worker import backend

    assert backend.usage is tokens.usage  # which estimates with estimate_tokens
    assert generation.estimate_tokens is tokens.estimate_tokens
