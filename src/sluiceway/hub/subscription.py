"""A subscription: a cursor over one or more topics, read by exactly one writer.

The writer (the SSE response) loops on :meth:`Subscription.next_chunk`, which returns everything
that is pending as one ``bytes`` (coalescing), and :meth:`Subscription.wait` when nothing is.
There is no per-subscriber queue: pending events are read from the topics' logs, so a
publisher never blocks and never copies anything per subscriber.
"""

from __future__ import annotations

import asyncio
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from sluiceway.hub.config import OverflowPolicy
from sluiceway.hub.topic import as_http_chunk
from sluiceway.ids import Position, format_cursor
from sluiceway.sse import encode_comment

if TYPE_CHECKING:
    from sluiceway.hub.core import Hub
    from sluiceway.hub.topic import Topic

PING = encode_comment("ping")


PING_CHUNK = as_http_chunk(PING)


class Sink(Protocol):
    """A writer that owns its socket and is called back instead of awaiting (see
    :mod:`sluiceway.server.native`). It receives HTTP/1.1 chunks from ``next_chunk``."""

    paused: bool
    done: bool

    def ready(self) -> None:
        """Something may be ready to send (or the subscription was closed)."""


class CloseReason(StrEnum):
    DISCONNECT = "disconnect"  # the client went away
    OVERFLOW = "overflow"  # fell further behind than its buffer allows (policy "close")
    WRITE_TIMEOUT = "write_timeout"  # its socket accepted nothing for too long
    SHUTDOWN = "shutdown"  # the hub is closing; pending events are flushed first
    SHUTDOWN_STUCK = "shutdown_stuck"  # could not flush within the shutdown grace period
    CLOSED = "closed"  # closed by the application
    COMPLETE = "complete"  # every followed topic is finished and everything was sent
    RESYNC = "resync"  # the shared backend lost or replaced this topic's history

    @property
    def aborts(self) -> bool:
        """The socket is stuck: drop it without trying to write anything more."""
        return self in (CloseReason.WRITE_TIMEOUT, CloseReason.SHUTDOWN_STUCK)


