"""Everything the Bing fake keeps between requests, in one place so reset is one call."""

from __future__ import annotations

from dataclasses import dataclass, field

from .blobs import Blobs
from .conversations import Conversations
from .creator import Creator
from .faults import Faults
from .observe import Observer


@dataclass(slots=True)
class BingState:
    conversations: Conversations
    blobs: Blobs = field(default_factory=Blobs)
    creator: Creator = field(default_factory=Creator)
    faults: Faults = field(default_factory=Faults)
    observer: Observer = field(default_factory=Observer)

    def counts(self) -> dict[str, int]:
        return {"live_conversations": len(self.conversations), "blobs": self.blobs.count(),
                "image_jobs": len(self.creator.jobs)}

    def reset(self) -> None:
        self.conversations.reset()
        self.blobs.reset()
        self.creator.reset()
        self.faults.reset()
        self.observer.reset()
