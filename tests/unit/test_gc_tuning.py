"""libs.gc_tuning: start-up objects frozen out of collections, gen-0 collections rarer."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from libs.gc_tuning import GEN0_THRESHOLD, settle_after_startup


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_settle_after_startup_freezes_and_raises_the_gen0_threshold(restored_gc: None) -> None:
    gen1, gen2 = gc.get_threshold()[1:]
    settle_after_startup()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (GEN0_THRESHOLD, gen1, gen2)
    cycle: list[object] = []
    cycle.append(cycle)  # garbage in a cycle is still collected
    del cycle
    assert gc.collect() >= 1
