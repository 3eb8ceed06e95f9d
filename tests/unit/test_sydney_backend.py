"""sydney-worker with no account configured: no pool, no admission; a job bringing no cookies of
its own fails at once with an error that says how to fix it, and is not retried elsewhere."""

from __future__ import annotations

from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry

from libs.errors import InvalidRequest
from libs.worker_metrics import WorkerMetrics
from proto.messages import Job
from services.sydney_worker.backend import SydneyBackend
from services.sydney_worker.config import load_config


async def test_without_accounts_only_callers_cookies_can_run() -> None:
    backend = SydneyBackend(load_config({}), WorkerMetrics(CollectorRegistry(), "sydney"), worker_id="w", capacity=2)
    await backend.attach(cast(Any, None))  # no account: the bus's KV is never touched
    try:
        assert backend.admission is None and backend.pool is None
        assert backend.features == ["chat", "cookies"]
        assert backend.accounts_state() == {"total": 0, "free": 0, "retry_at": None}
        job = cast(Job, {"kind": "chat", "model": "sydney-creative", "job_id": "j", "index_offset": 0,
                         "start_by": 0.0})
        with pytest.raises(InvalidRequest) as refused:
            async for _ in backend.stream(job, {"messages": [{"role": "user", "content": "hi"}]}):
                pass
        assert not refused.value.retryable and refused.value.param == "cookies"
        assert "DEFAULT_COOKIES" in refused.value.message and "SYDNEY_ACCOUNTS_FILE" in refused.value.message
    finally:
        await backend.aclose()
