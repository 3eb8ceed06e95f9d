"""A unary call (one JSON request, one JSON answer) with failover: what moderations, embeddings
and image generations do upstream.

Failover happens before the answer, which is the job's only output, so every failed attempt but
the last may move on (failover.py decides); each attempt but the last is bounded by its
upstream's `answer_timeout`, the last one by the job's total limit. The time to the whole answer
is the upstream's time to first token (WorkerMetrics.upstream_ttft).
"""

from __future__ import annotations

import time
from typing import Any

from libs.errors import SwitchyardError
from libs.openai_upstream.clients import UpstreamClients
from libs.openai_upstream.failover import Failover
from proto.messages import Job


async def post_json(
    clients: UpstreamClients, failover: Failover, job: Job, path: str, payload: dict[str, Any], *, expect: str,
) -> dict[str, Any]:
    """POST `payload` (its `model` set to the job's) to `{base_url}{path}` of the job's model's
    upstreams in failover order; the first whole answer, a JSON object with a list under `expect`.

    Errors are the SwitchyardError tree (call.py's `error_for_status`: 400 UpstreamBadRequest
    with the upstream's `param`, 401/403 UpstreamAuthError, 429 UpstreamRateLimited and 503 with
    Retry-After, timeouts, protocol errors), scrubbed of secrets, `upstream` naming the one that
    failed last. ModelNotFound when no upstream serves the job's model.
    """
    candidates = failover.candidates(job["model"])
    payload = {**payload, "model": job["model"]}
    last = len(candidates)
    for number, upstream in enumerate(candidates, start=1):
        call = clients.call(upstream, path, payload, upstream.answer_timeout if number < last else None)
        started = time.monotonic()
        try:
            answer = await call.answer(expect)
        except SwitchyardError as err:
            await failover.fail_over(err, call, candidates, number, job)  # raises on the last
            continue
        failover.metrics.upstream_ttft.observe(time.monotonic() - started)
        failover.answered(upstream)
        return answer
    raise AssertionError("fail_over raises after the last upstream")