class Subscription:
    """Follows ``topics`` (sorted by name) from ``offsets`` onwards.

    Use it through :class:`sluiceway.asgi.EventStreamResponse`, or directly::

        async with await hub.subscribe(["news"]) as sub:
            async for chunk in sub:   # bytes: one or more complete SSE frames
                ...
    """

    __slots__ = (
        "_future",
        "_pending",
        "chunked",
        "close_reason",
        "flush_on_close",
        "hub",
        "last_write",
        "lost",
        "offsets",
        "ping_due",
        "replay_until",
        "sink",
        "task",
        "topics",
        "writing_since",
    )

    def __init__(self, hub: Hub, topics: list[Topic], offsets: list[int]) -> None:
        self.hub = hub
        self.topics = topics
        self.offsets = offsets
        # A resuming client's backlog is replay, not lag: the buffer bounds apply from the
        # head at subscribe time on (history bounds the replay itself).
        self.replay_until = [topic.head for topic in topics]
        self._pending: list[bytes] = []  # control frames to send first (the reset event)
        self.lost = False  # the requested position could not be resumed (a reset was queued)
        self._future: asyncio.Future[None] | None = None
        self.close_reason: CloseReason | None = None
        self.flush_on_close = False
        self.ping_due = False
        loop = asyncio.get_running_loop()
        self.last_write = loop.time()
        self.writing_since = 0.0  # loop time when the current write began; 0 when not writing
        self.task: asyncio.Task[object] | None = None  # the writer, cancelled on write timeout
        self.sink: Sink | None = None  # set instead of a task when the writer is callback-driven
        self.chunked = False  # next_chunk() returns HTTP/1.1 chunks (for a sink)

    @property
    def closed(self) -> bool:
        return self.close_reason is not None

    @property
    def cursor(self) -> str:
        """The id a client would resume from right now."""
        return format_cursor(
            [Position(t.epoch, o) for t, o in zip(self.topics, self.offsets, strict=True)]
        )

    # -- the writer's side -------------------------------------------------------------------

    def next_chunk(self) -> bytes | None:
        """Everything pending, as one ``bytes``; ``None`` when there is nothing to send now."""
        if self._pending:
            control = b"".join(self._pending)
            self._pending.clear()
            return as_http_chunk(control) if self.chunked else control
        if self.close_reason is not None and not self.flush_on_close:
            return None
        chunk: bytes | None
        if len(self.topics) == 1:
            chunk = self._next_single()
        else:
            chunk = self._next_multi()
            if chunk is not None and self.chunked:
                chunk = as_http_chunk(chunk)
        if self.ping_due:
            self.ping_due = False
            if chunk is None and self.close_reason is None:
                return PING_CHUNK if self.chunked else PING
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
        if offset + 1 == topic.head:  # the common live case: one new event, sent as stored
            self.offsets[0] = topic.head
            self.hub.stats.delivered += 1
            return topic.frame_at(topic.head, self.chunked)
        frames, self.offsets[0] = topic.frames_after(
            offset, self.hub.config.max_chunk_bytes, self.chunked
        )
        self.hub.stats.delivered += len(frames)
        return b"".join(frames)

    def _next_multi(self) -> bytes | None:
        parts: list[bytes] = []
        budget = self.hub.config.max_chunk_bytes
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
            self.hub.stats.delivered += len(frames)
        return b"".join(parts) if parts else None

    def take(self, max_events: int) -> tuple[int, int] | None:
        """For a single-topic writer that encodes events itself (the WebSocket face): the
        offsets ``(after, upto]`` to send now, at most ``max_events`` of them, read from
        :meth:`Topic.record_at`. The buffer bounds and the overflow policy apply as for
        :meth:`next_chunk`; ``None`` when there is nothing to send (or it overflowed)."""
        topic = self.topics[0]
        offset = self.offsets[0]
        if offset == topic.head or (self.close_reason is not None and not self.flush_on_close):
            return None
        if not self._within_buffer(0, offset):
            if not self._overflow(0):
                return None
            offset = self.offsets[0]
        upto = min(topic.head, offset + max_events)
        self.offsets[0] = upto
        self.hub.stats.delivered += upto - offset
        return offset, upto

    def check_lag(self) -> None:
        """Apply the overflow policy now if this subscriber is past its buffer, for a writer
        that is blocked in a write and so is not reading (a slow or stuck client)."""
        for index, topic in enumerate(self.topics):
            offset = self.offsets[index]
            if offset != topic.head and not self._within_buffer(index, offset):
                self._overflow(index)

    def _within_buffer(self, index: int, offset: int) -> bool:
        topic = self.topics[index]
        if offset < topic.base - 1:  # history no longer holds what this subscriber needs
            return False
        if offset < self.replay_until[index]:
            return True
        events, nbytes = topic.lag(offset)
        config = self.hub.config
        return events <= config.buffer_events and nbytes <= config.buffer_bytes

    def _overflow(self, index: int) -> bool:
        """Apply the overflow policy; True when the subscriber goes on (keep-latest)."""
        topic = self.topics[index]
        if topic.policy is OverflowPolicy.KEEP_LATEST:
            self.offsets[index] = topic.head - 1
            self.hub.stats.skipped_to_latest += 1
            return True
        self.hub.stats.overflow_disconnects += 1
        self.close(CloseReason.OVERFLOW)
        return False

    async def wait(self) -> None:
        """Sleep until an event is published to one of the topics, a ping is due, or close."""
        if self.close_reason is not None:
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
            self.hub._schedule(self)
            return
        future = self._future
        if future is not None and not future.done():
            future.set_result(None)

    def attach(self, sink: Sink) -> None:
        """Hand this subscription to a callback-driven writer (instead of ``wait()``)."""
        self.sink = sink
        self.chunked = True
        for topic in self.topics:
            topic.sinks.add(self)
        if self._pending or any(
            offset < topic.head for topic, offset in zip(self.topics, self.offsets, strict=True)
        ):
            self.wake()  # a replay or a reset event is waiting

    @property
    def parked(self) -> bool:
        """Waiting for events (so a keep-alive is due after a silence)."""
        sink = self.sink
        if sink is not None:
            return not sink.paused and not sink.done
        return self._future is not None

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self, reason: CloseReason = CloseReason.CLOSED, *, flush: bool = False) -> None:
        """End the stream. With ``flush``, events already published are sent first."""
        if self.close_reason is None:
            self.close_reason = reason
            self.flush_on_close = flush
        self.wake()

    def abort(self, reason: CloseReason) -> None:
        """Drop a stream whose socket accepts nothing: no flush, and a writer blocked in a
        write is cancelled (a callback-driven one aborts its transport)."""
        self.close_reason = reason
        self.flush_on_close = False
        self.wake()
        if self.task is not None:
            self.task.cancel()

    def release(self) -> None:
        """Detach from the hub; called by the writer when the stream has ended."""
        if self.close_reason is None:
            self.close_reason = CloseReason.CLOSED
        self.hub._release(self)

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
        while True:
            chunk = self.next_chunk()
            if chunk is not None:
                return chunk
            if self.close_reason is not None:
                raise StopAsyncIteration
            await self.wait()
