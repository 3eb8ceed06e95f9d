"""Prometheus counters, gauges and histograms for code that runs on one event loop.

prometheus_client takes a lock and checks that the metric may be observed on every update:
three Python calls and a lock per update, and a request makes a dozen updates. Switchyard's
services update their metrics from their event loop's thread only, so a plain number will do.
Each family here is a prometheus_client collector: `generate_latest(registry)` renders it in the
usual exposition format (without the optional `_created` series).

The API is the subset of prometheus_client's the services use: `labels(**values)` (children are
kept, so look a hot one up once), `inc`, `dec`, `set`, `observe`, and on an unlabelled family
the same methods directly. Not thread-safe: update from the loop's thread only.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from typing import ClassVar, Generic, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry
from prometheus_client.utils import floatToGoString


class CounterChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        self.value += amount


class GaugeChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount

    def set(self, value: float) -> None:
        self.value = float(value)


class HistogramChild:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds  # sorted upper bounds, +Inf last
        self.counts = [0] * len(bounds)  # per bucket, not cumulative
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1  # `le` bounds are inclusive
        self.sum += value


Child = TypeVar("Child", CounterChild, GaugeChild, HistogramChild)


class _Family(Generic[Child]):
    family_type: ClassVar[type[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]]

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = (), *,
                 registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], Child] = {}
        self._only: Child | None = None if self.labelnames else self._new_child()
        if self._only is not None:
            self._children[()] = self._only
        registry.register(self)

    def _new_child(self) -> Child:
        raise NotImplementedError

    def _unlabelled(self) -> Child:
        if self._only is None:
            raise ValueError(f"{self.name} has labels {self.labelnames}: use labels(...)")
        return self._only

    def labels(self, **values: str) -> Child:
        if set(values) != set(self.labelnames):
            raise ValueError(f"{self.name} takes the labels {self.labelnames}, got {tuple(values)}")
        key = tuple(str(values[name]) for name in self.labelnames)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._new_child()
        return child

    def _family(self) -> Metric:
        return self.family_type(self.name, self.documentation, labels=self.labelnames)

    def _add(self, family: Metric, key: tuple[str, ...], child: Child) -> None:
        assert isinstance(child, CounterChild | GaugeChild)  # a histogram has its own
        assert isinstance(family, CounterMetricFamily | GaugeMetricFamily)
        family.add_metric(list(key), child.value)

    # ---- the collector interface ---------------------------------------------------------

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        for key, child in list(self._children.items()):
            self._add(family, key, child)
        return [family]


class Counter(_Family[CounterChild]):
    family_type = CounterMetricFamily

    def _new_child(self) -> CounterChild:
        return CounterChild()

    def inc(self, amount: float = 1.0) -> None:
        self._unlabelled().inc(amount)


class Gauge(_Family[GaugeChild]):
    family_type = GaugeMetricFamily

    def _new_child(self) -> GaugeChild:
        return GaugeChild()

    def inc(self, amount: float = 1.0) -> None:
        self._unlabelled().inc(amount)

    def dec(self, amount: float = 1.0) -> None:
        self._unlabelled().dec(amount)

    def set(self, value: float) -> None:
        self._unlabelled().set(value)


class Histogram(_Family[HistogramChild]):
    family_type = HistogramMetricFamily

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = (), *,
                 buckets: Sequence[float], registry: CollectorRegistry) -> None:
        bounds = sorted(float(b) for b in buckets)
        if not bounds or bounds[-1] != math.inf:
            bounds.append(math.inf)
        self.bounds = tuple(bounds)
        super().__init__(name, documentation, labelnames, registry=registry)

    def _new_child(self) -> HistogramChild:
        return HistogramChild(self.bounds)

    def observe(self, value: float) -> None:
        self._unlabelled().observe(value)

    def _add(self, family: Metric, key: tuple[str, ...], child: HistogramChild) -> None:
        assert isinstance(family, HistogramMetricFamily)
        cumulative = 0
        buckets = []
        for bound, count in zip(child.bounds, child.counts, strict=True):
            cumulative += count
            buckets.append((floatToGoString(bound), cumulative))
        family.add_metric(list(key), buckets, child.sum)
