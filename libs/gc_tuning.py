"""Garbage-collector settings for long-running services.

Handling a request allocates many short-lived containers. With CPython's default gen-0 threshold
(700 allocations) a collection runs every few requests, and the older generations' passes walk
every object the process made at start-up (imported modules, settings, tables). Once a service
is up, `gc.freeze()` moves those objects to a permanent generation that collections skip, and a
higher gen-0 threshold makes collections rarer. Reference counting still frees everything
acyclic at once; only garbage in cycles waits a little longer.
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 20_000


def settle_after_startup(gen0_threshold: int = GEN0_THRESHOLD) -> None:
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, gen1, gen2)
