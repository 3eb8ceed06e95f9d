"""libs/loop_metrics.py renders what prometheus_client renders for the same updates (less the
optional `_created` series), and refuses what prometheus_client refuses."""

from __future__ import annotations

from typing import Any

import prometheus_client
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from libs import loop_metrics

BUCKETS = (0.001, 0.01, 0.1, 1.0, 10.0)


def exposition(module: Any) -> list[str]:  # either module: the same API
    registry = CollectorRegistry()
    counter = module.Counter("t_requests_total", "Requests", ["route", "status"], registry=registry)
    plain = module.Counter("t_retries_total", "Retries", registry=registry)
    gauge = module.Gauge("t_in_flight", "In flight", registry=registry)
    pools = module.Gauge("t_pool_capacity", "Capacity", ["pool"], registry=registry)
    latency = module.Histogram("t_latency_seconds", "Latency", ["route"], buckets=BUCKETS, registry=registry)
    ttft = module.Histogram("t_ttft_seconds", "TTFT", buckets=BUCKETS, registry=registry)

    counter.labels(route="chat", status="200").inc()
    counter.labels(route="chat", status="200").inc(2)
    counter.labels(route="completions", status="503").inc()
    plain.inc(4)
    gauge.inc()
    gauge.inc(3)
    gauge.dec()
    pools.labels(pool="openai").set(128)
    pools.labels(pool="sydney").set(7.5)
    for value in (0.0005, 0.001, 0.002, 0.5, 1.0, 99.0):  # on a bound counts in that bucket
        latency.labels(route="chat").observe(value)
        ttft.observe(value / 2)
    latency.labels(route="completions").observe(0.05)
    text = generate_latest(registry).decode()
    return [line for line in text.splitlines() if "_created" not in line]


def test_the_exposition_is_prometheus_clients() -> None:
    assert exposition(loop_metrics) == exposition(prometheus_client)


def test_wrong_labels_and_negative_increments_are_refused() -> None:
    registry = CollectorRegistry()
    counter = loop_metrics.Counter("c_total", "C", ["code"], registry=registry)
    with pytest.raises(ValueError):
        counter.labels(reason="x")
    with pytest.raises(ValueError):
        counter.inc()  # a labelled family has no value of its own
    with pytest.raises(ValueError):
        counter.labels(code="x").inc(-1)
    with pytest.raises(ValueError):  # one name per registry, as prometheus_client has it
        loop_metrics.Counter("c_total", "again", registry=registry)


def test_a_labelled_child_is_kept() -> None:
    gauge = loop_metrics.Gauge("g", "G", ["pool"], registry=CollectorRegistry())
    assert gauge.labels(pool="a") is gauge.labels(pool="a")
