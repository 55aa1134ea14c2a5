"""A subscription: a cursor over one or more topics, read by exactly one writer.

The writer (an SSE response, a WebSocket connection) loops on :meth:`Subscription.next_chunk`,
which returns everything that is pending as one ``bytes`` (coalescing), and
:meth:`Subscription.wait` when nothing is. There is no per-subscriber queue: pending events are
read from the topics' logs, so a publisher never blocks and never copies anything per
subscriber.

The writer contract
-------------------

Every writer, whatever drives it, does the same five things:

1. It is driven either by a task, ``sub.attach_task(task)`` then ``await sub.wait()`` when
   ``next_chunk()`` has nothing; or by callbacks, ``sub.attach(sink)``, after which the hub
   calls ``sink.ready()`` (once per loop iteration at most) when something may be sendable.
2. It reads with ``next_chunk()`` (SSE frames) or ``take()`` (offsets, for a writer that
   encodes events itself). An SSE writer first sends ``opening()`` (the reset or position
   event), in its first write.
3. It says when it cannot write: ``sub.blocked(now)`` when a write starts (a task awaiting
   ``send``) or its transport pauses, and ``sub.sent(nbytes, now)`` when the write completed or
   the transport resumed.
4. It ends when ``next_chunk()`` returns ``None`` and :attr:`Subscription.state` is not
   ``OPEN``: cleanly for ``DRAINING``/``ENDING``, dropping the socket at once for ``ABORTED``.
5. It calls ``sub.release()`` when it has ended, always.

In return the hub applies the same bounds to every writer (:meth:`Hub` sweep, see
:mod:`sluiceway.hub.streams`): a writer blocked for ``write_timeout`` is aborted; a blocked
writer whose subscriber fell past its buffer gets the overflow policy at once (aborted, or
skipped to the latest event); a silent one gets a keep-alive.
"""

from __future__ import annotations

import asyncio
from enum import Enum, StrEnum
from typing import Protocol

from sluiceway.control import encode_position
from sluiceway.hub.config import HubConfig, OverflowPolicy
from sluiceway.hub.stats import HubStats
from sluiceway.hub.topic import RetainedTopic, Topic
from sluiceway.ids import Position, format_cursor
from sluiceway.sse import encode_comment

PING = encode_comment("ping")


class Sink(Protocol):
    """A writer that owns its socket and is called back instead of awaiting (see
    :mod:`sluiceway.server.native`)."""

    paused: bool
    done: bool

    def ready(self) -> None:
        """Something may be ready to send (or the subscription was closed)."""


class Registry(Protocol):
    """What a subscription needs from the hub that holds it (:mod:`sluiceway.hub.streams`)."""

    config: HubConfig
    stats: HubStats

    def schedule(self, subscription: Subscription) -> None:
        """Call the subscription's sink back soon (it has something to send, or was closed)."""

    def release(self, subscription: Subscription) -> None:
        """Forget a subscription whose writer has ended."""


class CloseReason(StrEnum):
    """Why a stream ended."""

    DISCONNECT = "disconnect"  # the client went away
    OVERFLOW = "overflow"  # fell further behind than its buffer allows (policy "close")
    WRITE_TIMEOUT = "write_timeout"  # its socket accepted nothing for too long
    SHUTDOWN = "shutdown"  # the hub is closing; pending events are flushed first
    SHUTDOWN_STUCK = "shutdown_stuck"  # could not flush within the shutdown grace period
    CLOSED = "closed"  # closed by the application
    COMPLETE = "complete"  # every followed topic is finished and everything was sent
    RESYNC = "resync"  # the shared backend lost or replaced this topic's history


class StreamState(Enum):
    """Where a subscription is in its life; only ever moves down this list."""

    OPEN = "open"  # following its topics
    DRAINING = "draining"  # closed with flush: what was published is sent, then it ends
    ENDING = "ending"  # closed: nothing more is sent; the writer ends the response cleanly
    ABORTED = "aborted"  # the socket accepts nothing: the writer drops it, with no last write
    RELEASED = "released"  # the writer has ended and let go of it

    @property
    def sends(self) -> bool:
        """Events are still sent in this state."""
        return self is StreamState.OPEN or self is StreamState.DRAINING


