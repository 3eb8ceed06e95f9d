"""What the edge's routes share: settings, the routing table, the dispatcher, metrics."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.edge.dispatch import Dispatcher
from services.edge.ledger import Ledger
from services.edge.metrics import EdgeMetrics
from services.edge.routing import RoutingTable
from services.edge.settings import EdgeSettings


@dataclass
class EdgeState:
    settings: EdgeSettings
    routing: RoutingTable
    metrics: EdgeMetrics
    dispatcher: Dispatcher = field(init=False)
    ledger: Ledger = field(default_factory=Ledger)
    draining: bool = False

    def model_label(self, requested: str) -> str:
        """A bounded metrics label: only models that are configured or live, never free text."""
        if requested in self.routing.config.aliases or requested in self.routing.live_models():
            return requested
        return "other"
