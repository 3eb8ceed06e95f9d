"""Bounded log of marked requests, for tests to assert on timing and disconnects.

Only requests carrying `mark=ID` are logged, so the unmarked hot path pays nothing. An event is a plain
dict, filled in while the request runs (in-flight events show None for what has not happened yet).
"""

from __future__ import annotations

from collections import deque
from typing import Any

MAX_EVENTS = 10_000

Event = dict[str, Any]


class EventLog:
    def __init__(self, maxlen: int = MAX_EVENTS) -> None:
        self._events: deque[Event] = deque(maxlen=maxlen)

    def open(
        self, *, mark: str, path: str, model: str, stream: bool, authorization_present: bool, received_at: float
    ) -> Event:
        event: Event = {
            "mark": mark,
            "path": path,
            "model": model,
            "stream": stream,
            "authorization_present": authorization_present,  # never the token itself
            "status": None,
            "outcome": None,  # completed | disconnected | aborted | error_event
            "content_chunks": 0,  # stream: token / tool-argument chunks sent
            "received_at": received_at,
            "first_byte_at": None,
            "completed_at": None,
            "disconnected_at": None,
            "aborted_at": None,
        }
        self._events.append(event)
        return event

    def query(self, mark: str | None) -> list[Event]:
        if mark is None:
            return list(self._events)
        return [e for e in self._events if e["mark"] == mark]

    def clear(self) -> None:
        self._events.clear()


class FailCounter:
    """`fail_times=K`: how many requests per mark have been seen, so the first K fail and later ones pass."""

    MAX_MARKS = 10_000

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def hit(self, mark: str) -> int:
        if len(self._seen) >= self.MAX_MARKS and mark not in self._seen:
            self._seen.clear()  # bounded; tests use fresh marks
        count = self._seen.get(mark, 0) + 1
        self._seen[mark] = count
        return count

    def clear(self) -> None:
        self._seen.clear()
