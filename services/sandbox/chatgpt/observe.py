"""What tests read back: every request the fake got, in arrival order (never a token or cookie), and
per-user counters, among them the highest number of concurrent conversation turns ever seen."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

_KEPT = 10_000  # requests remembered; the oldest go first

Record = dict[str, Any]


class Observer:
    def __init__(self) -> None:
        self.requests: deque[Record] = deque(maxlen=_KEPT)
        self.stats: dict[str, dict[str, int]] = {}
        self._active: dict[str, int] = {}

    def open(self, method: str, path: str) -> Record:
        record: Record = {
            "user": None, "method": method, "path": path, "action": None, "conversation_id": None,
            "parent_message_id": None, "model": None, "messages": [], "status": None, "finish": None,
            "started": time.time(), "ended": None,
        }
        self.requests.append(record)
        return record

    def _of(self, user: str) -> dict[str, int]:
        stats = self.stats.get(user)
        if stats is None:
            stats = self.stats[user] = {"max_concurrent": 0, "turns": 0, "session_calls": 0}
        return stats

    def enter(self, user: str) -> int:
        """A conversation request of `user` starts; how many of theirs are now in flight (this one too)."""
        active = self._active.get(user, 0) + 1
        self._active[user] = active
        stats = self._of(user)
        stats["max_concurrent"] = max(stats["max_concurrent"], active)
        return active

    def leave(self, user: str) -> None:
        self._active[user] -= 1

    def turn(self, user: str) -> None:
        self._of(user)["turns"] += 1

    def session_call(self, user: str) -> None:
        self._of(user)["session_calls"] += 1

    def reset(self) -> None:
        self.requests.clear()
        self.stats.clear()
        # in-flight requests keep their slots: their `leave` still comes
        self._active = {user: n for user, n in self._active.items() if n}
