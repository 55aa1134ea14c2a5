"""The hub's bounds, each with its policy, in one place."""

from __future__ import annotations

import dataclasses
import fnmatch
from dataclasses import dataclass, field
from enum import StrEnum


class OverflowPolicy(StrEnum):
    """What happens to a subscriber that falls further behind than its buffer allows.

    ``close``: its stream ends; the client reconnects with its last id and replays the rest from
    history, so nothing is lost as long as history still holds it (else it gets a reset event).
    ``keep_latest``: it skips ahead to the newest event (dashboards, tickers); the skipped
    events are never sent to it, and the gap is visible in the ids.
    """

    CLOSE = "close"
    KEEP_LATEST = "keep_latest"


@dataclass(frozen=True, slots=True)
class TopicBounds:
    """History and buffer bounds for the topics whose name matches ``pattern`` (fnmatch),
    replacing the hub-wide ones that are given here.

    >>> TopicBounds("sluiceway.gen:*", history_size=10_000, history_ttl=600.0)  # doctest: +ELLIPSIS
    TopicBounds(pattern='sluiceway.gen:*', history_size=10000, history_ttl=600.0, ...)
    """

    pattern: str
    history_size: int | None = None
    history_ttl: float | None = None
    history_bytes: int | None = None
    buffer_events: int | None = None
    buffer_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class HubConfig:
    """Bounds of a :class:`~sluiceway.hub.Hub`.

    Memory: every topic keeps at most ``history_size`` events and ``history_bytes`` bytes of
    encoded events; subscribers do not copy events, they read the topic's history through a
    cursor, so a subscriber costs a few hundred bytes however far behind it is. A subscriber may
    lag at most ``buffer_events`` / ``buffer_bytes`` behind the newest event (and never further
    than history reaches); past that, its topic's :class:`OverflowPolicy` applies.
    """

    history_size: int = 1000
    history_ttl: float = 3600.0
    history_bytes: int = 16 * 1024 * 1024
    buffer_events: int = 1000
    buffer_bytes: int = 1024 * 1024
    #: Largest single write to one subscriber; a subscriber that is behind gets its backlog in
    #: writes of about this size.
    max_chunk_bytes: int = 64 * 1024
    #: A subscriber whose socket accepts nothing for this long is dropped.
    write_timeout: float = 30.0
    #: Keep-alive comment after this many idle seconds.
    ping_interval: float = 15.0
    #: Most topics that may exist at once (a topic with no history and no subscriber is
    #: forgotten, so this bounds the memory of topics created by typos or scans).
    max_topics: int = 100_000
    #: Topic name patterns (fnmatch) that use ``keep_latest`` instead of ``close``.
    keep_latest_topics: tuple[str, ...] = field(default_factory=tuple)
    #: Per-pattern bounds (the first match wins), e.g. a long history for LLM generations.
    topic_bounds: tuple[TopicBounds, ...] = field(default_factory=tuple)
    #: Topic patterns kept in this process even with a shared backend (none by default: runs,
    #: jobs and LLM generations are shared, so that any process can replay, resume and
    #: cancel them).
    process_local_topics: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        positive_ints = ("history_size", "history_bytes", "buffer_events", "buffer_bytes")
        for name in (*positive_ints, "max_topics"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("history_ttl", "write_timeout", "ping_interval"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")

    def for_topic(self, topic: str) -> HubConfig:
        """This config with the bounds of the first :class:`TopicBounds` matching ``topic``."""
        for bounds in self.topic_bounds:
            if fnmatch.fnmatchcase(topic, bounds.pattern):
                changes = {
                    f.name: getattr(bounds, f.name)
                    for f in dataclasses.fields(bounds)
                    if f.name != "pattern" and getattr(bounds, f.name) is not None
                }
                return dataclasses.replace(self, **changes)
        return self

    def history_bounds(self, topic: str) -> tuple[int, float]:
        """(history size, history TTL) of ``topic``, for a backend that stores history."""
        found = self.for_topic(topic)
        return found.history_size, found.history_ttl

    def is_process_local(self, topic: str) -> bool:
        if not self.process_local_topics:  # the default: asked on every publish
            return False
        return any(fnmatch.fnmatchcase(topic, pattern) for pattern in self.process_local_topics)

    def overflow_policy(self, topic: str) -> OverflowPolicy:
        if any(fnmatch.fnmatchcase(topic, pattern) for pattern in self.keep_latest_topics):
            return OverflowPolicy.KEEP_LATEST
        return OverflowPolicy.CLOSE
