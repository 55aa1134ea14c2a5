"""A topic: its bounded history, which doubles as every subscriber's send buffer.

Each published event is encoded once into an SSE frame whose ``id:`` line comes last
(``event: ...\\ndata: ...\\nid: <epoch>-<offset>\\n\\n``). Single-topic subscribers send that
frame as it is; multi-topic subscribers send the frame without its id line plus their own cursor.
Subscribers keep only an offset into this log, so fan-out copies nothing.

A stream that asked for deltas (``?delta=fossil``) is sent, for an event that follows the one
it was sent before, the event's *delta frame*: the same frame with a ``delta: fossil`` line and
the Fossil delta from the previous event's data in place of the data. It is made once, when a
first such stream needs it, and kept beside the frame for every other one.
"""

from __future__ import annotations

import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import sluiceway.fossil as fossil
from sluiceway.hub.config import HubConfig
from sluiceway.ids import Position, new_epoch
from sluiceway.sse import LINE_END, encode_event

_NO_TAGS: Mapping[str, str] = {}

#: The one delta format (``delta: fossil``), the name Centrifugo's protocol gives it.
FOSSIL = "fossil"


class Follower(Protocol):
    """What a topic knows of the streams that follow it: they can be woken."""

    def wake(self) -> None: ...


F = TypeVar("F", bound=Follower)


