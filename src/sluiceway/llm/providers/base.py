"""The provider protocol: one async stream of typed chunks per request."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Protocol

from sluiceway.llm.chunks import Chunk
from sluiceway.llm.request import ChatRequest


class Provider(Protocol):
    """A model provider.

    ``stream()`` returns an async generator: the upstream request is opened on the first
    ``__anext__`` (so an error before the first token surfaces there, as :class:`UpstreamError`)
    and closed as soon as the generator is closed (``aclose()``), which is how a cancelled
    generation stops billing within a second.
    """

    #: ``openai``, ``anthropic``, ``local``: the ``provider`` label of the metrics.
    name: str
    #: The model used when a request names none.
    default_model: str

    def stream(self, request: ChatRequest) -> AsyncGenerator[Chunk, None]: ...

    async def aclose(self) -> None:
        """Release the provider's resources (its connection pool, a local model server)."""
