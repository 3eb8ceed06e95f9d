"""How long to wait before trying again: exponential backoff with full jitter.

Jitter spreads the retries of a burst of jobs that failed together (an upstream that fell over
under all of them at once) instead of sending them back in one wave; full jitter (a uniform draw
from zero to the exponential bound) spreads them the most for the least added wait on average.
"""

from __future__ import annotations

import random


def full_jitter(attempt: int, *, base: float, cap: float) -> float:
    """Seconds to wait before try number `attempt + 1`, given `attempt` tries so far (1 or more)."""
    return random.uniform(0.0, min(cap, base * 2 ** max(0, attempt - 1)))
