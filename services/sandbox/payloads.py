"""OpenAI wire shapes, written here from the public API (deliberately not shared with the gateway)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from .generate import Choice

FINGERPRINT = "fp_sandbox"
DONE = b"data: [DONE]\n\n"


def _usage(prompt_tokens: int, choices: list[Choice]) -> dict[str, int]:
    completion = sum(c.completion_tokens for c in choices)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion}


# -- non-stream ---------------------------------------------------------------------------------------------


def _message(choice: Choice) -> dict[str, Any]:
    if choice.tool is None:
        return {"role": "assistant", "content": "".join(choice.tokens), "refusal": None}
    call = choice.tool
    return {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "tool_calls": [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
        ],
    }


def _completion(obj: str, rid: str, created: int, model: str, choices: list[dict[str, Any]], usage: Any) -> bytes:
    return orjson.dumps({
        "id": rid, "object": obj, "created": created, "model": model, "system_fingerprint": FINGERPRINT,
        "choices": choices, "usage": usage,
    })


def chat_completion(rid: str, created: int, model: str, choices: list[Choice], prompt_tokens: int) -> bytes:
    payload = [
        {"index": c.index, "message": _message(c), "logprobs": None, "finish_reason": c.finish_reason}
        for c in choices
    ]
    return _completion("chat.completion", rid, created, model, payload, _usage(prompt_tokens, choices))


def text_completion(rid: str, created: int, model: str, choices: list[Choice], prompt_tokens: int) -> bytes:
    payload = [
        {"index": c.index, "text": "".join(c.tokens), "logprobs": None, "finish_reason": c.finish_reason}
        for c in choices
    ]
    return _completion("text_completion", rid, created, model, payload, _usage(prompt_tokens, choices))


# -- stream -------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Frames:
    """SSE frames in send order. `contents` are the token chunks (choices interleaved), the unit that
    first_token_ms / token_delay_ms / fail_after / hang_after count; `tails` end the stream."""

    heads: list[bytes]
    contents: list[bytes]
    tails: list[bytes]


class _Chunker:
    """Frames of one stream. The envelope (id, created, model...) is identical in every chunk, so it is
    serialized once and only the choice object is spliced in: token chunks are the hot loop."""

    __slots__ = ("envelope", "prefix", "suffix")

    def __init__(self, rid: str, obj: str, created: int, model: str, include_usage: bool) -> None:
        self.envelope: dict[str, Any] = {
            "id": rid,
            "object": obj,
            "created": created,
            "model": model,
            "system_fingerprint": FINGERPRINT,
        }
        self.prefix = b"data: " + orjson.dumps(self.envelope)[:-1] + b',"choices":['
        # OpenAI sends an explicit `"usage": null` on every chunk but the last when include_usage is on
        self.suffix = b'],"usage":null}\n\n' if include_usage else b"]}\n\n"

    def frame(self, choice: dict[str, Any]) -> bytes:
        return self.prefix + orjson.dumps(choice) + self.suffix

    def token_frames(self, index: int, tokens: tuple[str, ...]) -> list[bytes]:
        head = self.prefix + b'{"index":%d,"delta":{"content":' % index
        tail = _OPEN_END + self.suffix
        known = _JSON_STR.get
        return [head + (known(tok) or _json_str(tok)) + tail for tok in tokens]

    def text_frames(self, index: int, tokens: tuple[str, ...]) -> list[bytes]:
        head = self.prefix + b'{"index":%d,"text":' % index
        tail = _OPEN_END[1:] + self.suffix
        known = _JSON_STR.get
        return [head + (known(tok) or _json_str(tok)) + tail for tok in tokens]

    def usage_frame(self, usage: dict[str, int]) -> bytes:
        return b"data: " + orjson.dumps({**self.envelope, "choices": [], "usage": usage}) + b"\n\n"


_OPEN_END = b'},"logprobs":null,"finish_reason":null}'


_JSON_STR: dict[str, bytes] = {}


def _json_str(text: str) -> bytes:
    """JSON string literal of a token, memoized (the generator draws from a small word list)."""
    encoded = _JSON_STR.get(text)
    if encoded is None:
        encoded = orjson.dumps(text)
        if len(_JSON_STR) < 4096:
            _JSON_STR[text] = encoded
    return encoded


def _interleave(per_choice: list[list[bytes]]) -> list[bytes]:
    if len(per_choice) == 1:
        return per_choice[0]
    longest = max(len(frames) for frames in per_choice)
    return [frames[step] for step in range(longest) for frames in per_choice if step < len(frames)]


def _tails(chunker: _Chunker, finals: list[bytes], usage: dict[str, int] | None) -> list[bytes]:
    if usage is not None:
        finals.append(chunker.usage_frame(usage))
    finals.append(DONE)
    return finals


def chat_frames(
    rid: str, created: int, model: str, choices: list[Choice], prompt_tokens: int, include_usage: bool
) -> Frames:
    chunker = _Chunker(rid, "chat.completion.chunk", created, model, include_usage)
    frame = chunker.frame
    heads: list[bytes] = []
    bodies: list[list[bytes]] = []
    finals: list[bytes] = []
    for c in choices:
        i = c.index
        if c.tool is None:
            heads.append(
                frame(
                    {"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
                )
            )
            bodies.append(chunker.token_frames(i, c.tokens))
        else:
            call = c.tool
            head_call = {
                "index": 0,
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            heads.append(
                frame(
                    {
                        "index": i,
                        "delta": {"role": "assistant", "content": None, "tool_calls": [head_call]},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                )
            )
            bodies.append(
                [
                    frame(
                        {
                            "index": i,
                            "delta": {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]},
                            "logprobs": None,
                            "finish_reason": None,
                        }
                    )
                    for piece in call.pieces
                ]
            )
        finals.append(frame({"index": i, "delta": {}, "logprobs": None, "finish_reason": c.finish_reason}))
    usage = _usage(prompt_tokens, choices) if include_usage else None
    return Frames(heads, _interleave(bodies), _tails(chunker, finals, usage))


def text_frames(
    rid: str, created: int, model: str, choices: list[Choice], prompt_tokens: int, include_usage: bool
) -> Frames:
    chunker = _Chunker(rid, "text_completion", created, model, include_usage)
    frame = chunker.frame
    bodies = [chunker.text_frames(c.index, c.tokens) for c in choices]
    finals = [
        frame({"index": c.index, "text": "", "logprobs": None, "finish_reason": c.finish_reason}) for c in choices
    ]
    usage = _usage(prompt_tokens, choices) if include_usage else None
    return Frames([], _interleave(bodies), _tails(chunker, finals, usage))


# -- errors and models --------------------------------------------------------------------------------------

# status -> (type, code, message), modelled on what OpenAI sends for each
_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request (sandbox)."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Request not allowed (sandbox)."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist (sandbox)."),
    408: ("server_error", "timeout", "Request timed out (sandbox)."),
    409: ("invalid_request_error", "conflict", "Conflict (sandbox)."),
    413: ("invalid_request_error", "request_too_large", "Request too large (sandbox)."),
    422: ("invalid_request_error", None, "Unprocessable request (sandbox)."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests (sandbox)."),
    500: ("server_error", None, "The server had an error while processing your request (sandbox)."),
    502: ("server_error", "bad_gateway", "Bad gateway (sandbox)."),
    503: ("server_error", "overloaded", "The engine is currently overloaded, please try again later (sandbox)."),
    504: ("server_error", "timeout", "Gateway timeout (sandbox)."),
}


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


def status_error(status: int, echoed_key: str | None = None) -> bytes:
    """The error body for an injected (or auth) failure; `echoed_key` imitates providers that put the
    received key into the message, so the gateway's redaction can be tested."""
    type_, code, message = _ERRORS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None, f"HTTP {status} (sandbox).")
    )
    if echoed_key is not None:
        if status == 401:
            message = f"Incorrect API key provided: {echoed_key}."
        else:
            message = f"{message} Request used API key: {echoed_key}."
    return error_body(message, type_, code)


def model_object(model: str, created: int) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": created, "owned_by": "sandbox"}


def models_list(models: tuple[str, ...], created: int) -> bytes:
    return orjson.dumps({"object": "list", "data": [model_object(m, created) for m in models]})
