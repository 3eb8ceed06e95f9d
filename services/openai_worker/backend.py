"""The openai-worker's upstream side: pick an upstream for the model, call it (streamed, or whole
for a non-stream request), fail over before the first token, and report usage (the upstream's,
or an estimate marked as such).

Failover (config.py has the limits): an attempt that fails before the first token (an error
status, a refused connection, no response head within its limit) passes the job to the model's
next upstream, after a short jittered backoff so that a burst of failing jobs does not move on in
lockstep. An upstream that hung is put aside: for its cooldown, later jobs try it last.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from libs import secrets
from libs.backoff import full_jitter
from libs.errors import ModelNotFound, SwitchyardError, UpstreamBadRequest
from libs.http1 import HTTP1Pool
from libs.tokens import estimate_tokens
from libs.worker_backend import Item, StreamEnd, WholeAnswer
from libs.worker_metrics import WorkerMetrics
from proto.messages import Feature, Job, Kind
from services.openai_worker.config import Upstream
from services.openai_worker.upstream import UpstreamCall, plain_http, proxy_for

log = logging.getLogger("switchyard.worker")

_PATHS = {"chat": "/chat/completions", "completion": "/completions"}
_BACKOFF_BASE = 0.05  # seconds before the second attempt (at most; full jitter), doubling after
_BACKOFF_CAP = 1.0
_MAX_COOLDOWN_FACTOR = 8  # an upstream that keeps hanging is put aside for at most 8x its cooldown
_USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")


def _prompt_text(body: dict[str, Any]) -> str:
    if "messages" in body:
        parts: list[str] = []
        for message in body["messages"]:
            content = message.get("content")
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts.extend(p.get("text", "") for p in content if isinstance(p, dict))
        return "\n".join(parts)
    prompt = body.get("prompt")
    return prompt if isinstance(prompt, str) else " ".join(p for p in prompt or [] if isinstance(p, str))


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


def _usage(reported: dict[str, Any] | None, body: dict[str, Any], completion: str) -> dict[str, Any]:
    """The upstream's token counts, else an estimate marked `estimated`."""
    if reported:
        usage: dict[str, Any] = {k: reported[k] for k in _USAGE_KEYS if k in reported}
        usage.setdefault("total_tokens", usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0))
        usage["estimated"] = False
        return usage
    prompt_tokens = estimate_tokens(_prompt_text(body))
    completion_tokens = estimate_tokens(completion)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens, "estimated": True}


