"""Prometheus metrics every worker exposes (bounded labels; never a key, cookie or account)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from libs.errors import SwitchyardError
from libs.loop_metrics import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry, pool: str) -> None:
        self.registry = registry
        labels = {"pool": pool}
        self.capacity = Gauge("switchyard_worker_capacity", "Jobs this replica runs at once", registry=registry)
        self.in_flight = Gauge("switchyard_worker_in_flight", "Jobs running now", registry=registry)
        self.jobs = Counter(
            "switchyard_worker_jobs_total", "Jobs by outcome", ["outcome"], registry=registry
        )
        self.retries = Counter(
            "switchyard_worker_redeliveries_total", "Jobs received on a second or later attempt", registry=registry
        )
        self.cancellations = Counter(
            "switchyard_worker_cancellations_total", "Jobs cancelled by the edge", registry=registry
        )
        self.upstream_errors = Counter(
            "switchyard_worker_upstream_errors_total",
            "Upstream failures by error code and configured upstream (its name; empty: none to blame)",
            ["code", "upstream"], registry=registry,
        )
        self.upstream_ttft = Histogram(
            "switchyard_worker_upstream_first_token_seconds", "Upstream time to first token",
            buckets=_LATENCY_BUCKETS, registry=registry,
        )
        self.info = Gauge("switchyard_worker_info", "Static worker facts", ["pool"], registry=registry)
        self.info.labels(**labels).set(1)
        self._jobs_by: dict[str, Any] = {}  # outcome -> its counter child, looked up once

    def count_job(self, outcome: str) -> None:
        child = self._jobs_by.get(outcome)
        if child is None:
            child = self._jobs_by[outcome] = self.jobs.labels(outcome=outcome)
        child.inc()

    def count_upstream_error(self, err: SwitchyardError) -> None:
        """One upstream failure, labelled with its code and the upstream that failed (`err.upstream`)."""
        self.upstream_errors.labels(code=err.code, upstream=err.upstream).inc()

