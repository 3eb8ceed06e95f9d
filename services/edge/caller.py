"""Who sent a request: the API key it authenticated with, as the limits and the usage records see it."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.types import Scope

from libs.keys import KeyRecord

CALLER_KEY = "sy.caller"  # the scope entry BearerAuth sets


@dataclass(frozen=True, slots=True)
class Caller:
    """`key_id`: a managed key's id (`key_…`), `static-<n>` for the n-th of AUTH_TOKEN/AUTH_TOKENS
    (a position, never a hash of the secret: a weak token's hash prefix could be searched), or
    `open` when the edge runs without keys. `record`: the managed key's record with its limits."""

    key_id: str
    record: KeyRecord | None = None


OPEN = Caller("open")


def caller_of(scope: Scope) -> Caller:
    """The request's caller; `open` where no key was asked (an open edge)."""
    caller: Caller = scope.get(CALLER_KEY, OPEN)
    return caller