class OpenAIBackend:
    def __init__(self, upstreams: list[Upstream], metrics: WorkerMetrics, *, connect_timeout: float = 10.0) -> None:
        self.upstreams = upstreams
        self.metrics = metrics
        # a chat model serves /v1/completions too: natively, or through the edge's conversion
        models = sorted({m for u in upstreams for m in u.models})
        self.serves: dict[str, list[Kind]] = {m: ["chat", "completion"] for m in models}
        features: list[Feature] = ["chat", "tools"]
        if all(u.native_n for u in upstreams):
            features.append("n")
        if all(u.completions for u in upstreams):
            features.append("completion")
        self.features = features
        self._by_model = {m: [u for u in upstreams if m in u.models] for m in self.serves}
        self._rotation = itertools.count()
        self._proxies = {u.name: proxy_for(u) for u in upstreams}
        self._plain = {u.name: plain_http(u, self._proxies[u.name]) for u in upstreams}
        self._connect_timeout = connect_timeout
        self._session: aiohttp.ClientSession | None = None
        self._pool = HTTP1Pool(connect_timeout=connect_timeout)
        # upstream name -> (aside until, monotonic; consecutive hangs)
        self._aside: dict[str, tuple[float, int]] = {}
        for u in upstreams:  # whatever credential this worker holds is scrubbed from all text
            secrets.hold(u.api_key)
            secrets.hold_url(u.base_url)
            secrets.hold_url(self._proxies[u.name])

    def _client(self) -> aiohttp.ClientSession:
        # Created lazily: aiohttp sessions belong to the running event loop.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60),
                # Read limits are the runtime's job (first token, idle); only connecting is bounded here.
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout),
                trust_env=False,  # proxies are resolved once per upstream (proxy_for)
                auto_decompress=True,
            )
        return self._session

    def _candidates(self, model: str) -> list[Upstream]:
        ups = self._by_model.get(model)
        if not ups:
            raise ModelNotFound(model)
        if len(ups) == 1:
            return ups
        start = next(self._rotation) % len(ups)
        order = ups[start:] + ups[:start]
        if self._aside:
            now = time.monotonic()
            # healthy ones first (in rotation), then those put aside, the soonest back first
            order.sort(key=lambda u: self._aside_until(u.name, now))
        return order

    def _aside_until(self, name: str, now: float) -> float:
        until = self._aside.get(name, (0.0, 0))[0]
        return until if until > now else 0.0

    def _put_aside(self, upstream: Upstream) -> None:
        hangs = self._aside.get(upstream.name, (0.0, 0))[1] + 1
        factor = min(2 ** (hangs - 1), _MAX_COOLDOWN_FACTOR)
        self._aside[upstream.name] = (time.monotonic() + upstream.cooldown * factor, hangs)

    async def stream(self, job: Job, body: dict[str, Any]) -> AsyncIterator[Item]:
        # One async generator for the whole job (each costs a registration with the loop and a
        # step per item): the call to each upstream in turn is made inline.
        candidates = self._candidates(job["model"])
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
                            if self._aside:
                                self._aside.pop(upstream.name, None)  # it answers again
                        yield item
                if self._aside:
                    self._aside.pop(upstream.name, None)
                return
            except SwitchyardError as err:
                err.upstream = upstream.name
                if call.hung:
                    self._put_aside(upstream)
                if sent_any or isinstance(err, UpstreamBadRequest) or number == last:
                    raise  # tokens already went out, the input itself is the problem, or none is left
                # failed over: counted here; the error that ends the job is counted by the runtime
                self.metrics.count_upstream_error(err)
                log.warning(
                    "upstream %s failed (%s: %s); trying upstream %s", upstream.name, err.code, err.message,
                    candidates[number].name, extra={"request_id": job["request_id"], "job_id": job["job_id"]},
                )
                await asyncio.sleep(full_jitter(number, base=_BACKOFF_BASE, cap=_BACKOFF_CAP))

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
        plain = self._plain[upstream.name]
        head_timeout = (upstream.answer_timeout if whole else upstream.first_byte_timeout) if limited else None
        call = UpstreamCall(
            None if plain else self._client(), self._pool if plain else None, upstream,
            self._proxies[upstream.name], _PATHS[job["kind"]], payload, head_timeout,
        )
        return call, whole

    async def _whole(self, call: UpstreamCall, body: dict[str, Any]) -> StreamEnd:
        """A non-streamed answer as one end: its choices become one delta each."""
        started = time.monotonic()
        answer = await call.answer()
        self.metrics.upstream_ttft.observe(time.monotonic() - started)
        choices = [_as_delta(c) for c in answer["choices"] if isinstance(c, dict)]
        usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else None
        return StreamEnd(
            usage=_usage(usage, body, "".join(_choice_text(c) for c in choices)),
            system_fingerprint=answer.get("system_fingerprint"), choices=choices or None,
        )

    async def _streamed(self, call: UpstreamCall, body: dict[str, Any]) -> AsyncIterator[Item]:
        started = time.monotonic()
        first = True
        usage: dict[str, Any] | None = None
        fingerprint: str | None = None
        completion_chars: list[str] = []
        last: list[dict[str, Any]] = []  # what arrived together with [DONE]: it goes with the end
        async for chunks, done in call.chunks():
            batch: list[dict[str, Any]] = []
            for chunk in chunks:
                if chunk.get("usage"):
                    usage = chunk["usage"]
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
        yield StreamEnd(usage=_usage(usage, body, "".join(completion_chars)), system_fingerprint=fingerprint,
                        choices=last or None)

    async def aclose(self) -> None:
        await self._pool.aclose()
        if self._session is not None:
            await self._session.close()
