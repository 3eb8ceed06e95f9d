"""Prometheus metrics of an account pool (bounded labels: pool, state, verdict; never an account)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry

from libs.account_pool.outcome import Verdict
from libs.loop_metrics import Counter, CounterChild

STATES = ("free", "leased", "cooling", "quarantined")
_ACCOUNTS = "switchyard_pool_accounts"
_ACCOUNTS_HELP = "Accounts of the pool by state, as this replica's mirror of the shared state sees them"


class PoolMetrics:
    def __init__(self, registry: CollectorRegistry, pool: str) -> None:
        self.pool = pool
        self.outcomes = Counter(
            "switchyard_pool_outcomes_total", "Health outcomes reported on releasing an account, by verdict",
            ["pool", "verdict"], registry=registry,
        )
        self._by_verdict: dict[Verdict, CounterChild] = {
            v: self.outcomes.labels(pool=pool, verdict=v.value) for v in Verdict
        }
        self._counts: Callable[[], Mapping[str, int]] | None = None
        # counted at scrape time: a cooldown ends with no KV write, so a gauge set on writes would lag
        registry.register(_StateGauge(self))

    def bind(self, counts: Callable[[], Mapping[str, int]]) -> None:
        """The pool's per-state counts, read at each scrape."""
        self._counts = counts

    def count_outcome(self, verdict: Verdict) -> None:
        self._by_verdict[verdict].inc()

    def state_counts(self) -> Mapping[str, int]:
        return self._counts() if self._counts is not None else {}


class _StateGauge:
    def __init__(self, metrics: PoolMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(_ACCOUNTS, _ACCOUNTS_HELP, labels=["pool", "state"])

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(_ACCOUNTS, _ACCOUNTS_HELP, labels=["pool", "state"])
        counts = self._metrics.state_counts()
        for state in STATES:
            family.add_metric([self._metrics.pool, state], counts.get(state, 0))
        yield family
