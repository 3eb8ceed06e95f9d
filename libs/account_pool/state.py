"""One account's shared state as stored in the KV bucket, and how a health outcome changes it.

Pure data and arithmetic: no I/O, so the pool (pool.py) can apply an outcome to the state it read
and write the result back in one compare-and-set. Times are wall-clock unix seconds, because
they are compared by every replica (see pool.py on the clock assumption).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, fields, replace
from typing import Any

import orjson

from libs.account_pool.outcome import Outcome, Verdict

log = logging.getLogger("switchyard.account_pool")

_MAX_REASON = 200  # the operator's account list shows it; an upstream's page is no reason
_MAX_LEVEL = 30  # 2**30 times any cooldown is far past max_cooldown; keeps the float finite


@dataclass(frozen=True)
class PoolPolicy:
    """How the pool reacts to health outcomes; defaults suit real upstreams, tests pass small values."""

    lease_ttl: float = 30.0  # a lease not renewed for this long is free again (crashed worker)
    cooldown: float = 60.0  # RATE_LIMITED without clears_in, and FAILURE escalation
    cloudflare_cooldown: float = 30.0
    max_cooldown: float = 3600.0  # backoff doubles per consecutive failure up to this
    failure_window: float = 120.0
    failures_to_cool: int = 3  # FAILUREs within the window → cool down with backoff

    def backoff(self, base: float, level: int) -> float:
        return float(min(self.max_cooldown, base * 2 ** min(level, _MAX_LEVEL)))

    def scaled(self, scale: float) -> PoolPolicy:
        """These times under SY_TIME_SCALE, as every other limit (tests run at 0.1)."""
        return replace(self, lease_ttl=self.lease_ttl * scale, cooldown=self.cooldown * scale,
                       cloudflare_cooldown=self.cloudflare_cooldown * scale, max_cooldown=self.max_cooldown * scale,
                       failure_window=self.failure_window * scale)


@dataclass
class AccountState:
    """The value of key `{pool}.{account}`. Unknown fields of a newer writer are ignored on read."""

    lease_id: str = ""  # empty: not leased
    lease_holder: str = ""  # the replica holding it (a worker id, never a secret)
    lease_until: float = 0.0  # the lease is void after this unless renewed
    lease_job: str = ""
    last_used: float = 0.0  # when it was last leased: least recently used goes first
    cool_until: float = 0.0  # the whole account rests until then
    cool_reason: str = ""
    model_cool: dict[str, float] = field(default_factory=dict)  # model → rests until then
    level: int = 0  # backoff level: consecutive cooldowns not yet followed by an OK (half-open when > 0)
    failures: list[float] = field(default_factory=list)  # FAILURE times within the window
    quarantined: bool = False
    reason: str = ""  # why it is quarantined (secret-free)
    quarantined_fp: str = ""  # the credentials' fingerprint when quarantined: new credentials lift it
    # a replica waiting for this very account (a conversation continues on it) asks its holder to
    # give it up as soon as it holds it idle, and other acquirers to leave it to the waiter
    wanted_by: str = ""
    wanted_until: float = 0.0
    # conversations begun on budget_day (UTC, YYYY-MM-DD): an account with a daily conversation
    # budget rests once it is spent, until the next UTC midnight (Bing counts turns per day)
    budget_day: str = ""
    budget_used: int = 0

    def encode(self) -> bytes:
        return orjson.dumps({name: getattr(self, name) for name in _FIELDS})

    @classmethod
    def decode(cls, data: bytes) -> AccountState:
        """A broken value reads as a fresh account (logged): one bad write must not wedge the pool."""
        try:
            raw: Any = orjson.loads(data)
            if not isinstance(raw, dict):
                raise TypeError(type(raw).__name__)
            known = set(_FIELDS)
            state = cls(**{k: v for k, v in raw.items() if k in known})
            state.model_cool = {str(m): float(t) for m, t in dict(state.model_cool).items()}
            state.failures = [float(t) for t in state.failures]
            return state
        except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
            log.warning("unreadable account state (%s); reading it as a fresh account", type(exc).__name__)
            return cls()

    def clone(self) -> AccountState:
        copy = AccountState(**{name: getattr(self, name) for name in _FIELDS})
        copy.model_cool = dict(self.model_cool)
        copy.failures = list(self.failures)
        return copy

    def wanted_by_other(self, holder: str, now: float) -> bool:
        return bool(self.wanted_by) and self.wanted_by != holder and self.wanted_until > now

    def leased(self, now: float) -> bool:
        return bool(self.lease_id) and self.lease_until > now

    def clear_lease(self) -> None:
        self.lease_id = self.lease_holder = self.lease_job = ""
        self.lease_until = 0.0

    def cooling_end(self, models: frozenset[str] | None, model: str | None, now: float) -> float:
        """When the account may serve `model` again (None: some model it permits); 0 if it may now."""
        end = self.cool_until if self.cool_until > now else 0.0
        if model is not None:
            until = self.model_cool.get(model, 0.0)
            return max(end, until) if until > now else end
        if models:  # every permitted model resting: free when the first of them is
            ends = [self.model_cool.get(m, 0.0) for m in models]
            if all(t > now for t in ends):
                return max(end, min(ends))
        return end

    def used_today(self, now: float) -> int:
        """Conversations begun on the current UTC day."""
        return self.budget_used if self.budget_day == _utc_day(now) else 0

    def _spend(self, conversations: int, budget: int | None, now: float) -> None:
        day = _utc_day(now)
        if self.budget_day != day:
            self.budget_day, self.budget_used = day, 0
        self.budget_used += conversations
        if budget is not None and self.budget_used >= budget:
            midnight = (int(now) // 86400 + 1) * 86400
            self._cool(float(midnight), f"daily conversation budget of {budget} spent")

    def apply(self, outcome: Outcome, policy: PoolPolicy, now: float, fingerprint: str,
              budget: int | None = None) -> None:
        """The health effect of one use (see the pool's docstring for the rules); `budget`: the
        account's daily conversation budget, if it has one."""
        verdict = outcome.verdict
        reason = outcome.reason[:_MAX_REASON]
        if outcome.conversations > 0:
            self._spend(outcome.conversations, budget, now)
        if verdict is Verdict.OK:
            self.level = 0
            self.failures = []
        elif verdict is Verdict.RATE_LIMITED:
            if outcome.clears_in is not None:  # the upstream said when: believe it, no escalation
                until = now + max(0.0, outcome.clears_in)
            else:
                until = now + policy.backoff(policy.cooldown, self.level)
                self.level += 1
            if outcome.model is not None:
                self.model_cool[outcome.model] = max(self.model_cool.get(outcome.model, 0.0), until)
            else:
                self._cool(until, reason or "rate limited")
        elif verdict is Verdict.CLOUDFLARE:
            self._cool(now + policy.backoff(policy.cloudflare_cooldown, self.level), reason or "cloudflare challenge")
            self.level += 1
        elif verdict in (Verdict.AUTH_EXPIRED, Verdict.AUTH_INVALID):
            self.quarantined = True
            self.reason = reason or verdict.value
            self.quarantined_fp = fingerprint
        elif verdict is Verdict.FAILURE:
            self.failures = [t for t in self.failures if t > now - policy.failure_window] + [now]
            # half-open (level > 0): the first failure after a cooldown cools it again, for longer
            if len(self.failures) >= policy.failures_to_cool or self.level > 0:
                self._cool(now + policy.backoff(policy.cooldown, self.level), reason or "upstream failures")
                self.level += 1
                self.failures = []
        self.model_cool = {m: t for m, t in self.model_cool.items() if t > now}

    def _cool(self, until: float, reason: str) -> None:
        if until > self.cool_until:
            self.cool_until = until
            self.cool_reason = reason

    def lift_quarantine(self) -> None:
        """Back in service with a clean slate (operator restore, or new credentials)."""
        self.quarantined = False
        self.reason = self.quarantined_fp = self.cool_reason = ""
        self.level = 0
        self.failures = []
        self.cool_until = 0.0
        self.model_cool = {}


def _utc_day(now: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(now))


# read on every read and write of an account (dataclasses.fields() walks the class on each call)
_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(AccountState))
