"""The edge's Prometheus metrics (injected registry; bounded labels, never a key), updated from
the event loop only (libs/loop_metrics.py)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from libs.loop_metrics import Counter, Gauge, Histogram

# Requests that match no route are counted by method, bounded to these (anything else is "other"),
# never by path: a scanner's paths would grow the series without bound.
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
AUTH_FAILURE_REASONS = ("missing", "invalid")

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class EdgeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "switchyard_edge_requests_total", "Requests by route, model and status", ["route", "model", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "switchyard_edge_request_duration_seconds", "Request duration", ["route"], buckets=_LATENCY,
            registry=registry,
        )
        self.ttft = Histogram(
            "switchyard_edge_time_to_first_token_seconds", "From queueing a job to its first delta",
            buckets=_LATENCY, registry=registry,
        )
        self.queue_wait = Histogram(
            "switchyard_edge_queue_wait_seconds", "From queueing a job to a worker starting it",
            buckets=_LATENCY, registry=registry,
        )
        self.in_flight = Gauge("switchyard_edge_in_flight_requests", "Requests being answered", registry=registry)
        self.retries = Counter(
            "switchyard_edge_job_retries_total", "Jobs restarted by another delivery", registry=registry
        )
        self.cancellations = Counter(
            "switchyard_edge_cancellations_total", "Cancels sent to workers", ["reason"], registry=registry
        )
        self.no_capacity = Counter(
            "switchyard_edge_no_capacity_total", "Requests refused because no worker had room", registry=registry
        )
        self.errors = Counter(
            "switchyard_edge_errors_total", "Failed requests by error code", ["code"], registry=registry
        )
        self.tokens = Counter(
            "switchyard_edge_tokens_total", "Tokens delivered", ["kind", "source"], registry=registry
        )
        # children of the per-request series, looked up once (labels() validates on every call)
        self.tokens_by = {
            (kind, source): self.tokens.labels(kind=kind, source=source)
            for kind in ("prompt", "completion") for source in ("upstream", "estimated")
        }
        self.auth_failures = Counter(
            "switchyard_edge_auth_failures_total", "Requests refused with 401: no bearer key, or an unknown one",
            ["reason"], registry=registry,
        )
        self.auth_failures_by = {reason: self.auth_failures.labels(reason=reason) for reason in AUTH_FAILURE_REASONS}
        self.unmatched = Counter(
            "switchyard_edge_unmatched_requests_total",
            "Requests to no route (404) or with a method their route does not allow (405), by method",
            ["method", "status"], registry=registry,
        )
        self.pool_capacity = Gauge(
            "switchyard_edge_pool_capacity", "Announced capacity of live replicas", ["pool"], registry=registry
        )
        self.pool_in_flight = Gauge(
            "switchyard_edge_pool_in_flight", "Announced in-flight jobs of live replicas", ["pool"],
            registry=registry,
        )

    def count_unmatched(self, method: str, status: int) -> None:
        self.unmatched.labels(method=method if method in _METHODS else "other", status=str(status)).inc()
