"""What one use of an account tells the pool about the account's health.

The upstream client of each web worker classifies an upstream answer into an `Outcome`; the pool
turns it into the account's next state (free, cooling down for a model or for all, quarantined).
The vocabulary is the pool's, so every web worker (ChatGPT web, Sydney, browser agents) speaks it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Verdict(Enum):
    OK = "ok"  # the account answered: clears an earlier failure streak and any backoff
    NEUTRAL = "neutral"  # said nothing about the account (the client's bad input, a cancel)
    RATE_LIMITED = "rate_limited"  # 429 / model_cap_exceeded: cool down (for `model` if given) until `clears_in`
    CLOUDFLARE = "cloudflare"  # a challenge page: cool down with backoff
    AUTH_EXPIRED = "auth_expired"  # the access token expired: refresh once, then quarantine
    AUTH_INVALID = "auth_invalid"  # the credentials are refused for good: quarantine with the reason
    FAILURE = "failure"  # a server error or a broken stream: counts toward escalation


@dataclass(frozen=True, slots=True)
class Outcome:
    verdict: Verdict
    model: str | None = None  # the model the limit applies to (None: every model of the account)
    clears_in: float | None = None  # seconds until the upstream lifts the limit, when it said so
    reason: str = ""  # short, secret-free text for the operator's account list
    conversations: int = 0  # upstream conversations this use began (counted against a daily budget)

    @classmethod
    def ok(cls) -> Outcome:
        return cls(Verdict.OK)

    @classmethod
    def neutral(cls) -> Outcome:
        return cls(Verdict.NEUTRAL)
