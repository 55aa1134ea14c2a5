"""``Generations``: starts generations within limits, finds them again, and watches them.

>>> generations = Generations(hub, provider, GenerationLimits(), metrics)   # doctest: +SKIP
>>> generation = generations.start(ChatRequest(messages=[...]))             # doctest: +SKIP
>>> await generation.opened        # the first token arrived (or its error is raised)
>>> # clients follow the hub topic generation.topic; generations.cancel(generation.id)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from sluiceway.hub import Hub, TopicBounds
from sluiceway.llm.generation import TOPIC_PREFIX, Generation, State
from sluiceway.llm.limits import GenerationLimits
from sluiceway.llm.providers.base import Provider
from sluiceway.llm.request import ChatRequest
from sluiceway.llm.stats import GenerationMetrics

logger = logging.getLogger("sluiceway.llm")

#: How often running generations are checked for watchers and finished ones for retention.
SWEEP_INTERVAL = 0.25


class GenerationRefused(Exception):
    """Not started: ``status`` (400, 429) and ``code`` say why."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


def generation_topic_bounds(limits: GenerationLimits) -> TopicBounds:
    """Hub bounds for generation topics: the whole answer stays replayable for ``retention``.

    Each token is one event; tool-call and partial events come on top, hence the margin.
    """
    return TopicBounds(
        TOPIC_PREFIX + "*",
        history_size=4 * limits.max_tokens + 64,
        history_ttl=limits.retention,
        history_bytes=64 * 1024 * 1024,
    )


class Generations:
    """The generations of one server (or app): at most ``max_concurrent`` running, each
    cancelled (or left to finish) when nobody has watched it for ``abandon_after`` seconds,
    each kept replayable for ``retention`` seconds after it ended."""

    def __init__(
        self, hub: Hub, provider: Provider, limits: GenerationLimits, metrics: GenerationMetrics
    ) -> None:
        self.hub = hub
        self.provider = provider
        self.limits = limits
        self.metrics = metrics
        self._by_id: dict[str, Generation] = {}
        self._unwatched_since: dict[str, float] = {}
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def running(self) -> int:
        return sum(1 for g in self._by_id.values() if g.running)

    def start(
        self, request: ChatRequest, *, partial_json: bool = False, background: bool = False
    ) -> Generation:
        """Start a generation (it runs detached); raises :class:`GenerationRefused`.
        ``background``: it runs to its end even when nobody watches it."""
        if request.max_tokens > self.limits.max_tokens:
            raise GenerationRefused(
                400, "max_tokens_too_large", f"max_tokens may be at most {self.limits.max_tokens}"
            )
        if self.running >= self.limits.max_concurrent:
            raise GenerationRefused(
                429,
                "too_many_generations",
                f"{self.limits.max_concurrent} generations are running; try again shortly",
            )
        generation = Generation(
            request,
            self.provider,
            self.hub,
            self.limits,
            self.metrics,
            partial_json=partial_json,
            background=background,
        )
        self._by_id[generation.id] = generation
        generation.start()
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        return generation

    def get(self, generation_id: str) -> Generation | None:
        return self._by_id.get(generation_id)

    def cancel(self, generation_id: str) -> Generation | None:
        """Cancel (idempotent: an ended generation is returned as it is); None if unknown."""
        generation = self._by_id.get(generation_id)
        if generation is not None:
            generation.stop(State.CANCELLED)
        return generation

    async def aclose(self) -> None:
        """Cancel every running generation, wait for them to end, close the provider."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        running = [g for g in self._by_id.values() if g.running]
        for generation in running:
            generation.stop(State.CANCELLED)
        tasks = [g.task for g in running if g.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        await self.provider.aclose()

    async def _sweep(self) -> None:
        while self._by_id:
            await asyncio.sleep(SWEEP_INTERVAL)
            try:
                self._check(time.monotonic())
            except Exception:  # keep watching: abandonment and retention depend on it
                logger.exception("generation sweep failed")

    def _check(self, now: float) -> None:
        limits = self.limits
        for generation_id, generation in list(self._by_id.items()):
            if not generation.running:
                self._unwatched_since.pop(generation_id, None)
                ended = generation.finished_at
                if ended is not None and now - ended > limits.retention:
                    del self._by_id[generation_id]
                continue
            if generation.background or self.hub.subscriber_count(generation.topic):
                self._unwatched_since.pop(generation_id, None)
                continue
            since = self._unwatched_since.setdefault(generation_id, now)
            if now - since >= limits.abandon_after and limits.on_abandon == "cancel":
                with contextlib.suppress(Exception):
                    generation.stop(State.ABANDONED)
