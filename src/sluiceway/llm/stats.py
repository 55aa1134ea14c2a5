"""Prometheus metrics of generations, labelled by provider and model."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_GAP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_RATE_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 5000)


class GenerationMetrics:
    """The generation metrics of one server, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["provider", "model"]
        self.first_token = Histogram(
            "sluiceway_llm_time_to_first_token_seconds",
            "From the request to the first chunk of the provider.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.inter_token = Histogram(
            "sluiceway_llm_inter_token_seconds",
            "Between two consecutive chunks of a generation.",
            labels,
            buckets=_GAP_BUCKETS,
            registry=registry,
        )
        self.tokens_per_second = Histogram(
            "sluiceway_llm_tokens_per_second",
            "Output tokens per second of each finished generation, after the first token.",
            labels,
            buckets=_RATE_BUCKETS,
            registry=registry,
        )
        self.active = Gauge(
            "sluiceway_llm_active_generations",
            "Generations running now.",
            labels,
            registry=registry,
        )
        self.finished = Counter(
            "sluiceway_llm_generations",
            "Generations ended, by outcome: completed, cancelled, abandoned, time_limit, error.",
            [*labels, "outcome"],
            registry=registry,
        )
        self.errors = Counter(
            "sluiceway_llm_errors",
            "Generation errors by kind (unauthorized, rate_limited, timeout, upstream_error...).",
            [*labels, "kind"],
            registry=registry,
        )
        self.output_tokens = Counter(
            "sluiceway_llm_output_tokens", "Output tokens streamed.", labels, registry=registry
        )
