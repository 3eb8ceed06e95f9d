"""tools/bench_web.py: each write to an account's key is classified from the value before it."""

from __future__ import annotations

from typing import Any

import orjson

from libs.account_pool.state import AccountState
from tools.bench_web import classify_write


def _value(**fields: Any) -> dict[str, Any]:
    """A value as the pool writes it (AccountState.encode), decoded."""
    decoded: dict[str, Any] = orjson.loads(AccountState(**fields).encode())
    return decoded


def test_a_new_lease_id_is_a_lease_and_a_cleared_one_a_release() -> None:
    free = _value(last_used=10.0)
    leased = _value(lease_id="a", lease_holder="w1", lease_until=40.0, last_used=11.0)
    assert classify_write(free, leased) == "lease"
    assert classify_write(None, leased) == "lease"  # a key first seen leased
    released = _value(last_used=11.0)
    assert classify_write(leased, released) == "release"
    # a release that takes the lease straight over for another holder is a lease of the new id
    assert classify_write(leased, _value(lease_id="b", lease_holder="w2", lease_until=50.0)) == "lease"


def test_only_the_expiry_moving_is_a_renewal_and_anything_else_an_update() -> None:
    leased = _value(lease_id="a", lease_holder="w1", lease_until=40.0, last_used=11.0)
    assert classify_write(leased, {**leased, "lease_until": 50.0}) == "renewal"
    assert classify_write(leased, {**leased, "lease_until": 50.0, "wanted_by": "w2"}) == "update"
    free = _value(last_used=10.0)
    assert classify_write(free, {**free, "cool_until": 99.0, "level": 1}) == "update"  # a cooldown, unleased
    assert classify_write(None, free) == "update"  # a key first seen free: nothing to compare with
