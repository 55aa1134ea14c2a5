"""Read a generation back from the hub as (event, payload) pairs, from its first event."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from sluiceway.hub import Hub
from sluiceway.llm.generation import Generation
from sluiceway.sse import Parser


async def generation_events(hub: Hub, generation: Generation) -> AsyncIterator[tuple[str, Any]]:
    """Every event of ``generation``, replayed then live, until it ends.

    Holding this iterator counts as watching the generation (it is not abandoned).
    """
    subscription = hub.subscribe_nowait([generation.topic], hub.earliest_id(generation.topic))
    parser = Parser()
    async with subscription:
        async for chunk in subscription:
            for event in parser.feed(chunk):
                yield event.event or "message", orjson.loads(event.data or "null")
