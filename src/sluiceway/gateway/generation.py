"""A generation: a provider's answer to a chat request, as a run's producer.

Generations are runs (:mod:`sluiceway.runs`) of the family ``gen``: their items are the
provider's typed chunks, so their streams carry ``start``, ``token`` (``tool_call``,
``partial``...) and end with ``done`` or ``error``, and every LLM face can serve them.
:func:`provider_chunks` is the producer; :class:`~sluiceway.gateway.manager.Generations` starts
them with the gateway's limits.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from sluiceway.llm.chunks import Chunk, Finish, TextDelta, UpstreamError, Usage
from sluiceway.llm.providers.base import Provider
from sluiceway.llm.request import ChatRequest

if TYPE_CHECKING:
    from sluiceway.runs.run import Run

__all__ = ["FAMILY", "TOPIC_PREFIX", "USAGE_GRACE", "first_token", "provider_chunks"]

#: The runs family of generations: their ids are ``gen_...``.
FAMILY = "gen"
#: The hub topic of generation ``id`` is ``TOPIC_PREFIX + id``.
TOPIC_PREFIX = f"sluiceway.{FAMILY}:"
#: Seconds the upstream may take, once ``max_tokens`` deltas came, to send its usage.
USAGE_GRACE = 2.0


async def provider_chunks(provider: Provider, request: ChatRequest) -> AsyncIterator[Chunk]:
    """The provider's chunks for ``request``, at most ``request.max_tokens`` text deltas.

    Past them (a provider that ignores ``max_tokens``), the answer ends with finish reason
    ``length``, and the upstream is read on a little (:data:`USAGE_GRACE`) for its usage,
    which comes last, so that ``usage.prompt_tokens`` is known however the answer stops.
    Closing this iterator closes the upstream request.
    """
    stream = provider.stream(request)
    try:
        texts = 0
        async for chunk in stream:
            if isinstance(chunk, TextDelta):
                if texts >= request.max_tokens:
                    break
                texts += 1
            yield chunk
            if texts >= request.max_tokens and isinstance(chunk, Finish):
                break
        else:
            return
        yield Finish("length")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(USAGE_GRACE):
                async for chunk in stream:
                    if isinstance(chunk, Usage):
                        yield chunk
    finally:
        await stream.aclose()  # closes the upstream request now, whatever happened


async def first_token(generation: Run) -> None:
    """Wait (shielded: the caller leaving does not cancel the generation) until the first
    token came or the generation ended; raise :class:`UpstreamError` when it failed before
    one, so that the failure can still be an HTTP status."""
    await asyncio.shield(generation.opened)
    failure = generation.failure
    if failure is None:
        return
    if isinstance(failure, UpstreamError):
        raise failure
    raise UpstreamError("upstream_error", f"the provider failed: {type(failure).__name__}")
