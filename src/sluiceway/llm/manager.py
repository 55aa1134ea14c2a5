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
from typing import Any

from sluiceway.hub import Hub, TopicBounds
from sluiceway.llm.directory import GenerationDirectory, RemoteGeneration
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
        self,
        hub: Hub,
        provider: Provider,
        limits: GenerationLimits,
        metrics: GenerationMetrics,
        directory: GenerationDirectory | None = None,
    ) -> None:
        self.hub = hub
        #: Shares generations with other processes (the Redis backend); a no-op otherwise.
        self.directory = directory or GenerationDirectory()
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
        self,
        request: ChatRequest,
        *,
        partial_json: bool = False,
        background: bool = False,
        annotations: dict[str, Any] | None = None,
        owner: str | None = None,
    ) -> Generation:
        """Start a generation (it runs detached); raises :class:`GenerationRefused`.
        ``background``: it runs to its end even when nobody watches it. ``annotations``:
        what a wire format needs to describe it again, from any process (JSON). ``owner``:
        who started it (a token's ``sub``), whose it is to follow and cancel."""
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
            annotations=annotations,
            directory=self.directory,
            owner=owner,
        )
        self._by_id[generation.id] = generation
        generation.start()
        self._ensure_sweeper()
        return generation

    def get(self, generation_id: str) -> Generation | None:
        """A generation of this process."""
        return self._by_id.get(generation_id)

    async def find(self, generation_id: str) -> Generation | RemoteGeneration | None:
        """A generation of this process, or of another one that shares the directory."""
        return self._by_id.get(generation_id) or await self.directory.lookup(generation_id)

    async def cancel_anywhere(self, generation_id: str) -> Generation | RemoteGeneration | None:
        """Cancel a generation wherever it runs (idempotent); None if unknown."""
        local = self.cancel(generation_id)
        if local is not None:
            return local
        remote = await self.directory.lookup(generation_id)
        if remote is not None and remote.running:
            await self.directory.request_cancel(generation_id)
        return remote

    async def start_sharing(self) -> None:
        """Take cancel requests from other processes, and keep telling them which of their
        generations are watched here (with a shared directory)."""
        if self.directory.shared:
            await self.directory.start(self.cancel)
            self._ensure_sweeper()

    def _ensure_sweeper(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

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
        await self.directory.aclose()
        running = [g for g in self._by_id.values() if g.running]
        for generation in running:
            generation.stop(State.CANCELLED)
        tasks = [g.task for g in running if g.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        await self.provider.aclose()

    async def _sweep(self) -> None:
        shared = self.directory.shared
        next_share = 0.0
        while self._by_id or shared:
            await asyncio.sleep(SWEEP_INTERVAL)
            try:
                now = time.monotonic()
                unwatched = self._check(now)
                if shared and (unwatched or now >= next_share):
                    next_share = now + 1.0
                    await self._share_watchers(unwatched)
            except Exception:  # keep watching: abandonment and retention depend on it
                logger.exception("generation sweep failed")

    async def _share_watchers(self, unwatched: list[Generation]) -> None:
        """Mark the other processes' generations read here as watched; abandon this process's
        generations that nobody watches here, unless a reader elsewhere marked them."""
        prefix_length = len(TOPIC_PREFIX)
        read_here = [
            name[prefix_length:]
            for name in self.hub.topic_names()
            if name.startswith(TOPIC_PREFIX)
            and name[prefix_length:] not in self._by_id
            and self.hub.subscriber_count(name)
        ]
        await self.directory.mark_watched(read_here)
        if unwatched:
            elsewhere = await self.directory.watched([g.id for g in unwatched])
            for generation in unwatched:
                if generation.id in elsewhere:
                    self._unwatched_since.pop(generation.id, None)
                else:
                    self._abandon(generation)

    def _abandon(self, generation: Generation) -> None:
        with contextlib.suppress(Exception):
            generation.stop(State.ABANDONED)

    def _check(self, now: float) -> list[Generation]:
        """Retention and abandonment; returns the generations to abandon that a shared
        directory must first confirm nobody watches elsewhere."""
        limits = self.limits
        confirm: list[Generation] = []
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
                if self.directory.shared:
                    confirm.append(generation)
                else:
                    self._abandon(generation)
        return confirm