_DRAINING = StreamState.DRAINING


class Subscription:
    """Follows ``topics`` (sorted by name) from ``offsets`` onwards.

    Use it through :class:`sluiceway.asgi.EventStreamResponse`, or directly::

        async with await hub.subscribe(["news"]) as sub:
            async for chunk in sub:   # bytes: one or more complete SSE frames
                ...
    """

    __slots__ = (
        "_blocked_since",
        "_delta_after",
        "_future",
        "_pending",
        "_ping_due",
        "_position_due",
        "_registry",
        "_stats",
        "_task",
        "close_reason",
        "deltas",
        "last_write",
        "lost",
        "offsets",
        "replay_until",
        "sink",
        "state",
        "topics",
    )

    def __init__(
        self,
        registry: Registry,
        topics: list[Topic[Subscription]],
        offsets: list[int],
        *,
        position_due: bool = False,
        deltas: bool = False,
    ) -> None:
        self._registry = registry
        self._stats = registry.stats  # counted on every delivery: one lookup less
        self.topics = topics
        self.offsets = offsets
        # A resuming client's backlog is replay, not lag: the buffer bounds apply from the
        # head at subscribe time on (history bounds the replay itself).
        self.replay_until = [topic.head for topic in topics]
        self._pending: list[bytes] = []  # control frames to send first (the reset event)
        # The client came without an id: an SSE stream tells it where it starts (opening()).
        self._position_due = position_due
        self.lost = False  # the requested position could not be resumed (a reset was queued)
        self.state = StreamState.OPEN
        self.close_reason: CloseReason | None = None  # why it left OPEN
        self._future: asyncio.Future[None] | None = None
        self._ping_due = False
        self.last_write = asyncio.get_running_loop().time()
        self._blocked_since: float | None = None  # loop time since when it cannot write
        self._task: asyncio.Task[object] | None = None  # a task writer: cancelled on abort
        self.sink: Sink | None = None  # a callback-driven writer (set by attach)
        #: Events that follow the one sent before go as delta frames (one topic only).
        self.deltas = deltas
        # The offset of the last event this stream sent (None: none yet): only the next one
        # may go as a delta, since the client holds that one's data.
        self._delta_after: int | None = None

    @property
    def closed(self) -> bool:
        return self.state is not StreamState.OPEN

    @property
    def cursor(self) -> str:
        """The id a client would resume from right now."""
        return format_cursor(
            [Position(t.epoch, o) for t, o in zip(self.topics, self.offsets, strict=True)]
        )

    @property
    def log(self) -> RetainedTopic:
        """The (first) followed topic's log, for a writer that encodes events itself from
        :meth:`take`'s offsets with ``log.record_at``."""
        return self.topics[0]

    @property
    def offset(self) -> int:
        """The offset of the last event taken from the (first) followed topic."""
        return self.offsets[0]

    def rewind(self) -> None:
        """Start over from the oldest event the (first) topic still holds."""
        self.offsets[0] = self.topics[0].base - 1

    # -- the writer's side -------------------------------------------------------------------

    def opening(self) -> bytes:
        """What an SSE stream of this subscription sends before any event, in its first
        write, so that the client holds an exact position from its first byte on: the reset
        event when the client's id could not be resumed; a ``sluiceway.position`` event, whose
        id is where the stream starts, when the client came without an id; nothing when its
        id already names where the stream starts. Call it before ``next_chunk()``."""
        frames = b"".join(self._pending)
        self._pending.clear()
        if self._position_due:
            self._position_due = False
            frames += encode_position(self.cursor)
        return frames

    def next_chunk(self) -> bytes | None:
        """Everything pending, as one ``bytes``; ``None`` when there is nothing to send now."""
        if self._pending:
            control = b"".join(self._pending)
            self._pending.clear()
            return control
        if self.close_reason is not None and self.state is not _DRAINING:
            return None  # closed without flush (close_reason is None exactly while OPEN)
        chunk = self._next_single() if len(self.topics) == 1 else self._next_multi()
        if self._ping_due:
            self._ping_due = False
            if chunk is None and self.close_reason is None:
                return PING
        return chunk

    def _next_single(self) -> bytes | None:
        topic = self.topics[0]
        offset = self.offsets[0]
        if offset == topic.head:
            return None
        if not self._within_buffer(0, offset):
            if not self._overflow(0):
                return None
            offset = self.offsets[0]
        if self.deltas:
            return self._next_deltas(topic, offset)
        if offset + 1 == topic.head:  # the common live case: one new event, sent as stored
            self.offsets[0] = topic.head
            self._stats.delivered += 1
            return topic.frame_at(topic.head)
        frames, self.offsets[0] = topic.frames_after(offset, self._registry.config.max_chunk_bytes)
        self._stats.delivered += len(frames)
        return b"".join(frames)

    def _next_deltas(self, topic: Topic[Subscription], offset: int) -> bytes:
        """As :meth:`_next_single`, each event that follows the one sent before as its delta
        frame (the same ``bytes`` for every such stream); the others whole."""
        budget = self._registry.config.max_chunk_bytes
        frames: list[bytes] = []
        after = self._delta_after
        start = offset
        while offset < topic.head and (budget > 0 or not frames):
            offset += 1
            frame = topic.delta_frame_at(offset) if after == offset - 1 else topic.frame_at(offset)
            frames.append(frame)
            budget -= len(frame)
            after = offset
        self.offsets[0] = self._delta_after = offset
        self._stats.delivered += offset - start
        return frames[0] if len(frames) == 1 else b"".join(frames)

    def _next_multi(self) -> bytes | None:
        parts: list[bytes] = []
        budget = self._registry.config.max_chunk_bytes
        for index, topic in enumerate(self.topics):
            offset = self.offsets[index]
            if offset == topic.head or budget <= 0:
                continue
            if not self._within_buffer(index, offset):
                if not self._overflow(index):
                    return None
                offset = self.offsets[index]
            frames, _ = topic.frames_after(offset, budget)
            for frame in frames:
                offset += 1
                self.offsets[index] = offset
                # Our own cursor replaces the topic's id line, which is the frame's last line.
                id_line = len(topic.epoch) + len(str(offset)) + 7  # "id: " + "-" + "\n\n"
                parts.append(frame[:-id_line])
                parts.append(b"id: " + self.cursor.encode() + b"\n\n")
                budget -= len(frame)
            self._stats.delivered += len(frames)
        return b"".join(parts) if parts else None

    def take(self, max_events: int) -> tuple[int, int] | None:
        """For a single-topic writer that encodes events itself (the WebSocket face): the
        offsets ``(after, upto]`` to send now, at most ``max_events`` of them, read with
        ``self.log.record_at``. The buffer bounds and the overflow policy apply as for
        :meth:`next_chunk`; ``None`` when there is nothing to send (or it overflowed)."""
        topic = self.topics[0]
        offset = self.offsets[0]
        if offset == topic.head or not self.state.sends:
            return None
        if not self._within_buffer(0, offset):
            if not self._overflow(0):
                return None
            offset = self.offsets[0]
        upto = min(topic.head, offset + max_events)
        self.offsets[0] = upto
        self._stats.delivered += upto - offset
        return offset, upto

    @property
    def drained(self) -> bool:
        """Everything published to the followed topics has been taken."""
        return all(o == t.head for t, o in zip(self.topics, self.offsets, strict=True))

    def blocked(self, now: float) -> None:
        """The writer cannot write from ``now`` on: a write is in progress, or its transport
        paused (kept at the earliest time while it stays blocked)."""
        if self._blocked_since is None:
            self._blocked_since = now

    def sent(self, nbytes: int, now: float) -> None:
        """The writer wrote ``nbytes`` (0: its transport resumed) and is no longer blocked."""
        self._blocked_since = None
        self.last_write = now
        self._stats.bytes_sent += nbytes

    @property
    def blocked_since(self) -> float | None:
        return self._blocked_since

    def check_lag(self) -> None:
        """Apply the overflow policy now if this subscriber is past its buffer while its
        writer is blocked and so is not reading (a slow or stuck client): the stream is
        aborted (it cannot flush), or skipped to the latest event."""
        for index, topic in enumerate(self.topics):
            offset = self.offsets[index]
            behind = offset != topic.head and not self._within_buffer(index, offset)
            if behind and not self._overflow(index):
                self.abort(CloseReason.OVERFLOW)
                return

    def _within_buffer(self, index: int, offset: int) -> bool:
        topic = self.topics[index]
        if offset < topic.base - 1:  # history no longer holds what this subscriber needs
            return False
        if offset < self.replay_until[index]:
            return True
        events, nbytes = topic.lag(offset)
        config = self._registry.config
        return events <= config.buffer_events and nbytes <= config.buffer_bytes

    def _overflow(self, index: int) -> bool:
        """Apply the overflow policy; True when the subscriber goes on (keep-latest)."""
        topic = self.topics[index]
        stats = self._stats
        if topic.policy is OverflowPolicy.KEEP_LATEST:
            self.offsets[index] = topic.head - 1
            stats.skipped_to_latest += 1
            return True
        if self.close_reason is not CloseReason.OVERFLOW:
            stats.overflow_disconnects += 1
        self.close(CloseReason.OVERFLOW)
        return False

    async def wait(self) -> None:
        """Sleep until an event is published to one of the topics, a ping is due, or close."""
        if self.state is not StreamState.OPEN:
            return
        future = asyncio.get_running_loop().create_future()
        self._future = future
        for topic in self.topics:
            topic.waiters.add(self)
        try:
            await future
        finally:
            self._future = None

    def wake(self) -> None:
        if self.sink is not None:
            self._registry.schedule(self)
            return
        future = self._future
        if future is not None and not future.done():
            future.set_result(None)

    def attach(self, sink: Sink) -> None:
        """Hand this subscription to a callback-driven writer (instead of ``wait()``)."""
        self.sink = sink
        for topic in self.topics:
            topic.sinks.add(self)
        if self._pending or not self.drained:
            self.wake()  # a replay or a reset event is waiting

    def attach_task(self, task: asyncio.Task[object] | None) -> None:
        """The task that writes this subscription (cancelled if it must be aborted)."""
        self._task = task

    @property
    def parked(self) -> bool:
        """Waiting for events (so a keep-alive is due after a silence)."""
        sink = self.sink
        if sink is not None:
            return not sink.paused and not sink.done
        return self._future is not None

    def request_ping(self) -> None:
        """Send a keep-alive comment if nothing else is pending (called by the hub)."""
        self._ping_due = True
        self.wake()

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self, reason: CloseReason = CloseReason.CLOSED, *, flush: bool = False) -> None:
        """End the stream. With ``flush``, events already published are sent first."""
        if self.state is StreamState.OPEN:
            self.close_reason = reason
            self.state = StreamState.DRAINING if flush else StreamState.ENDING
        elif self.state is StreamState.DRAINING and not flush:
            self.state = StreamState.ENDING  # e.g. the client left while it drained
            self.close_reason = reason
        self.wake()

    def abort(self, reason: CloseReason) -> None:
        """Drop a stream whose socket accepts nothing: no flush, and a writer blocked in a
        write is cancelled (a callback-driven one aborts its transport)."""
        if self.state is StreamState.ABORTED or self.state is StreamState.RELEASED:
            return
        self.close_reason = reason
        self.state = StreamState.ABORTED
        self.wake()
        if self._task is not None:
            self._task.cancel()

    def release(self) -> None:
        """Detach from the hub; called by the writer when the stream has ended."""
        if self.close_reason is None:
            self.close_reason = CloseReason.CLOSED
        self.state = StreamState.RELEASED
        self._registry.release(self)

    def push_control(self, frame: bytes) -> None:
        """Queue a control frame (e.g. the reset event) ahead of the events."""
        self._pending.append(frame)
        self.wake()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> bytes:
        if self._position_due:
            return self.opening()
        while True:
            chunk = self.next_chunk()
            if chunk is not None:
                return chunk
            if self.state is not StreamState.OPEN:
                raise StopAsyncIteration
            await self.wait()


def end_when_complete(topic: Topic[Subscription]) -> None:
    """Mark ``topic`` finished: the streams that follow only finished topics get what remains
    and end (``Hub.finish``, here or, through the backend, in another process)."""
    topic.finished = True
    for subscription in list(topic.subscribers):
        if all(t.finished for t in subscription.topics):
            subscription.close(CloseReason.COMPLETE, flush=True)
