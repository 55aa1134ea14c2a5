"""The hub's control events: the reserved ``sluiceway.*`` event types, for servers and clients.

A server sends them in-band; a client recognises them with :func:`parse_reset` and
:func:`is_control`, so that "events were lost" is never mistaken for ordinary data.

Control events are *named* events: an ``EventSource`` dispatches them only to a listener for
that name (never to ``onmessage``), yet takes their ``id:`` as its last event id. That is why
:data:`POSITION_EVENT` is a named event with data rather than an ``id:``-only block: every
client honours the id of a dispatched event, while some (the npm ``eventsource`` package)
ignore an ``id:`` that comes without data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from sluiceway.sse import Event, encode_event

#: Event types starting with this prefix are reserved for the hub's own control events.
RESERVED_EVENT_PREFIX = "sluiceway."

#: Resume was not exact: the topics listed in the data lost events (README, "Resume and reset").
RESET_EVENT = "sluiceway.reset"

#: The first event of a stream whose client came without an id (README, "Resume and reset"):
#: its id is where the stream starts, so that a client cut before any event resumes exactly.
POSITION_EVENT = "sluiceway.position"

#: The producer of a stream failed after the response had begun; the stream then ends.
ERROR_EVENT = "sluiceway.error"


def is_control(event: Event) -> bool:
    """Whether ``event`` is one of the hub's control events rather than published data."""
    return event.event is not None and event.event.startswith(RESERVED_EVENT_PREFIX)


def encode_position(cursor: str) -> bytes:
    """The :data:`POSITION_EVENT` frame for a stream that starts at ``cursor``.

    >>> encode_position("3f9a1c07-0")
    b'id: 3f9a1c07-0\\nevent: sluiceway.position\\ndata: {"position":"3f9a1c07-0"}\\n\\n'
    """
    data = orjson.dumps({"position": cursor}).decode()
    return encode_event(data, event=POSITION_EVENT, id=cursor)


@dataclass(frozen=True, slots=True)
class TopicReset:
    """One topic whose events between ``requested`` and ``resumed_at`` are gone."""

    topic: str
    #: ``expired``, ``unknown_epoch`` or ``unknown_position``.
    reason: str
    requested: str
    earliest: str | None
    resumed_at: str | None


@dataclass(frozen=True, slots=True)
class Reset:
    """A parsed reset event: which topics lost events, and the id the stream goes on from."""

    topics: tuple[TopicReset, ...]
    event_id: str


def parse_reset(event: Event) -> Reset | None:
    """The reset carried by ``event``, or ``None`` when it is not a reset event.

    >>> e = Event(data='{"topics":[{"topic":"news","reason":"expired","requested":"a-1",'
    ...           '"earliest":"a-40","resumed_at":"a-57"}]}', event="sluiceway.reset", id="a-57")
    >>> parse_reset(e).topics[0].reason
    'expired'
    """
    if event.event != RESET_EVENT or event.data is None:
        return None
    try:
        payload: Any = orjson.loads(event.data)
        topics = tuple(
            TopicReset(
                topic=str(item["topic"]),
                reason=str(item["reason"]),
                requested=str(item.get("requested", "")),
                earliest=item.get("earliest"),
                resumed_at=item.get("resumed_at"),
            )
            for item in payload["topics"]
        )
    except (ValueError, KeyError, TypeError):
        # Still a reset: events were lost even if the details are unreadable.
        topics = ()
    return Reset(topics=topics, event_id=event.id or "")
