"""An OpenAI chat job answered by a ChatGPT web account.

The turn continues the web conversation the transcript belongs to (continuity.py) on the account
that holds it, else starts a new conversation with the whole history as its messages. Before the
first token a failure is retried on another account, transparently (at most `MAX_ACCOUNTS` tries;
a conversation whose account failed or is gone goes on as a new one, and the response says so in
`x-switchyard-conversation: fallback`). After the first token there is no retry: the runtime ends
the answer with the error.

What the client learns besides the text: the response's `model` is the slug the upstream says it
used (never silently the asked one), `x-switchyard-requested-model` keeps the asked one, and
`x-switchyard-conversation-id` / `x-switchyard-parent-message-id` name the web conversation (send
them back as `conversation_id` / `parent_message_id` to continue it explicitly). Usage is counted
with a real tokenizer (libs/tokens.py): the upstream reports none.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from libs.account_pool.outcome import Outcome
from libs.account_pool.pool import Lease
from libs.errors import ModelNotFound, UpstreamError
from libs.tokens import chat_usage, count_text
from libs.worker_backend import Item, Meta, StreamEnd
from proto.messages import Job
from services.chatgpt_web_worker.continuity import Plan, Thread
from services.chatgpt_web_worker.parts import WebParts
from services.chatgpt_web_worker.request import conversation_body, openai_to_upstream
from services.chatgpt_web_worker.stream import ConversationStream, Finished, Moderation, StreamError, Text
from services.chatgpt_web_worker.upstream_errors import UpstreamFailure, stream_failure

MAX_ACCOUNTS = 3  # accounts one request tries before its failure stands
_FINISH = {"max_tokens": "length", "stop": "stop", "interrupted": "stop"}


@dataclass
class _Answer:
    text: list[str]
    conversation_id: str | None = None
    message_id: str | None = None
    finish: str = "stop"


class ChatTurns:
    def __init__(self, parts: WebParts) -> None:
        self.config = parts.config
        self.leasing = parts.leasing
        self.continuity = parts.continuity
        self.turns = parts.turns

    async def run(self, job: Job, body: dict[str, Any]) -> AsyncIterator[Item]:
        slug = self.config.slug_for(job["model"])
        if slug is None:
            raise ModelNotFound(job["model"])
        upstream_messages = openai_to_upstream(body["messages"])  # 400 for what a web account cannot take
        first_choice = job["index_offset"] == 0  # only choice 0 of a fanned-out n continues the conversation
        plan = await self.continuity.plan(body) if first_choice else Plan(None, body["messages"])
        mode = "continued" if plan.thread is not None else "new"
        tried: set[str] = set()
        for attempt in range(MAX_ACCOUNTS):
            lease = await self._lease(job, slug, plan.thread, tried)
            if lease is None:  # the conversation's account is gone: a new conversation
                plan, mode = Plan(None, body["messages"]), "fallback"
                continue
            tried.add(lease.name)
            outcome = Outcome.neutral()
            answer = _Answer([])
            started = False
            try:
                request = self._request(plan, slug, upstream_messages)
                async for item in self._relay(lease.name, request, answer, job, slug, mode, _max_tokens(body)):
                    started = True
                    yield item
                outcome = Outcome.ok()
            except UpstreamFailure as failure:
                outcome = failure.outcome
                if started or not failure.error.retryable or attempt == MAX_ACCOUNTS - 1:
                    raise failure.error from None
                if plan.thread is not None:  # its account failed: the history goes to another as a new conversation
                    plan, mode = Plan(None, body["messages"]), "fallback"
                continue
            finally:
                await self.leasing.give_back(lease, outcome)
            if first_choice and answer.conversation_id and answer.message_id:
                await self.continuity.remember(body["messages"], "".join(answer.text), lease.name,
                                               answer.conversation_id, answer.message_id)
            usage = chat_usage(body["messages"], "".join(answer.text), slug)
            yield [{"index": 0, "delta": {}, "finish_reason": answer.finish}]
            yield StreamEnd(usage=usage, account=lease.name)
            return
        raise UpstreamError("no account could answer this request")

    def _request(self, plan: Plan, slug: str, all_messages: list[dict[str, Any]]) -> dict[str, Any]:
        if plan.thread is None:
            return conversation_body(action="next", messages=all_messages, parent_message_id=str(uuid.uuid4()),
                                     conversation_id=None, model=slug)
        return conversation_body(action="next", messages=openai_to_upstream(plan.messages),
                                 parent_message_id=plan.thread.parent_message_id,
                                 conversation_id=plan.thread.conversation_id, model=slug)

    async def _lease(self, job: Job, slug: str, thread: Thread | None, tried: set[str]) -> Lease | None:
        """The conversation's own account (None when it is gone), else a free one not yet tried."""
        if thread is not None:
            return await self.leasing.named(job, thread.account, slug)
        return await self.leasing.any(job, slug, tried)

    async def _relay(self, account: str, request: dict[str, Any], answer: _Answer, job: Job, slug: str,
                     mode: str, limit: int | None) -> AsyncIterator[Item]:
        parser = ConversationStream()
        first = True
        counted = 0  # completion tokens so far, for the client's max_tokens (the web has no such limit)
        chunks = self.turns.open(account, request)
        try:
            async for chunk in chunks:
                # what one read of the upstream holds goes out as one delta (one bus message, one
                # SSE event), as it does on the OpenAI path: not one per upstream event
                pieces: list[str] = []
                stop = False
                failure: StreamError | None = None
                for event in parser.feed(chunk):
                    if isinstance(event, Text):
                        if first:
                            first = False
                            answer.conversation_id = event.conversation_id
                            yield self._meta(job, event.model_slug or slug, mode, event.conversation_id,
                                             event.message_id)
                        pieces.append(event.delta)
                        answer.message_id = event.message_id
                        if limit is not None:
                            counted += count_text(event.delta, slug)
                            if counted >= limit:  # the client's max_tokens: stop the upstream here
                                answer.finish = "length"
                                stop = True
                                break
                    elif isinstance(event, Finished):
                        answer.message_id = event.message_id
                        answer.conversation_id = event.conversation_id or answer.conversation_id
                        answer.finish = _FINISH.get(event.finish_type or "stop", "stop")
                    elif isinstance(event, Moderation) and event.blocked:
                        answer.finish = "content_filter"
                    elif isinstance(event, StreamError):
                        failure = event
                        break
                if pieces:
                    text = "".join(pieces)
                    delta = {"role": "assistant", "content": text} if not answer.text else {"content": text}
                    answer.text.append(text)
                    yield [{"index": 0, "delta": delta, "finish_reason": None}]
                if failure is not None:
                    raise stream_failure(failure.message, ())
                if stop:
                    return
        finally:
            await chunks.aclose()
        if first:  # the stream ended with no text at all
            raise stream_failure("the upstream ended the conversation without an answer", ())

    def _meta(self, job: Job, model: str, mode: str, conversation_id: str | None, message_id: str) -> Meta:
        headers = {"x-switchyard-requested-model": job["model"], "x-switchyard-conversation": mode,
                   "x-switchyard-parent-message-id": message_id}
        if conversation_id:
            headers["x-switchyard-conversation-id"] = conversation_id
        return Meta(model=model, headers=headers)



def _max_tokens(body: dict[str, Any]) -> int | None:
    """The client's limit on the answer (the web upstream has none: the worker ends the turn there,
    the last piece whole, so an answer may pass it by the tokens of one upstream event)."""
    for field in ("max_completion_tokens", "max_tokens"):
        value = body.get(field)
        if type(value) is int and value > 0:
            return value
    return None
