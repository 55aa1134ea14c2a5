"""Event ids: the contract between the hub and every client that resumes.

Every event stored in a topic has a *position*: the topic's ``epoch`` (a random token chosen
when the topic's history came into being) and an ``offset`` (1, 2, 3, ... within that epoch).
On the SSE wire a position is written ``<epoch>-<offset>``, e.g. ``3f9a1c07-42``.

A stream that follows several topics needs one resumable cursor for all of them, because the
browser sends back only the last id it saw. Its ids are the positions of every followed topic,
in the sorted order of the topic names, joined by commas: ``3f9a1c07-42,b71e0d2a-7``.
A stream that follows one topic therefore uses plain positions, and a cursor of one position is
exactly an event id of that topic.

Why an epoch: offsets restart from 1 when a history is lost (process restart with the in-memory
backend, a Redis flush). A bare offset would then silently point into a different history; with
the epoch the hub notices and sends an explicit reset instead of a partial replay.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

_POSITION = re.compile(r"([0-9a-z]{1,32})-([0-9]{1,18})")


class InvalidEventId(ValueError):
    """A ``Last-Event-ID`` (or ``after=``) that is not one of ours."""


def new_epoch() -> str:
    """A fresh epoch: 8 random hex characters."""
    return secrets.token_hex(4)


@dataclass(frozen=True, slots=True)
class Position:
    """Where a reader stands in one topic: after event ``offset`` of history ``epoch``.

    ``offset == 0`` means "before the first event".
    """

    epoch: str
    offset: int

    def __str__(self) -> str:
        return f"{self.epoch}-{self.offset}"

    @classmethod
    def parse(cls, text: str) -> Position:
        """Parse ``<epoch>-<offset>``.

        >>> Position.parse("3f9a1c07-42")
        Position(epoch='3f9a1c07', offset=42)
        """
        match = _POSITION.fullmatch(text)
        if match is None:
            raise InvalidEventId(f"not a sluiceway event id: {text[:80]!r}")
        return cls(match[1], int(match[2]))


def parse_cursor(text: str, topic_count: int) -> list[Position]:
    """Parse a cursor for a stream that follows ``topic_count`` topics (sorted by name).

    >>> parse_cursor("aa-1,bb-2", 2)
    [Position(epoch='aa', offset=1), Position(epoch='bb', offset=2)]
    """
    parts = text.split(",")
    if len(parts) != topic_count:
        raise InvalidEventId(
            f"event id names {len(parts)} topic position(s) but the stream follows {topic_count}"
        )
    return [Position.parse(part) for part in parts]


def format_cursor(positions: list[Position]) -> str:
    """The inverse of :func:`parse_cursor`."""
    return ",".join(map(str, positions))
