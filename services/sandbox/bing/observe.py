"""What tests read back: a log of every request (cookie NAMES only, never a value, token or image
bytes) and counters. Bounded: the oldest records go first."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from ..asgi import Scope

MAX_RECORDS = 5_000
ANONYMOUS = "(anonymous)"  # the stats key of conversations without an account (names are [a-z0-9-]+)
_SECRET_HEADERS = frozenset({b"cookie", b"authorization"})

Record = dict[str, Any]


def headers_seen(scope: Scope) -> dict[str, str]:
    """The request's headers, with Cookie replaced by its names and Authorization by a mark."""
    out: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1").lower()
        if raw_name.lower() == b"cookie":
            value = "; ".join(p.strip().partition("=")[0] for p in raw_value.decode("latin-1").split(";") if p.strip())
        elif raw_name.lower() in _SECRET_HEADERS:
            value = "(redacted)"
        else:
            value = raw_value.decode("latin-1")
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


class Observer:
    def __init__(self) -> None:
        self.requests: deque[Record] = deque(maxlen=MAX_RECORDS)
        self.open_websockets = 0
        self.max_open_websockets = 0
        self.websockets = 0
        self.conversations: dict[str, int] = {}  # account (or ANONYMOUS) -> created
        self.chats: dict[str, int] = {}  # account -> invocations answered (any result)

    def record(self, kind: str, path: str, account: str | None, cookie_names: list[str], **extra: Any) -> Record:
        rec: Record = {"kind": kind, "path": path, "account": account, "cookies": cookie_names, "time": time.time(),
                       **extra}
        self.requests.append(rec)
        return rec

    def created(self, account: str | None) -> None:
        key = account or ANONYMOUS
        self.conversations[key] = self.conversations.get(key, 0) + 1

    def chatted(self, account: str | None) -> None:
        key = account or ANONYMOUS
        self.chats[key] = self.chats.get(key, 0) + 1

    def socket_opened(self) -> None:
        self.open_websockets += 1
        self.websockets += 1
        self.max_open_websockets = max(self.max_open_websockets, self.open_websockets)

    def socket_closed(self) -> None:
        self.open_websockets -= 1

    def stats(self, extra: dict[str, int]) -> dict[str, Any]:
        return {"open_websockets": self.open_websockets, "max_open_websockets": self.max_open_websockets,
                "websockets": self.websockets, "conversations": self.conversations, "chats": self.chats, **extra}

    def reset(self) -> None:
        self.requests.clear()
        self.websockets = 0
        self.max_open_websockets = self.open_websockets  # open sockets still close later
        self.conversations = {}
        self.chats = {}
