"""Which upstream a job tries first, and what happens when an attempt fails before any output.

Upstreams serving the same model are tried in a rotating order (spreading jobs over them), with
those put aside after hanging moved last (the soonest back first). An attempt that fails before
the job's first output (an error status, a refused connection, no response head within its
limit) passes the job to the model's next upstream, after a short jittered backoff so that a
burst of failing jobs does not move on in lockstep; never after output went out, never on
UpstreamBadRequest (the input itself is the problem: another upstream would refuse it too), and
not past the last upstream (its error ends the attempt, and the runtime decides on a retry).
An upstream that hung is put aside for its cooldown, doubling while it keeps hanging (8x at most).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Sequence

from libs.backoff import full_jitter
from libs.errors import ModelNotFound, SwitchyardError, UpstreamBadRequest
from libs.openai_upstream.call import UpstreamCall
from libs.openai_upstream.config import Upstream
from libs.worker_metrics import WorkerMetrics
from proto.messages import Job

log = logging.getLogger("switchyard.worker")

BACKOFF_BASE = 0.05  # seconds before the second attempt (at most; full jitter), doubling after
BACKOFF_CAP = 1.0
MAX_COOLDOWN_FACTOR = 8  # an upstream that keeps hanging is put aside for at most 8x its cooldown

# upstream name -> (aside until, monotonic; consecutive hangs)
Aside = dict[str, tuple[float, int]]


def chat_models(upstream: Upstream) -> Iterable[str]:
    return upstream.models


class Failover:
    """The upstreams of each model (`models_of` says which models an upstream serves for this
    table), in the order to try them. Tables of one worker (its chat models, its moderation
    models) may share `aside`: an upstream that hangs, hangs for all of them."""

    def __init__(
        self, upstreams: Sequence[Upstream], metrics: WorkerMetrics, *,
        models_of: Callable[[Upstream], Iterable[str]] = chat_models, aside: Aside | None = None,
    ) -> None:
        self.metrics = metrics
        self.models = sorted({m for u in upstreams for m in models_of(u)})
        self._by_model = {m: [u for u in upstreams if m in models_of(u)] for m in self.models}
        self._rotation = itertools.count()
        self.aside: Aside = {} if aside is None else aside

    def candidates(self, model: str) -> list[Upstream]:
        """The model's upstreams in the order to try them; ModelNotFound if none serves it."""
        ups = self._by_model.get(model)
        if not ups:
            raise ModelNotFound(model)
        if len(ups) == 1:
            return ups
        start = next(self._rotation) % len(ups)
        order = ups[start:] + ups[:start]
        if self.aside:
            now = time.monotonic()
            # healthy ones first (in rotation), then those put aside, the soonest back first
            order.sort(key=lambda u: self._aside_until(u.name, now))
        return order

    def _aside_until(self, name: str, now: float) -> float:
        until = self.aside.get(name, (0.0, 0))[0]
        return until if until > now else 0.0

    def put_aside(self, upstream: Upstream) -> None:
        hangs = self.aside.get(upstream.name, (0.0, 0))[1] + 1
        factor = min(2 ** (hangs - 1), MAX_COOLDOWN_FACTOR)
        self.aside[upstream.name] = (time.monotonic() + upstream.cooldown * factor, hangs)

    def answered(self, upstream: Upstream) -> None:
        """The upstream answers again: it is no longer put aside."""
        if self.aside:
            self.aside.pop(upstream.name, None)

    async def fail_over(
        self, err: SwitchyardError, call: UpstreamCall, candidates: Sequence[Upstream], number: int, job: Job, *,
        sent_any: bool = False,
    ) -> None:
        """After attempt `number` (1-based) of `candidates` failed with `err`: blames its upstream,
        puts it aside if it hung, and re-raises `err` when there is no failing over (`sent_any`:
        output already went out); else counts and logs the failure and waits the backoff."""
        upstream = call.upstream
        err.upstream = upstream.name
        if call.hung:
            self.put_aside(upstream)
        if sent_any or isinstance(err, UpstreamBadRequest) or number >= len(candidates):
            raise err
        # failed over: counted here; the error that ends the job is counted by the runtime
        self.metrics.count_upstream_error(err)
        log.warning(
            "upstream %s failed (%s: %s); trying upstream %s", upstream.name, err.code, err.message,
            candidates[number].name, extra={"request_id": job["request_id"], "job_id": job["job_id"]},
        )
        await asyncio.sleep(full_jitter(number, base=BACKOFF_BASE, cap=BACKOFF_CAP))
