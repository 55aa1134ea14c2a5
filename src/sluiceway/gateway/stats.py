"""Prometheus metrics of generations, labelled by provider and model.

:class:`GenerationMetrics` observes the runs of generations (``sluiceway.runs.RunObserver``):
time to the first token, the gap between tokens, tokens per second, outcomes and errors.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from sluiceway.llm.chunks import TextDelta, ToolCallDelta
from sluiceway.runs.run import RunState

if TYPE_CHECKING:
    from sluiceway.runs.run import Run

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
        self.inter_token = GapHistogram(
            "sluiceway_llm_inter_token_seconds",
            "Between two consecutive chunks of a generation.",
            _GAP_BUCKETS,
        )
        registry.register(self.inter_token)
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
        #: Per running generation: its inter-token counts and the time of its last token.
        self._gaps: dict[str, tuple[GapCounts, float | None]] = {}

    # -- as a runs observer (sluiceway.runs.RunObserver) ---------------------------------------

    def started(self, run: Run) -> None:
        labels = _labels(run)
        self.active.labels(**labels).inc()
        # Looked up once: this one is observed per token.
        self._gaps[run.id] = (self.inter_token.counts(labels["provider"], labels["model"]), None)

    def first_item(self, run: Run, delay: float) -> None:
        self.first_token.labels(**_labels(run)).observe(delay)

    def item(self, run: Run, item: object, now: float) -> None:
        if not isinstance(item, TextDelta | ToolCallDelta):
            return
        counts, previous = self._gaps[run.id]
        if previous is not None:
            counts.observe(now - previous)
        self._gaps[run.id] = (counts, now)

    def ended(self, run: Run) -> None:
        self._gaps.pop(run.id, None)
        labels = _labels(run)
        self.active.labels(**labels).dec()
        outcome = "error" if run.state is RunState.FAILED else run.state.value
        self.finished.labels(**labels, outcome=outcome).inc()
        if run.error is not None:
            self.errors.labels(**labels, kind=run.error[0]).inc()
        self.output_tokens.labels(**labels).inc(run.encoder.output_tokens)
        rate = run.tokens_per_second()
        if rate is not None:
            self.tokens_per_second.labels(**labels).observe(rate)


class GapCounts:
    """One label set's histogram: counts per bucket (the last one: beyond every bound)."""

    __slots__ = ("bounds", "buckets", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.buckets = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.buckets[bisect_left(self.bounds, value)] += 1
        self.sum += value


class GapHistogram(Collector):
    """A Prometheus histogram observed once per token: plain counters, without the lock and
    the per-bucket loop of ``prometheus_client.Histogram.observe`` (a tenth of the gateway's
    CPU, flat out). One event loop writes them; ``collect`` reads a consistent-enough copy."""

    def __init__(self, name: str, documentation: str, bounds: tuple[float, ...]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = bounds
        self._by_labels: dict[tuple[str, str], GapCounts] = {}

    def counts(self, provider: str, model: str) -> GapCounts:
        found = self._by_labels.get((provider, model))
        if found is None:
            found = self._by_labels[(provider, model)] = GapCounts(self.bounds)
        return found

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=["provider", "model"])
        for (provider, model), counts in list(self._by_labels.items()):
            cumulative, total = [], 0
            for bound, count in zip([*map(str, self.bounds), "+Inf"], counts.buckets, strict=True):
                total += count
                cumulative.append((bound, total))
            family.add_metric([provider, model], cumulative, counts.sum)
        yield family


def _labels(run: Run) -> dict[str, str]:
    return {"provider": str(run.meta.get("provider", "")), "model": run.model}
