"""OpenAI response shapes, built from the choices workers stream (pure logic, no I/O).

One `ResponseBuilder` per client request, whether its answer comes from one job or from n fanned
out jobs. It guarantees what clients rely on: one stable id, `role` only in the first delta of each
choice, `finish_reason` in each choice's last chunk, usage only where asked.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from libs.ids import new_id

Kind = Literal["chat", "completion"]


def _merge_tool_calls(calls: dict[int, dict[str, Any]], fragments: list[dict[str, Any]]) -> None:
    for fragment in fragments:
        index = int(fragment.get("index", 0))
        call = calls.setdefault(index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}})
        if fragment.get("id"):
            call["id"] = fragment["id"]
        if fragment.get("type"):
            call["type"] = fragment["type"]
        function = fragment.get("function") or {}
        if function.get("name"):
            call["function"]["name"] += function["name"]
        if function.get("arguments"):
            call["function"]["arguments"] += function["arguments"]


def _merge_completion_logprobs(parts: list[Any] | None) -> dict[str, Any] | None:
    """A streamed completion's logprobs arrive per chunk; the final choice covers every token."""
    if not parts:
        return None
    merged: dict[str, list[Any]] = {}
    for part in parts:
        if isinstance(part, dict):
            for key, values in part.items():
                if isinstance(values, list):
                    merged.setdefault(key, []).extend(values)
    return merged


# what an OpenAI delta holds; a worker's other delta fields are an upstream's extras
_OPENAI_DELTA_FIELDS = frozenset({"role", "content", "refusal", "tool_calls", "function_call", "audio"})


class ResponseBuilder:
    def __init__(self, kind: Kind, model: str, choices: int) -> None:
        self.kind = kind
        self.model = model
        self.choices = choices
        self.id = ("chatcmpl-" if kind == "chat" else "cmpl-") + new_id()
        self.created = int(time.time())
        self.object = "chat.completion.chunk" if kind == "chat" else "text_completion"
        self.system_fingerprint: str | None = None
        self.usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        self.usage_estimated = False
        self.usage_reports = 0  # jobs whose usage arrived (an interrupted job sends none)
        self.delivered_chars = 0
        self._role_sent: set[int] = set()
        self.finished: dict[int, str] = {}
        # non-stream accumulation
        self._text: dict[int, list[str]] = {}
        self._tool_calls: dict[int, dict[int, dict[str, Any]]] = {}
        self._logprobs: dict[int, list[Any]] = {}
        self._refusal: dict[int, list[str]] = {}
        self._extras: dict[int, dict[str, Any]] = {}  # delta fields OpenAI does not define, the last value kept

    # ---- streaming -------------------------------------------------------------------------

    def chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        """The next `chat.completion.chunk` / `text_completion` for these worker choices."""
        return {
            "id": self.id,
            "object": self.object,
            "created": self.created,
            "model": self.model,
            "choices": [self._stream_choice(c) for c in choices],
        }

    def _stream_choice(self, choice: dict[str, Any]) -> dict[str, Any]:
        index = int(choice.get("index", 0))
        finish = choice.get("finish_reason")
        if finish:
            self.finished[index] = finish
        if self.kind == "completion":
            text = str(choice.get("text") or "")
            self.delivered_chars += len(text)
            return {"index": index, "text": text, "logprobs": choice.get("logprobs"), "finish_reason": finish}
        delta = dict(choice.get("delta") or {})
        if index in self._role_sent:
            delta.pop("role", None)
        else:
            self._role_sent.add(index)
            delta = {"role": "assistant", **{k: v for k, v in delta.items() if k != "role"}}
        content = delta.get("content")
        if isinstance(content, str):
            self.delivered_chars += len(content)
        return {"index": index, "delta": delta, "logprobs": choice.get("logprobs"), "finish_reason": finish}

    def closing_chunk(self, reason: str = "length") -> dict[str, Any] | None:
        """A last chunk finishing every choice that has not finished (after a failure)."""
        open_choices = [i for i in range(self.choices) if i not in self.finished]
        if not open_choices:
            return None
        if self.kind == "chat":
            choices = [{"index": i, "delta": {}, "finish_reason": reason} for i in open_choices]
        else:
            choices = [{"index": i, "text": "", "finish_reason": reason} for i in open_choices]
        return self.chunk(choices)

    def usage_chunk(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": self.object,
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": dict(self.usage),
        }

    def add_usage(self, usage: dict[str, Any] | None) -> None:
        self.usage_reports += 1
        if not usage:
            self.usage_estimated = True
            return
        for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
            self.usage[key] += int(usage.get(key) or 0)
        self.usage_estimated |= bool(usage.get("estimated"))

    # ---- non-stream ------------------------------------------------------------------------

    def absorb(self, choices: list[dict[str, Any]]) -> None:
        for choice in choices:
            index = int(choice.get("index", 0))
            if choice.get("finish_reason"):
                self.finished[index] = choice["finish_reason"]
            logprobs = choice.get("logprobs")
            if logprobs:
                items = logprobs.get("content") if self.kind == "chat" and isinstance(logprobs, dict) else [logprobs]
                self._logprobs.setdefault(index, []).extend(items or [])
            if self.kind == "completion":
                text = str(choice.get("text") or "")
                self.delivered_chars += len(text)
                self._text.setdefault(index, []).append(text)
                continue
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str):
                self.delivered_chars += len(delta["content"])
                self._text.setdefault(index, []).append(delta["content"])
            if isinstance(delta.get("refusal"), str):
                self._refusal.setdefault(index, []).append(delta["refusal"])
            if delta.get("tool_calls"):
                _merge_tool_calls(self._tool_calls.setdefault(index, {}), delta["tool_calls"])
            for key in delta:
                if key not in _OPENAI_DELTA_FIELDS:
                    self._extras.setdefault(index, {})[key] = delta[key]

    def response(self) -> dict[str, Any]:
        choices = [self._final_choice(i) for i in range(self.choices)]
        body: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion" if self.kind == "chat" else "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": dict(self.usage),
        }
        if self.system_fingerprint:
            body["system_fingerprint"] = self.system_fingerprint
        return body

    def _final_choice(self, index: int) -> dict[str, Any]:
        text = "".join(self._text.get(index, []))
        finish = self.finished.get(index, "stop")
        if self.kind == "completion":
            return {"index": index, "text": text, "logprobs": _merge_completion_logprobs(self._logprobs.get(index)),
                    "finish_reason": finish}
        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        calls = self._tool_calls.get(index)
        if calls:
            message["tool_calls"] = [calls[k] for k in sorted(calls)]
        elif not text:
            message["content"] = ""
        refusal = self._refusal.get(index)
        message["refusal"] = "".join(refusal) if refusal else None
        extras = self._extras.get(index)
        if extras:  # a web upstream's own (Bing's search results, say): the message carries them, as chunks do
            message.update({k: v for k, v in extras.items() if k not in message})
        logprobs = self._logprobs.get(index)
        return {
            "index": index,
            "message": message,
            "logprobs": {"content": logprobs} if logprobs else None,
            "finish_reason": finish,
        }
