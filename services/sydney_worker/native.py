"""A `sydney` job: one call of SydneyQt's web API (seed 000, fact sheet §9.3-9.4).

- op `chat` (`POST /chat/stream`): one turn with the body's fields, every SydneyQt event relayed
  in order as `Event({"type", "text"})`, SydneyQt's names and payloads (the edge writes them as its
  SSE). It runs as an OpenAI chat turn does (turns.py): the caller's cookies, else a pool account,
  transparently moved to another account before the first event. The body may name a
  `conversation` to continue, as chat's may (sealing.py).
- op `upload` (`POST /image/upload`): the image to Bing's kblob, answered by `Result({"url"})`.
  With the caller's cookies when given, else none, as SydneyQt sends none: no account is leased.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator
from typing import Any

from libs.bing.failures import BingFailure
from libs.bing.invocation import ChatRequest
from libs.bing.turn import SydneyEvent
from libs.errors import InvalidRequest
from libs.worker_backend import Event, Item, Result, StreamEnd, WholeAnswer
from proto.messages import Job
from services.sydney_worker.turns import TurnRunner


def _every_event(event: SydneyEvent) -> bool:
    return True


def _field(body: dict[str, Any], name: str, kind: type, default: Any) -> Any:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, kind):
        raise InvalidRequest(f"'{name}' must be a {kind.__name__}", param=name)
    return value


def chat_request(body: dict[str, Any]) -> ChatRequest:
    """SydneyQt's ChatStreamRequest, read as leniently as Go did (absent = zero value), with a 400
    naming a field of the wrong type."""
    prompt = _field(body, "prompt", str, "")
    if not prompt:
        raise InvalidRequest("'prompt' must be a non-empty string", param="prompt")
    plugins = _field(body, "plugins", list, [])
    if not all(isinstance(p, str) for p in plugins):
        raise InvalidRequest("'plugins' must be a list of strings", param="plugins")
    return ChatRequest(prompt, _field(body, "context", str, ""), image_url=_field(body, "imageUrl", str, "") or None,
                       no_search=_field(body, "noSearch", bool, False),
                       style=_field(body, "conversationStyle", str, "") or "Creative",
                       gpt4turbo=_field(body, "gpt4turbo", bool, False), classic=_field(body, "classic", bool, False),
                       plugins=tuple(plugins))


class NativeCalls:
    def __init__(self, runner: TurnRunner) -> None:
        self.runner = runner

    async def run(self, job: Job, body: dict[str, Any]) -> AsyncIterator[Item]:
        op = body.get("op")
        if op == "chat":
            async for item in self._chat(job, body):
                yield item
        elif op == "upload":
            yield WholeAnswer()
            yield Result({"url": await self._upload(job, body)})
            yield StreamEnd()
        else:
            raise InvalidRequest("'op' must be chat or upload", param="op")

    async def _chat(self, job: Job, body: dict[str, Any]) -> AsyncIterator[Item]:
        request = chat_request(body)
        caller = self.runner.caller(job)
        turn = self.runner.turn(job, request, self.runner.resume(body.get("conversation"), caller), _every_event,
                                caller)
        async for item in turn:
            if isinstance(item, SydneyEvent):
                yield Event({"type": item.type, "text": item.text})
        yield StreamEnd(account=turn.account)

    async def _upload(self, job: Job, body: dict[str, Any]) -> str:
        image = body.get("image")
        if not isinstance(image, str) or not image:
            raise InvalidRequest("'image' must be the image's bytes in base64", param="image")
        try:
            data = base64.b64decode(image, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest("'image' is not valid base64", param="image") from None
        calls = self.runner.calls
        try:
            return await calls.upload(self.runner.caller(job) or calls.anonymous(), data)
        except BingFailure as failure:
            raise failure.error from None
