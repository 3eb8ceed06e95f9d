"""libs/account_pool/state.py: the arithmetic of health outcomes, and reading stored values."""

from __future__ import annotations

from libs.account_pool.outcome import Outcome, Verdict
from libs.account_pool.state import AccountState, PoolPolicy

POLICY = PoolPolicy(cooldown=10.0, cloudflare_cooldown=5.0, max_cooldown=40.0, failure_window=60.0,
                    failures_to_cool=3)
NOW = 1_000_000.0


def test_backoff_doubles_per_level_and_stops_at_the_cap() -> None:
    state = AccountState()
    ends = []
    for _ in range(5):
        state.apply(Outcome(Verdict.CLOUDFLARE), POLICY, NOW, "")
        ends.append(state.cool_until - NOW)
        state.cool_until = 0.0  # the cooldown ran out (half-open); the level stays
    assert ends == [5.0, 10.0, 20.0, 40.0, 40.0]
    assert state.level == 5
    huge = AccountState(level=10_000)  # no overflow, however long the streak
    huge.apply(Outcome(Verdict.FAILURE), POLICY, NOW, "")
    assert huge.cool_until - NOW == 40.0


def test_failures_outside_the_window_do_not_count() -> None:
    state = AccountState()
    state.apply(Outcome(Verdict.FAILURE), POLICY, NOW - 61, "")
    state.apply(Outcome(Verdict.FAILURE), POLICY, NOW - 1, "")
    state.apply(Outcome(Verdict.FAILURE), POLICY, NOW, "")
    assert state.cool_until == 0.0 and len(state.failures) == 2
    state.apply(Outcome(Verdict.FAILURE), POLICY, NOW, "")
    assert state.cool_until == NOW + 10 and state.failures == [] and state.level == 1


def test_an_upstream_limit_is_believed_and_does_not_escalate() -> None:
    state = AccountState()
    state.apply(Outcome(Verdict.RATE_LIMITED, model="gpt-4o", clears_in=300), POLICY, NOW, "")
    assert state.model_cool == {"gpt-4o": NOW + 300} and state.level == 0
    # a shorter limit reported later does not shorten a running one
    state.apply(Outcome(Verdict.RATE_LIMITED, model="gpt-4o", clears_in=5), POLICY, NOW, "")
    assert state.model_cool == {"gpt-4o": NOW + 300}
    # ended per-model cooldowns are dropped from the stored value
    state.apply(Outcome.neutral(), POLICY, NOW + 301, "")
    assert state.model_cool == {}


def test_cooling_end_for_no_model_needs_every_permitted_model_cooling() -> None:
    models = frozenset({"a", "b"})
    state = AccountState(model_cool={"a": NOW + 10})
    assert state.cooling_end(models, None, NOW) == 0.0  # b is free
    assert state.cooling_end(None, None, NOW) == 0.0  # any model: some other is free
    assert state.cooling_end(models, "a", NOW) == NOW + 10
    state.model_cool["b"] = NOW + 20
    assert state.cooling_end(models, None, NOW) == NOW + 10  # free for a model when the first ends
    state.cool_until = NOW + 30
    assert state.cooling_end(models, "b", NOW) == NOW + 30


def test_auth_outcomes_quarantine_with_the_credentials_fingerprint() -> None:
    state = AccountState(level=2, cool_until=NOW + 5)
    state.apply(Outcome(Verdict.AUTH_INVALID, reason="x" * 1000), POLICY, NOW, "fp1")
    assert state.quarantined and state.quarantined_fp == "fp1" and len(state.reason) == 200
    state.lift_quarantine()
    assert (state.quarantined, state.reason, state.level, state.cool_until) == (False, "", 0, 0.0)


def test_stored_values_round_trip_and_bad_ones_read_as_fresh() -> None:
    state = AccountState(lease_id="l", lease_until=NOW, model_cool={"m": NOW}, failures=[NOW], level=3)
    assert AccountState.decode(state.encode()) == state
    assert AccountState.decode(b'{"level": 1, "from_a_newer_writer": true}') == AccountState(level=1)
    assert AccountState.decode(b"not json") == AccountState()
    assert AccountState.decode(b"[1, 2]") == AccountState()
    assert AccountState.decode(b'{"failures": ["x"]}') == AccountState()
    clone = state.clone()
    clone.model_cool["n"] = 1.0
    clone.failures.append(1.0)
    assert state.model_cool == {"m": NOW} and state.failures == [NOW]


def test_a_spent_daily_budget_rests_the_account_until_the_next_utc_midnight() -> None:
    state = AccountState()
    noon = 1_800_000_000 - 1_800_000_000 % 86400 + 43200  # 12:00 UTC
    state.apply(Outcome(Verdict.OK, conversations=1), POLICY, noon, "", budget=2)
    assert state.used_today(noon) == 1 and state.cool_until == 0
    state.apply(Outcome(Verdict.OK, conversations=1), POLICY, noon + 60, "", budget=2)
    assert state.cool_until == noon + 43200  # the next midnight, UTC
    assert "daily conversation budget of 2" in state.cool_reason
    assert state.used_today(noon + 43200) == 0  # a new day counts from zero
    state.apply(Outcome(Verdict.OK, conversations=1), POLICY, noon + 43200 + 5, "", budget=2)
    assert state.budget_used == 1


def test_conversations_without_a_budget_are_counted_but_never_rest_the_account() -> None:
    state = AccountState()
    for _ in range(50):
        state.apply(Outcome(Verdict.OK, conversations=1), POLICY, NOW, "")
    assert state.used_today(NOW) == 50 and state.cool_until == 0
