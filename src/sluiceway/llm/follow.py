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


async def generation_batches(
    hub: Hub, generation: Generation, last_event_id: str | None = None
) -> AsyncIterator[list[Event]]:
    """The events of ``generation`` after ``last_event_id`` (from the first one when None),
    in the batches they became available: a reader that was behind gets everything pending at
    once, and can answer it with one write."""
    topic = generation.topic
    subscription = hub.subscribe_nowait([topic], last_event_id or hub.earliest_id(topic))
    parser = Parser()
    async with subscription:
        async for chunk in subscription:
            events = parser.feed(chunk)
            if events:
                yield events


async def generation_stream(
    hub: Hub, generation: Generation, last_event_id: str | None = None
) -> AsyncIterator[Event]:
    """The events of ``generation`` after ``last_event_id``, one by one."""
    async for batch in generation_batches(hub, generation, last_event_id):
        for event in batch:
            yield event


async def generation_events(hub: Hub, generation: Generation) -> AsyncIterator[tuple[str, Any]]:
    """Every event of ``generation`` as (event type, parsed data)."""
    async for event in generation_stream(hub, generation):
        yield event.event or "message", orjson.loads(event.data or "null")
