"""Read a run back from the hub, replayed then live, until it ends.

Holding one of these iterators counts as following the run (it is not abandoned). They end
at the run's last event (one of its ``terminal_events``: ``done`` or ``error``; a job's
``result`` or ``error``), not when the topic is marked finished: a run going on in another
process (the Redis backend) is read here through a mirror of its topic, which that process's
``finish`` does not reach.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from sluiceway.hub import Hub
from sluiceway.sse import Event, Parser, encode_event

if TYPE_CHECKING:
    from sluiceway.hub import RetainedTopic

#: At most this many events in one batch (one write of a reader that fell behind).
BATCH = 1024
#: One stored event: its type (None: ``message``) and its data.
Record = tuple[str | None, str]
Span = tuple["RetainedTopic | None", Any, int]


class Followable(Protocol):
    """A run here or in another process: its topic is what is read, until one of its
    terminal events."""

    @property
    def topic(self) -> str: ...

    @property
    def terminal_events(self) -> frozenset[str]: ...


async def run_batches(
    hub: Hub, run: Followable, last_event_id: str | None = None, *, position: bool = False
) -> AsyncIterator[list[Event]]:
    """The events of ``run`` after ``last_event_id`` (from the first one when None),
    in the batches they became available: a reader that was behind gets everything pending at
    once, and can answer it with one write. Read from the topic's records, not re-parsed from
    SSE frames. A reset event comes first when the hub could not resume from
    ``last_event_id``; with ``position`` (for a stream sent to a client), the
    ``sluiceway.position`` event when ``last_event_id`` is None, as a hub stream starts."""
    async for topic, after, upto in _spans(hub, run, last_event_id, position):
        if topic is None:  # the hub's control event, as its readers see it
            yield Parser().feed(after)
            continue
        epoch = topic.epoch
        events = []
        for offset in range(after + 1, upto + 1):
            event, data, _ = topic.record_at(offset)
            events.append(Event(data=data, event=event, id=f"{epoch}-{offset}"))
        yield events


async def run_records(hub: Hub, run: Followable) -> AsyncIterator[list[Record]]:
    """The events of ``run`` from its first, as ``(type, data)`` (type None: ``message``):
    what a wire format encodes, without building an :class:`Event` for each."""
    async for topic, after, upto in _spans(hub, run, None, False):
        if topic is not None:
            yield [topic.record_at(offset)[:2] for offset in range(after + 1, upto + 1)]


async def _spans(
    hub: Hub, run: Followable, last_event_id: str | None, position: bool
) -> AsyncIterator[Span]:
    """``(topic, after, upto)``: the offsets to read now, until the run's last event; or
    ``(None, frame, 0)`` first: the reset event when the hub could not resume from
    ``last_event_id``, and with ``position`` the position event when it is None."""
    subscription = await hub.subscribe([run.topic], last_event_id, from_start=last_event_id is None)
    topic = subscription.log
    async with subscription:
        if subscription.lost or position:
            opening = subscription.opening()
            if opening:
                yield None, opening, 0
        while True:
            taken = subscription.take(BATCH)
            if taken is None:
                if subscription.closed:
                    return
                await subscription.wait()
                continue
            after, upto = taken
            yield topic, after, upto
            if topic.record_at(upto)[0] in run.terminal_events:
                return


async def run_stream(
    hub: Hub, run: Followable, last_event_id: str | None = None, *, position: bool = False
) -> AsyncIterator[Event]:
    """The events of ``run`` after ``last_event_id``, one by one (``position``: see
    :func:`run_batches`)."""
    async for batch in run_batches(hub, run, last_event_id, position=position):
        for event in batch:
            yield event


async def run_frames(
    hub: Hub, run: Followable, last_event_id: str | None = None
) -> AsyncIterator[bytes]:
    """The events of ``run`` as SSE frames with their ids, ending after the last; started
    as a hub stream is (:meth:`~sluiceway.hub.Subscription.opening`)."""
    async for batch in run_batches(hub, run, last_event_id, position=True):
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
