"""libs/backoff.py: full jitter under an exponential bound."""

from __future__ import annotations

import random

from libs.backoff import full_jitter


def test_waits_stay_under_a_doubling_bound_and_the_cap() -> None:
    random.seed(7)
    for attempt, bound in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (30, 1.0)]:
        waits = [full_jitter(attempt, base=0.1, cap=1.0) for _ in range(2000)]
        assert all(0.0 <= w <= bound for w in waits)
        assert max(waits) > bound * 0.9  # the bound is reached, not just respected
        assert len({round(w, 6) for w in waits}) > 1000  # jittered: no two retries in one wave
