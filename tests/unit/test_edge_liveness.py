"""services/edge/liveness.py: when a worker that stopped announcing counts as dead."""

from __future__ import annotations

from services.edge.liveness import DEFAULT_TTL, LIVENESS_SHARE, WorkerLiveness


def test_a_worker_is_presumed_dead_a_little_over_two_intervals_after_it_was_last_heard() -> None:
    live = WorkerLiveness()
    live.observe("w", ttl=6.0, now=100.0)  # the runtime's: interval 2 s, ttl 3 intervals
    assert live.presumed_dead_at("w", since=99.0) == 104.5  # 2.25 intervals: one lost announcement passes
    live.observe("w", ttl=6.0, now=102.0)
    assert live.presumed_dead_at("w", since=99.0) == 106.5


def test_a_reply_after_the_last_announcement_counts_as_a_sign_of_life() -> None:
    live = WorkerLiveness()
    live.observe("w", ttl=6.0, now=100.0)
    assert live.presumed_dead_at("w", since=101.5) == 106.0


def test_a_worker_never_heard_from_counts_from_its_last_reply() -> None:
    assert WorkerLiveness().presumed_dead_at("ghost", since=50.0) == 50.0 + DEFAULT_TTL * LIVENESS_SHARE


def test_an_unusable_ttl_falls_back_on_the_default() -> None:
    live = WorkerLiveness()
    for ttl in (0.0, -1.0, float("nan"), float("inf")):
        live.observe("w", ttl=ttl, now=10.0)
        assert live.presumed_dead_at("w", since=0.0) == 10.0 + DEFAULT_TTL * LIVENESS_SHARE


def test_workers_that_stopped_are_forgotten() -> None:
    live = WorkerLiveness()
    live.observe("gone", ttl=6.0, now=0.0)
    live.observe("here", ttl=6.0, now=8.0)
    assert live.presumed_dead_at("gone", since=0.0) == 4.5  # still remembered: 8 < 2 × 4.5
    live.observe("here", ttl=6.0, now=10.0)
    assert "gone" not in live._seen and "here" in live._seen


def test_memory_is_bounded() -> None:
    live = WorkerLiveness()
    for i in range(5000):
        live.observe(f"w{i}", ttl=6.0, now=1.0)
    assert len(live._seen) == 4096
    assert "w4999" in live._seen and "w0" not in live._seen


def test_while_the_edge_could_not_hear_nobody_counts_as_unheard() -> None:
    live = WorkerLiveness()
    live.observe("w", ttl=6.0, now=100.0)
    live.pardon(110.0)  # the edge's bus connection came back at 110
    assert live.presumed_dead_at("w", since=100.0) == 114.5
    assert live.presumed_dead_at("never-seen", since=100.0) == 110.0 + DEFAULT_TTL * LIVENESS_SHARE
    live.pardon(105.0)  # never back in time
    assert live.presumed_dead_at("w", since=100.0) == 114.5
