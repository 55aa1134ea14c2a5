"""``Generations``: the gateway's LLM answers, as runs of a provider's stream.

>>> generations = Generations(hub, provider, GenerationLimits(), metrics)   # doctest: +SKIP
>>> generation = generations.start(ChatRequest(messages=[...]), owner=...)  # doctest: +SKIP
>>> await generation.opened        # the first token arrived (or it ended before one)
>>> # clients follow generation.topic; generations.runs.cancel(generation.id)

A generation is a :class:`~sluiceway.runs.Run` (family ``gen``) whose producer is
:func:`~sluiceway.gateway.generation.provider_chunks`: detach, resume, cancel (from any process),
abandonment, retention and the directory are the runs', the same as for an application's own
runs. This module adds what is the gateway's own: the provider, ``max_tokens``, the metrics.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sluiceway.gateway.generation import FAMILY, provider_chunks
from sluiceway.gateway.limits import GenerationLimits
from sluiceway.gateway.stats import GenerationMetrics
from sluiceway.hub import Hub
from sluiceway.llm.providers.base import Provider
from sluiceway.llm.request import ChatRequest
from sluiceway.runs import RemoteRun, Run, RunDirectory, RunRefused, Runs


class GenerationRefused(Exception):
    """Not started: ``status`` (400, 429, 503) and ``code`` say why."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


class Generations:
    """The generations of one server (or app): runs of ``provider``'s answers, at most
    ``max_concurrent`` going, each cancelled (or left to finish) when nobody has followed it
    for ``abandon_after`` seconds, each kept replayable for ``retention`` seconds after it
    ended."""

    def __init__(
        self,
        hub: Hub,
        provider: Provider,
        limits: GenerationLimits,
        metrics: GenerationMetrics,
        directory: RunDirectory | None = None,
    ) -> None:
        self.hub = hub
        self.provider = provider
        self.limits = limits
        self.runs = Runs(
            hub,
            family=FAMILY,
            limits=limits.run_limits(),
            directory=directory,
            observer=metrics,
        )

    @property
    def directory(self) -> RunDirectory:
        """Shares generations (and AI SDK chats) with other processes; a no-op in one."""
        return self.runs.directory

    @property
    def running(self) -> int:
        return self.runs.running

    def start(
        self,
        request: ChatRequest,
        *,
        partial_json: bool = False,
        background: bool = False,
        annotations: Mapping[str, Any] | None = None,
        owner: str | None = None,
    ) -> Run:
        """Start a generation (it runs detached); raises :class:`GenerationRefused`.
        ``background``: it runs to its end even when nobody follows it. ``annotations``:
        what a wire format needs to describe it again, from any process (JSON). ``owner``:
        whose it is (:func:`~sluiceway.auth.resources.owner_of`)."""
        if request.max_tokens > self.limits.max_tokens:
            raise GenerationRefused(
                400, "max_tokens_too_large", f"max_tokens may be at most {self.limits.max_tokens}"
            )
        meta = {
            "model": request.model or self.provider.default_model,
            "provider": self.provider.name,
        }
        try:
            return self.runs.start(
                provider_chunks(self.provider, request),
                owner=owner,
                background=background,
                meta=meta,
                annotations=annotations,
                partial_json=partial_json,
            )
        except RunRefused as exc:
            code = "too_many_generations" if exc.status == 429 else exc.code
            detail = exc.detail.replace("runs", "generations")
            raise GenerationRefused(exc.status, code, detail) from None

    def get(self, generation_id: str) -> Run | None:
        """A generation of this process."""
        return self.runs.get(generation_id)

    async def find(self, generation_id: str) -> Run | RemoteRun | None:
        """A generation of this process, or of another one that shares the directory."""
        return await self.runs.find(generation_id)

    def cancel(self, generation_id: str) -> Run | None:
        return self.runs.cancel(generation_id)

    async def cancel_anywhere(self, generation_id: str) -> Run | RemoteRun | None:
        return await self.runs.cancel_anywhere(generation_id)

    async def start_sharing(self) -> None:
        await self.runs.start_sharing()

    async def aclose(self) -> None:
        """End every running generation (state ``shutdown``), then close the provider."""
        await self.runs.aclose()
        await self.provider.aclose()
