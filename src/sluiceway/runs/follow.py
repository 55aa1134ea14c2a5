"""Read a run back from the hub, replayed then live, until it ends.

Holding one of these iterators counts as following the run (it is not abandoned). They end
at the run's last event (``done`` or ``error``), not when the topic is marked finished: a run
going on in another process (the Redis backend) is read here through a mirror of its topic,
which that process's ``finish`` does not reach.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

import orjson

from sluiceway.hub import Hub
from sluiceway.runs.items import TERMINAL_EVENTS
from sluiceway.sse import Event, Parser, encode_event


class Followable(Protocol):
    """A run here or in another process: its topic is what is read."""

    @property
    def topic(self) -> str: ...


async def run_batches(
    hub: Hub, run: Followable, last_event_id: str | None = None
) -> AsyncIterator[list[Event]]:
    """The events of ``run`` after ``last_event_id`` (from the first one when None),
    in the batches they became available: a reader that was behind gets everything pending at
    once, and can answer it with one write."""
    subscription = await hub.subscribe([run.topic], last_event_id, from_start=last_event_id is None)
    parser = Parser()
    async with subscription:
        async for chunk in subscription:
            events = parser.feed(chunk)
            if events:
                yield events
                if events[-1].event in TERMINAL_EVENTS:
                    return


async def run_stream(
    hub: Hub, run: Followable, last_event_id: str | None = None
) -> AsyncIterator[Event]:
    """The events of ``run`` after ``last_event_id``, one by one."""
    async for batch in run_batches(hub, run, last_event_id):
        for event in batch:
            yield event


async def run_frames(
    hub: Hub, run: Followable, last_event_id: str | None = None
) -> AsyncIterator[bytes]:
    """The events of ``run`` as SSE frames with their ids, ending after the last."""
    async for batch in run_batches(hub, run, last_event_id):
        yield b"".join(encode_event(e.data, event=e.event, id=e.id) for e in batch)


async def run_events(hub: Hub, run: Followable) -> AsyncIterator[tuple[str, Any]]:
    """Every event of ``run`` as (event type, data): parsed when it is JSON (every event of
    the run's own is), else the text as it is."""
    async for event in run_stream(hub, run):
        data = event.data or ""
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            value = data
        yield event.event or "message", value
