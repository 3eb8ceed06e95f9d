"""The conversations the fake created: found by their encrypted signature (the websocket's
`sec_access_token`), expiring after the configured time, bounded in number (oldest forgotten first)."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

from . import ids

MAX_CONVERSATIONS = 10_000
MAX_USER_MESSAGES = 30  # `maxNumUserMessagesInConversation` (the sheet's examples say 20 or 30)


@dataclass(slots=True)
class Conversation:
    id: str
    client_id: str
    account: str | None  # None: anonymous
    secret: str  # X-Sydney-Encryptedconversationsignature
    signature: str  # X-Sydney-Conversationsignature
    created: float  # wall clock, for conversationExpiryTime
    expires: float  # monotonic
    ttl: float  # seconds, for conversationExpiryTime
    user_messages: int = 0  # answered turns: the throttling count

    def expired(self) -> bool:
        return time.monotonic() >= self.expires


class Conversations:
    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._by_secret: OrderedDict[str, Conversation] = OrderedDict()

    def create(self, account: str | None) -> Conversation:
        conv = Conversation(
            id=ids.conversation_id(), client_id=ids.client_id(), account=account, secret=ids.signature(64),
            signature=ids.signature(47), created=time.time(), expires=time.monotonic() + self.ttl, ttl=self.ttl,
        )
        self._by_secret[conv.secret] = conv
        while len(self._by_secret) > MAX_CONVERSATIONS:
            self._by_secret.popitem(last=False)
        return conv

    def by_secret(self, secret: str) -> Conversation | None:
        return self._by_secret.get(secret)

    def expire(self, conversation_id: str | None) -> int:
        """Age out one conversation (or all): tests of InvalidSession need not wait hours."""
        n = 0
        for conv in self._by_secret.values():
            if conversation_id is None or conv.id == conversation_id:
                conv.expires = 0.0
                n += 1
        return n

    def __len__(self) -> int:
        return len(self._by_secret)

    def reset(self) -> None:
        self._by_secret.clear()


def ttl_text(seconds: float) -> str:
    """The `Conversations expire after 06:00:00.` form of the InvalidSession message."""
    whole = int(seconds)
    return f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"
