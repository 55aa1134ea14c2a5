"""Plain counters of the hub, read by the metrics endpoint at scrape time.

Plain ints rather than Prometheus counters on the hot path: incrementing an int costs nothing,
a Prometheus counter takes a lock on every increment.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class HubStats:
    published: int = 0
    delivered: int = 0
    bytes_sent: int = 0
    overflow_disconnects: int = 0
    write_timeout_disconnects: int = 0
    skipped_to_latest: int = 0
    resets: int = 0
    streams_opened: int = 0
