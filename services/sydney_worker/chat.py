"""An OpenAI chat job answered by Bing, as SydneyQt's webapi `/v1/chat/completions` answers it
(seed 000, fact sheet §9.5): the last user message is the prompt, every other message goes into
the web-page context (libs/bing/context.py); the model picks the style (config.py); GPT-4 Turbo on,
classic off; `tool_choice` absent or null turns search off. An image part of the prompt message is
attached: a `data:` URL is uploaded to Bing first (its blob URL is attached), an http(s) URL as is.

What the client gets besides the text travels as extra fields of a chunk's delta (the SDKs keep
them: `delta.model_extra`, `message.model_extra` when not streamed; events.py): `conversation` on
the first delta (send it back as the body's `conversation` to continue that Bing conversation;
its tokens sealed, sealing.py), `search_results`, `suggested_responses`, `generative_image`.
Other SydneyQt events (loading, search_query, ...) are not part of this route.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator
from typing import Any

from libs.bing.context import fold_openai_messages
from libs.bing.failures import BingFailure
from libs.bing.invocation import ChatRequest
from libs.bing.session import Opened, Who
from libs.bing.turn import SydneyEvent
from libs.errors import InvalidRequest, UpstreamError
from libs.tokens import chat_usage
from libs.worker_backend import Item, Meta, StreamEnd
from proto.messages import Job
from services.sydney_worker.config import SydneyConfig
from services.sydney_worker.events import CONVERSATION_HEADER, Extras, is_text
from services.sydney_worker.turns import TurnRunner

USAGE_MODEL = "gpt-4"  # Bing's answers are GPT-4's: usage counts with its tokenizer


def _is_output(event: SydneyEvent) -> bool:
    return is_text(event)


def decode_data_url(url: str) -> bytes:
    """The bytes of a `data:<type>;base64,<data>` URL; 400 naming messages otherwise."""
    head, sep, data = url.partition(",")
    if not sep or not head.endswith(";base64"):
        raise InvalidRequest("an image data URL must be base64: data:<type>;base64,<data>", param="messages")
    try:
        image = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("the image data URL's base64 does not decode", param="messages") from None
    if not image:
        raise InvalidRequest("the image data URL holds no bytes", param="messages")
    return image


class ChatTurns:
    def __init__(self, config: SydneyConfig, runner: TurnRunner) -> None:
        self.config = config
        self.runner = runner

    async def _image(self, caller: Who | None, url: str | None) -> str | None:
        if url is None:
            return None
        if url.startswith("data:"):
            calls = self.runner.calls
            try:  # with the caller's cookies, else none: SydneyQt uploads with no cookies
                return await calls.upload(caller or calls.anonymous(), decode_data_url(url))
            except BingFailure as failure:
                raise failure.error from None
        if url.startswith(("http://", "https://")):
            return url
        raise InvalidRequest("an image_url must be an http(s) URL or a data: URL", param="messages")

    async def run(self, job: Job, body: dict[str, Any]) -> AsyncIterator[Item]:
        messages = body["messages"]
        try:
            prompt, context, image_url = fold_openai_messages(messages)
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="messages") from None
        caller = self.runner.caller(job)
        resume = self.runner.resume(body.get("conversation"), caller)
        request = ChatRequest(prompt, context, image_url=await self._image(caller, image_url),
                              no_search=body.get("tool_choice") is None,
                              style=self.config.style_for(job["model"]), gpt4turbo=True, classic=False)
        turn = self.runner.turn(job, request, resume, _is_output, caller)
        extras = Extras()
        answer: list[str] = []
        async for item in turn:
            if isinstance(item, Opened):
                extras = Extras()  # a retry on another account starts the answer over
                continue
            if not isinstance(item, SydneyEvent):
                continue
            if is_text(item):
                delta: dict[str, Any] = {"content": item.text}
                if not answer:
                    assert turn.handed is not None
                    yield Meta(model=job["model"],
                               headers={CONVERSATION_HEADER: turn.handed["conversationId"]})
                    delta = {"role": "assistant", "content": item.text, "conversation": turn.handed,
                             **extras.take()}
                answer.append(item.text)
                yield [{"index": 0, "delta": delta, "finish_reason": None}]
            elif extras.add(item) and answer:
                yield [{"index": 0, "delta": extras.take(), "finish_reason": None}]
        if not answer:
            raise UpstreamError("Bing ended the turn without an answer")
        yield [{"index": 0, "delta": {}, "finish_reason": "stop"}]
        yield StreamEnd(usage=chat_usage(messages, "".join(answer), USAGE_MODEL), account=turn.account)
