"""Prometheus metrics, read from the hub's plain counters at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sluiceway.asgi import open_stream_count
from sluiceway.centrifugo import CentrifugoEndpoint
from sluiceway.hub import Hub


class HubCollector(Collector):
    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def collect(self) -> Iterator[Metric]:
        stats = self.hub.stats
        yield GaugeMetricFamily(
            "sluiceway_open_streams",
            "Event streams open now.",
            value=self.hub.open_streams + open_stream_count(),
        )
        yield GaugeMetricFamily(
            "sluiceway_topics", "Topics held by the hub.", value=len(self.hub.topic_names())
        )
        yield CounterMetricFamily(
            "sluiceway_events_published", "Events published.", value=stats.published
        )
        yield CounterMetricFamily(
            "sluiceway_events_delivered",
            "Events handed to subscribers' connections (one per subscriber per event).",
            value=stats.delivered,
        )
        yield CounterMetricFamily(
            "sluiceway_bytes_sent", "Bytes written to event streams.", value=stats.bytes_sent
        )
        slow = CounterMetricFamily(
            "sluiceway_slow_subscriber_disconnects",
            "Subscribers disconnected for being too slow.",
            labels=["reason"],
        )
        slow.add_metric(["overflow"], stats.overflow_disconnects)
        slow.add_metric(["write_timeout"], stats.write_timeout_disconnects)
        yield slow
        yield CounterMetricFamily(
            "sluiceway_skipped_to_latest",
            "Times a slow subscriber of a keep-latest topic skipped ahead.",
            value=stats.skipped_to_latest,
        )
        yield CounterMetricFamily(
            "sluiceway_resets", "Streams that began with a reset event.", value=stats.resets
        )
        yield CounterMetricFamily(
            "sluiceway_streams_opened", "Hub subscriptions opened.", value=stats.streams_opened
        )
        if self.hub.backend is not None:
            yield GaugeMetricFamily(
                "sluiceway_backend_up",
                "1 while the shared backend (Redis) is reachable.",
                value=1 if self.hub.healthy else 0,
            )
            yield CounterMetricFamily(
                "sluiceway_backend_refills",
                "Times a mirrored topic was refilled from the backend after missed notifications.",
                value=self.hub.backend_refills,
            )


class CentrifugoCollector(Collector):
    def __init__(self, endpoint: CentrifugoEndpoint) -> None:
        self.endpoint = endpoint

    def collect(self) -> Iterator[Metric]:
        stats = self.endpoint.stats
        yield GaugeMetricFamily(
            "sluiceway_ws_connections",
            "WebSocket connections open now.",
            value=len(self.endpoint.connections),
        )
        yield CounterMetricFamily(
            "sluiceway_ws_publications_delivered",
            "Publications handed to WebSocket connections (one per connection per event).",
            value=stats.delivered,
        )
        commands = CounterMetricFamily(
            "sluiceway_ws_commands", "WebSocket commands received.", labels=["method"]
        )
        for method, count in sorted(stats.commands.items()):
            commands.add_metric([method], count)
        yield commands
        disconnects = CounterMetricFamily(
            "sluiceway_ws_disconnects",
            "WebSocket connections ended, by disconnect code (3000: the client left).",
            labels=["code"],
        )
        for code, count in sorted(stats.disconnects.items()):
            disconnects.add_metric([str(code)], count)
        yield disconnects


def metrics_registry(hub: Hub) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(HubCollector(hub))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
