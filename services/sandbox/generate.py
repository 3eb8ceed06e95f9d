"""Deterministic completions: the same prompt always yields the same words, tool calls and usage."""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from functools import lru_cache

WORDS = (
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
    "uniform", "victor", "whiskey", "xray", "yankee", "zulu",
)  # fmt: skip
_TOKENS = tuple(word + " " for word in WORDS)
DEFAULT_TOKENS = 16
ARGUMENT_PIECE = 8  # characters per streamed tool-call arguments fragment
QUERY_WORDS = 6  # prompt words copied into the tool call's arguments


def seed_of(text: str) -> int:
    """A hash stable across processes and runs (unlike hash(), which is salted per process)."""
    return zlib.crc32(text.encode())


@lru_cache(maxsize=8192)
def tokens(seed: int, choice: int, count: int) -> tuple[str, ...]:
    """Token i of a choice is picked by crc32(choice:i) seeded with the prompt hash (cached: benchmarks
    repeat prompts). A shorter count is a prefix of a longer one."""
    prefix = b"%d:" % choice
    return tuple(_TOKENS[zlib.crc32(prefix + b"%d" % i, seed) % len(_TOKENS)] for i in range(count))


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str
    pieces: tuple[str, ...]  # `arguments` cut into streamable fragments


def tool_call(seed: int, choice: int, name: str, text: str) -> ToolCall:
    arguments = json.dumps({"q": " ".join(text.split()[:QUERY_WORDS])})
    pieces = tuple(arguments[i : i + ARGUMENT_PIECE] for i in range(0, len(arguments), ARGUMENT_PIECE))
    call_id = f"call_{zlib.crc32(name.encode(), seed):08x}{choice:04x}"
    return ToolCall(id=call_id, name=name, arguments=arguments, pieces=pieces)


@dataclass(slots=True)
class Choice:
    index: int
    tokens: tuple[str, ...]  # empty for a tool call
    tool: ToolCall | None
    finish_reason: str

    @property
    def completion_tokens(self) -> int:
        return len(self.tool.pieces) if self.tool else len(self.tokens)


def text_choice(index: int, seed: int, choice: int, wanted: int, max_tokens: int | None) -> Choice:
    """`wanted` tokens, capped by max_tokens (then finish_reason is "length")."""
    if max_tokens is not None and max_tokens < wanted:
        return Choice(index, tokens(seed, choice, max_tokens), None, "length")
    return Choice(index, tokens(seed, choice, wanted), None, "stop")


def tool_choice(index: int, seed: int, name: str, text: str) -> Choice:
    return Choice(index, (), tool_call(seed, index, name, text), "tool_calls")
