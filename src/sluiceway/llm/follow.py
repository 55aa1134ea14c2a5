"""Read a generation back from the hub, replayed then live, until it ends.

Holding one of these iterators counts as watching the generation (it is not abandoned).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from sluiceway.hub import Hub
from sluiceway.llm.generation import Generation
from sluiceway.sse import Event, Parser


async def generation_stream(
    hub: Hub, generation: Generation, last_event_id: str | None = None
) -> AsyncIterator[Event]:
    """The events of ``generation`` after ``last_event_id`` (from the first one when None)."""
    topic = generation.topic
    subscription = hub.subscribe_nowait([topic], last_event_id or hub.earliest_id(topic))
    parser = Parser()
    async with subscription:
        async for chunk in subscription:
            for event in parser.feed(chunk):
                yield event


async def generation_events(hub: Hub, generation: Generation) -> AsyncIterator[tuple[str, Any]]:
    """Every event of ``generation`` as (event type, parsed data)."""
    async for event in generation_stream(hub, generation):
        yield event.event or "message", orjson.loads(event.data or "null")
