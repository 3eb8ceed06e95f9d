"""Everything the ChatGPT web fake keeps between requests, in one place so reset is one call."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .auth import Sessions, Tokens
from .faults import Faults
from .observe import Observer
from .store import Store


@dataclass(slots=True)
class FakeState:
    models: tuple[str, ...]  # every slug the fake serves (SANDBOX_CHATGPT_MODELS)
    tokens: Tokens
    sessions: Sessions = field(default_factory=Sessions)
    store: Store = field(default_factory=Store)
    faults: Faults = field(default_factory=Faults)
    observer: Observer = field(default_factory=Observer)
    permitted: dict[str, tuple[str, ...]] = field(default_factory=dict)  # user -> slugs, when restricted
    # (user, conversation id, message id) -> the feedback content so far (text, tags)
    feedback: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)

    def models_of(self, user: str) -> tuple[str, ...]:
        return self.permitted.get(user, self.models)

    def reset(self) -> None:
        # Tokens minted before stay as they were (valid, or revoked): a client holds them across a
        # test's reset, and forgetting them would let a later revoke miss them.
        self.sessions.reset()
        self.store.reset()
        self.faults.reset()
        self.observer.reset()
        self.permitted.clear()
        self.feedback.clear()
