"""bpe-openai's Rust tokenizer (`bpe_openai._bindings`, typed in the package's `_bindings.pyi`).

Why the private module: the public, tiktoken-shaped `Encoding` refuses texts of 1M characters or
200k tokens (a request body may be 25 MB), builds the list of ids only to count them, and keeps a
second copy of the ranks. Outside the tested release (or with SY_PRIVATE_APIS=0) counting takes
the public path: `encode_ordinary`, on pieces cut at whitespace below the wrapper's limits (a cut
there changes a count by a token at most per piece).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

from libs.fenced import dist_tested, private_apis_switched_on

_PIECE = 200_000  # characters: well below the public wrapper's limits (1M characters, 200k tokens... of
# text that may tokenise to one token per character)


def _import_quietly(name: str) -> object:
    with warnings.catch_warnings():  # the package's import uses importlib.resources.open_binary
        warnings.simplefilter("ignore", DeprecationWarning)
        return __import__(name, fromlist=["_"])


def token_counter(encoding: str) -> Callable[[str], int]:
    """A function counting the tokens of a text in `encoding` (o200k_base, cl100k_base)."""
    if private_apis_switched_on() and dist_tested("bpe-openai"):
        bindings = _import_quietly("bpe_openai._bindings")
        return bindings.tokenizer_for_encoding(encoding).count  # type: ignore[attr-defined]
    package = _import_quietly("bpe_openai")
    public = package.get_encoding(encoding)  # type: ignore[attr-defined]

    def count(text: str) -> int:
        total = 0
        start = 0
        while start < len(text):
            end = min(len(text), start + _PIECE)
            if end < len(text):
                cut = text.rfind(" ", start + _PIECE // 2, end)
                end = cut if cut > start else end
            total += len(public.encode_ordinary(text[start:end]))
            start = end
        return total

    return count
