"""Errors the hub raises; the server maps each to an HTTP status."""

from __future__ import annotations

from sluiceway.ids import InvalidEventId, Position

__all__ = [
    "BackendUnavailable",
    "HistoryGone",
    "HubClosed",
    "HubError",
    "InvalidDelta",
    "InvalidEventId",
    "InvalidTopic",
    "TooManyTopics",
    "TopicFinished",
    "TopicNotReady",
]


class HubError(Exception):
    """Base class of the hub's errors."""


class InvalidTopic(HubError, ValueError):
    """A topic name outside the allowed alphabet or length."""


class InvalidDelta(HubError, ValueError):
    """A delta format the hub does not make, or deltas asked for on several topics."""


class HubClosed(HubError):
    """The hub is shutting down and accepts no new publications or subscriptions."""


class TooManyTopics(HubError):
    """Creating another topic would exceed ``HubConfig.max_topics``."""


class TopicFinished(HubError):
    """The topic was marked complete with ``Hub.finish`` and takes no more events."""


class ClaimTaken(HubError):
    """``Hub.publish(..., claim=...)``: an event the topic still holds was published with the
    same claim (with a shared backend, checked atomically across processes)."""


class HistoryGone(HubError):
    """The requested position is no longer (or was never) in this topic's history."""

    def __init__(self, topic: str, requested: str, earliest: Position | None) -> None:
        self.topic = topic
        self.requested = requested
        self.earliest = earliest
        super().__init__(
            f"history of topic {topic!r} no longer holds the events after {requested!r}"
        )


class BackendUnavailable(HubError):
    """The shared backend (Redis) cannot be reached; the server answers 503."""


class TopicNotReady(HubError):
    """``subscribe_nowait`` on a shared topic this process does not mirror yet: use the async
    ``subscribe``, which loads it from the backend first."""