class RetainedTopic(Protocol):
    """A topic's log as readers outside the hub see it: read-only, walked by offset.

    Offsets ``base`` to ``head`` are retained; ``epoch-offset`` is an event's id.
    """

    @property
    def name(self) -> str: ...
    @property
    def epoch(self) -> str: ...
    @property
    def head(self) -> int: ...
    @property
    def base(self) -> int: ...

    def record_at(self, offset: int) -> tuple[str | None, str, float]:
        """``(event, data, published_at)`` of a retained event."""
        ...

    def tags_at(self, offset: int) -> Mapping[str, str]:
        """The tags a retained event was published with (empty without)."""
        ...


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as history returns it."""

    topic: str
    id: str
    offset: int
    event: str | None
    data: str
    published_at: float  # Unix time


class Topic(Generic[F]):
    """One topic's log. Offsets are contiguous: ``_frames[i]`` holds offset ``base + i``.

    ``F`` is the kind of stream that follows it (the hub's :class:`Subscription`); the log only
    wakes them.
    """

    __slots__ = (
        "_cum",
        "_delta_frames",
        "_frames",
        "_records",
        "_tags",
        "_times",
        "base",
        "config",
        "epoch",
        "finished",
        "head",
        "idle_since",
        "name",
        "on_sinks_ready",
        "policy",
        "sinks",
        "subscribers",
        "total_bytes",
        "waiters",
    )

    def __init__(
        self,
        name: str,
        config: HubConfig,
        on_sinks_ready: Callable[[set[F]], None],
        epoch: str | None = None,
        base: int = 1,
    ) -> None:
        self.name = name
        self.config = config
        self.policy = config.overflow_policy(name)
        self.epoch = epoch or new_epoch()
        # A mirror of a shared backend's history may start anywhere (base > 1).
        self.head = base - 1  # offset of the newest event; base - 1 while empty
        self.base = base  # offset of the oldest retained event
        self._frames: list[bytes] = []
        #: Tags of the retained events that have some, by offset (most have none).
        self._tags: dict[int, Mapping[str, str]] = {}
        #: Delta frames made so far, by offset (see the module doc).
        self._delta_frames: dict[int, bytes] = {}
        self._cum: list[int] = []  # bytes published before each retained event
        self._times: list[float] = []  # monotonic publish time of each retained event
        self._records: list[tuple[str | None, str, float]] = []  # (event, data, unix time)
        self.total_bytes = 0
        self.idle_since: float | None = None  # monotonic time since when it has been idle
        self.subscribers: set[F] = set()
        # Subscribers parked until the next event; woken and cleared on publish.
        self.waiters: set[F] = set()
        # Subscribers whose writer is callback-driven: told on every publish.
        self.sinks: set[F] = set()
        self.on_sinks_ready = on_sinks_ready
        self.finished = False  # complete: streams end once they have everything (Hub.finish)

    # -- writing -----------------------------------------------------------------------------

    def append(
        self,
        data: str,
        event: str | None,
        published_at: float | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        """Store one event, wake the waiting subscribers, and return its id.

        ``published_at`` (unix time) is for events published elsewhere (a shared backend):
        their age, not the time they arrived here, counts for the history TTL.  ``tags``
        (string to string) travel with it to the subscribers that read them (WebSocket
        publications, their filters).
        """
        offset = self.head + 1
        if tags:
            self._tags[offset] = tags
        event_id = f"{self.epoch}-{offset}"
        frame = encode_event(data, event=event)[:-1] + b"id: " + event_id.encode() + b"\n\n"
        self._frames.append(frame)
        self._cum.append(self.total_bytes)
        now = time.time()
        if published_at is None:
            self._times.append(time.monotonic())
            self._records.append((event, data, now))
        else:
            self._times.append(time.monotonic() - max(0.0, now - published_at))
            self._records.append((event, data, published_at))
        self.total_bytes += len(frame)
        self.head = offset
        self._trim_to_bounds()
        if self.waiters:
            waiters, self.waiters = self.waiters, set()
            for subscription in waiters:
                subscription.wake()
        if self.sinks:
            self.on_sinks_ready(self.sinks)
        return event_id

    def _trim_to_bounds(self) -> None:
        excess = len(self._frames) - self.config.history_size
        oldest_kept_bytes = self.total_bytes - self.config.history_bytes
        if oldest_kept_bytes > self._cum[0]:
            # Keep the newest events whose bytes fit (always at least the newest one).
            excess = max(excess, min(bisect_left(self._cum, oldest_kept_bytes), len(self._cum) - 1))
        if excess > 0:
            self._drop_oldest(excess)

    def trim_expired(self, now: float) -> None:
        """Drop events older than the history TTL (called periodically)."""
        if self._times and now - self._times[0] > self.config.history_ttl:
            self._drop_oldest(bisect_right(self._times, now - self.config.history_ttl))

    def _drop_oldest(self, count: int) -> None:
        del self._frames[:count], self._cum[:count]
        del self._times[:count], self._records[:count]
        for sparse in (self._tags, self._delta_frames):
            if sparse:
                for offset in range(self.base, self.base + count):
                    sparse.pop(offset, None)
        self.base += count

    # -- reading -----------------------------------------------------------------------------

    @property
    def position(self) -> Position:
        return Position(self.epoch, self.head)

    @property
    def earliest(self) -> Position:
        """The position *before* the oldest retained event: the furthest back one can resume."""
        return Position(self.epoch, self.base - 1)

    def can_resume_from(self, position: Position) -> bool:
        """True when every event after ``position`` is still here (exact resume is possible)."""
        return position.epoch == self.epoch and self.base - 1 <= position.offset <= self.head

    def frames_after(self, offset: int, max_bytes: int) -> tuple[list[bytes], int]:
        """Frames after ``offset`` (which must be resumable), at most about ``max_bytes`` of them
        (always at least one if any), and the offset of the last one returned."""
        start = offset + 1 - self.base
        if start >= len(self._frames):
            return [], offset
        limit = self._cum[start] + max_bytes
        if self.total_bytes <= limit:
            stop = len(self._frames)
        else:
            # _cum[i + 1] is where event i ends: keep the events that end within the limit.
            stop = max(bisect_right(self._cum, limit, lo=start + 1) - 1, start + 1)
        return self._frames[start:stop], offset + (stop - start)

    def frame_at(self, offset: int) -> bytes:
        return self._frames[offset - self.base]

    def delta_frame_at(self, offset: int) -> bytes:
        """The frame of a retained event for a stream with deltas that was sent the event
        before it: with the Fossil delta from that event's data, or the whole frame when the
        previous event is gone or a delta would be no smaller (see the module doc)."""
        frame = self._delta_frames.get(offset)
        if frame is None:
            frame = self._make_delta_frame(offset)
            self._delta_frames[offset] = frame
        return frame

    def _make_delta_frame(self, offset: int) -> bytes:
        whole = self._frames[offset - self.base]
        if offset - 1 < self.base:
            return whole
        event, data, _ = self._records[offset - self.base]
        previous = self._records[offset - 1 - self.base][1]
        if max(len(data), len(previous)) > fossil.MAX_DELTA_INPUT:
            return whole  # characters, not bytes: a bound all the same
        # The texts the client holds: its parser turns every line end into LF.
        origin = LINE_END.sub("\n", previous).encode()
        target = LINE_END.sub("\n", data).encode()
        try:
            # SSE carries text: a literal run that cuts a character in two goes whole.
            delta = fossil.create(origin, target).decode()
        except UnicodeDecodeError:
            return whole
        id_line = f"id: {self.epoch}-{offset}\n\n".encode()
        frame = encode_event(delta, event=event, delta=FOSSIL)[:-1] + id_line
        return frame if len(frame) < len(whole) else whole

    def record_at(self, offset: int) -> tuple[str | None, str, float]:
        """``(event, data, published_at)`` of a retained event."""
        return self._records[offset - self.base]

    def tags_at(self, offset: int) -> Mapping[str, str]:
        return self._tags.get(offset, _NO_TAGS)

    def lag(self, offset: int) -> tuple[int, int]:
        """(events, bytes) published after ``offset``; ``offset`` must be retained or head."""
        if offset >= self.head:
            return 0, 0
        return self.head - offset, self.total_bytes - self._cum[offset + 1 - self.base]

    def history(self, after: int, limit: int) -> list[StoredEvent]:
        start = max(after + 1 - self.base, 0)
        records = self._records[start : start + limit]
        return [
            StoredEvent(self.name, f"{self.epoch}-{offset}", offset, event, data, published_at)
            for offset, (event, data, published_at) in enumerate(records, self.base + start)
        ]

    @property
    def idle(self) -> bool:
        """No subscribers and no history: nothing would be lost by forgetting this topic."""
        return not self.subscribers and not self._frames
