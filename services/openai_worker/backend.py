"""The openai-worker's upstream side: pick an upstream for the model, call it (streamed, or whole
for a non-stream request), fail over before the first token, and report usage (the upstream's,
or an estimate marked as such). Moderations go to the upstreams that list the model in their
`moderation_models`, as one unary call (libs/openai_upstream/unary.py).

The upstream client, its failover and limits live in libs/openai_upstream/, shared with every
worker that calls OpenAI-compatible upstreams.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from libs.errors import SwitchyardError
from libs.openai_upstream.call import UpstreamCall
from libs.openai_upstream.clients import UpstreamClients
from libs.openai_upstream.config import Upstream
from libs.openai_upstream.failover import Failover
from libs.openai_upstream.unary import post_json
from libs.tokens import usage
from libs.worker_backend import Item, Result, StreamEnd, WholeAnswer
from libs.worker_metrics import WorkerMetrics
from proto.messages import Feature, Job, Kind

_PATHS = {"chat": "/chat/completions", "completion": "/completions"}


def _moderation_models(upstream: Upstream) -> tuple[str, ...]:
    return upstream.moderation_models


def _choice_text(choice: dict[str, Any]) -> str:
    delta = choice.get("delta")
    if isinstance(delta, dict):
        text = str(delta.get("content") or "")
        for call in delta.get("tool_calls") or []:
            text += str((call.get("function") or {}).get("arguments") or "")
        return text
    return str(choice.get("text") or "")


def _as_delta(choice: dict[str, Any]) -> dict[str, Any]:
    """A whole answer's choice in the shape of a streamed one (what the edge assembles)."""
    message = choice.get("message")
    if not isinstance(message, dict):  # a text_completion choice already is one
        return choice
    delta = dict(message)
    calls = delta.get("tool_calls")
    if isinstance(calls, list):  # streamed tool calls are numbered fragments
        delta["tool_calls"] = [{**call, "index": i} for i, call in enumerate(calls) if isinstance(call, dict)]
    return {"index": choice.get("index", 0), "delta": delta, "logprobs": choice.get("logprobs"),
            "finish_reason": choice.get("finish_reason")}


class OpenAIBackend:
    def __init__(self, upstreams: list[Upstream], metrics: WorkerMetrics, *, connect_timeout: float = 10.0) -> None:
        self.upstreams = upstreams
        self.metrics = metrics
        self.failover = Failover(upstreams, metrics)
        # moderations have their own table of upstreams; one that hangs is put aside for both
        self.moderation = Failover(upstreams, metrics, models_of=_moderation_models, aside=self.failover.aside)
        # a chat model serves /v1/completions too: natively, or through the edge's conversion
        serves: dict[str, list[Kind]] = {m: ["chat", "completion"] for m in self.failover.models}
        for model in self.moderation.models:
            serves.setdefault(model, []).append("moderation")
        self.serves = dict(sorted(serves.items()))
        chat = [u for u in upstreams if u.models]  # the chat features are those of the chat upstreams
        features: list[Feature] = ["chat", "tools"]
        if all(u.native_n for u in chat):
            features.append("n")
        if all(u.completions for u in chat):
            features.append("completion")
        self.features = features
        self.clients = UpstreamClients(upstreams, connect_timeout=connect_timeout)

    async def stream(self, job: Job, body: dict[str, Any]) -> AsyncIterator[Item]:
        # One async generator for the whole job (each costs a registration with the loop and a
        # step per item): the call to each upstream in turn is made inline.
        if job["kind"] == "moderation":
            yield WholeAnswer()
            answer = await post_json(self.clients, self.moderation, job, "/moderations", body, expect="results")
            answer["model"] = job["model"]  # the model the client asked for, whatever the upstream calls it
            answer.setdefault("id", f"modr-{job['job_id']}")
            yield Result(answer)
            # moderations report no usage: an estimate of the input, marked so
            yield StreamEnd(usage=usage(None, body))
            return
        failover = self.failover
        candidates = failover.candidates(job["model"])
        last = len(candidates)
        for number, upstream in enumerate(candidates, start=1):
            sent_any = False
            # the attempt's own head limit applies while there is another upstream to go to
            call, whole = self._call(upstream, job, body, limited=number < last)
            try:
                if whole:
                    yield WholeAnswer()
                    yield await self._whole(call, body)
                else:
                    async for item in self._streamed(call, body):
                        if not sent_any:
                            sent_any = True
                            failover.answered(upstream)
                        yield item
                failover.answered(upstream)
                return
            except SwitchyardError as err:
                await failover.fail_over(err, call, candidates, number, job, sent_any=sent_any)

    def _call(self, upstream: Upstream, job: Job, body: dict[str, Any], *, limited: bool) -> tuple[UpstreamCall, bool]:
        """The call to make to this upstream, and whether it asks for the whole answer at once.
        `limited`: the call gets the upstream's own limit on its response head."""
        payload = dict(body)
        payload["model"] = job["model"]
        whole = upstream.whole_answers and not body.get("stream")
        payload["stream"] = not whole
        if not whole and upstream.stream_usage:
            payload["stream_options"] = {"include_usage": True}
        else:
            payload.pop("stream_options", None)
        head_timeout = (upstream.answer_timeout if whole else upstream.first_byte_timeout) if limited else None
        return self.clients.call(upstream, _PATHS[job["kind"]], payload, head_timeout), whole

    async def _whole(self, call: UpstreamCall, body: dict[str, Any]) -> StreamEnd:
        """A non-streamed answer as one end: its choices become one delta each."""
        started = time.monotonic()
        answer = await call.answer()
        self.metrics.upstream_ttft.observe(time.monotonic() - started)
        choices = [_as_delta(c) for c in answer["choices"] if isinstance(c, dict)]
        reported = answer.get("usage") if isinstance(answer.get("usage"), dict) else None
        return StreamEnd(
            usage=usage(reported, body, "".join(_choice_text(c) for c in choices)),
            system_fingerprint=answer.get("system_fingerprint"), choices=choices or None,
        )

    async def _streamed(self, call: UpstreamCall, body: dict[str, Any]) -> AsyncIterator[Item]:
        started = time.monotonic()
        first = True
        reported: dict[str, Any] | None = None
        fingerprint: str | None = None
        completion_chars: list[str] = []
        last: list[dict[str, Any]] = []  # what arrived together with [DONE]: it goes with the end
        async for chunks, done in call.chunks():
            batch: list[dict[str, Any]] = []
            for chunk in chunks:
                if chunk.get("usage"):
                    reported = chunk["usage"]
                fingerprint = chunk.get("system_fingerprint") or fingerprint
                for choice in chunk.get("choices") or ():
                    batch.append(choice)
                    completion_chars.append(_choice_text(choice))
            if batch and first:
                self.metrics.upstream_ttft.observe(time.monotonic() - started)
                first = False
            if done:
                last = batch
            elif batch:
                yield batch
        yield StreamEnd(usage=usage(reported, body, "".join(completion_chars)), system_fingerprint=fingerprint,
                        choices=last or None)

    async def aclose(self) -> None:
        await self.clients.aclose()
