"""What the sandbox keeps between requests: settings, the event log, fault counters, stored images."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field

from .config import Settings
from .directives import Directives
from .events import EventLog, FailCounter
from .imagestore import ImageStore


@dataclass(slots=True)
class State:
    settings: Settings
    events: EventLog = field(default_factory=EventLog)
    fails: FailCounter = field(default_factory=FailCounter)
    defaults: Directives = field(default_factory=dict)  # POST /_sandbox/config
    images: ImageStore = field(default_factory=ImageStore)  # the PNGs behind `url` answers
    boot: str = field(default_factory=lambda: os.urandom(4).hex())  # ids stay unique across restarts
    counter: itertools.count[int] = field(default_factory=itertools.count)
    expected_auth: bytes | None = field(init=False, default=None)  # the whole Authorization header value

    def __post_init__(self) -> None:
        key = self.settings.api_key
        self.expected_auth = b"Bearer " + key.encode() if key else None

    def authorized(self, auth: bytes | None) -> bool:
        expected = self.expected_auth
        if expected is None or auth == expected:
            return True
        # the scheme is case-insensitive (RFC 9110); the exact match above is the fast path
        return auth is not None and auth[:7].lower() == b"bearer " and auth[7:] == expected[7:]

    def next_id(self, prefix: str) -> str:
        return prefix + self.boot + f"{next(self.counter):x}"
