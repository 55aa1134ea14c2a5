"""What the WebSocket endpoint counts (read by ``/metrics``)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(slots=True)
class EndpointStats:
    connections_opened: int = 0
    connects: int = 0
    delivered: int = 0  # publications handed to connections' writers
    filter_evaluations: int = 0  # tags filters evaluated (once per publication and filter)
    commands: dict[str, int] = field(default_factory=dict)
    disconnects: Counter[int] = field(default_factory=Counter)

    def count_disconnect(self, code: int) -> None:
        self.disconnects[code] += 1
