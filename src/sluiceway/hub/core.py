"""The hub: topics with bounded, resumable history, and subscriptions that follow them."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from sluiceway.control import RESERVED_EVENT_PREFIX, RESET_EVENT
from sluiceway.hub.backend import Backend
from sluiceway.hub.config import HubConfig, TopicBounds
from sluiceway.hub.errors import (
    ClaimTaken,
    HistoryGone,
    HubClosed,
    InvalidDelta,
    InvalidTopic,
    TooManyTopics,
    TopicFinished,
    TopicNotReady,
)
from sluiceway.hub.mirror import Mirrors
from sluiceway.hub.stats import HubStats
from sluiceway.hub.streams import Streams
from sluiceway.hub.subscription import CloseReason, Subscription, end_when_complete
from sluiceway.hub.table import TopicTable
from sluiceway.hub.topic import FOSSIL, RetainedTopic, StoredEvent, Topic
from sluiceway.ids import InvalidEventId, Position, parse_cursor
from sluiceway.sse import encode_event

logger = logging.getLogger("sluiceway.hub")

#: Letters, digits and ``_ . : @ ~ + = $ # ! , -``; 1 to 200 characters. No ``/``, no spaces.
#: (``$`` and ``#`` / ``,`` carry meaning for WebSocket clients: private and user-limited
#: channels, see :mod:`sluiceway.centrifugo`.)
TOPIC_NAME = re.compile(r"[A-Za-z0-9_.:@~+=$#!,-]{1,200}")


#: Bounds of a publication's tags: how many, and the length of a name and of a value.
MAX_TAGS = 32
MAX_TAG_NAME = 64
MAX_TAG_VALUE = 256


def check_tags(tags: Mapping[str, str] | None) -> dict[str, str] | None:
    """``tags`` as a plain dict (None when there are none); raises :class:`ValueError` unless
    they are at most :data:`MAX_TAGS` strings named by non-empty strings, within the bounds.

    >>> check_tags({"ticker": "AAPL"})
    {'ticker': 'AAPL'}
    >>> check_tags({"n": 1})
    Traceback (most recent call last):
    ...
    ValueError: tags are strings by name: 'n' is not a string
    """
    if not tags:
        return None
    if not isinstance(tags, Mapping):
        raise ValueError("tags are an object of strings")
    if len(tags) > MAX_TAGS:
        raise ValueError(f"at most {MAX_TAGS} tags")
    for name, value in tags.items():
        if not isinstance(name, str) or not 0 < len(name) <= MAX_TAG_NAME:
            raise ValueError(f"tag names are 1-{MAX_TAG_NAME} characters")
        if not isinstance(value, str):
            raise ValueError(f"tags are strings by name: {name!r} is not a string")
        if len(value) > MAX_TAG_VALUE:
            raise ValueError(f"tag values are at most {MAX_TAG_VALUE} characters")
    return dict(tags)


def check_delta(delta: str, topics: int = 1) -> str:
    """``delta`` if a stream of ``topics`` topics may be sent deltas of that format; raises
    :class:`InvalidDelta` (a ``ValueError``) otherwise (the one format is ``"fossil"``; one
    topic, since a delta applies to the event the client got before, of the same topic).

    >>> check_delta("fossil")
    'fossil'
    >>> check_delta("fossil", topics=2)
    Traceback (most recent call last):
    ...
    sluiceway.hub.errors.InvalidDelta: deltas are sent on streams of one topic
    """
    if delta != FOSSIL:
        raise InvalidDelta(f"unknown delta format {delta[:40]!r}: the one format is {FOSSIL!r}")
    if topics != 1:
        raise InvalidDelta("deltas are sent on streams of one topic")
    return delta


def check_topic_name(name: str) -> str:
    if not TOPIC_NAME.fullmatch(name):
        raise InvalidTopic(
            f"invalid topic name {name[:80]!r}: use 1-200 of A-Z a-z 0-9 _ . : @ ~ + = $ # ! , -"
        )
    return name


def to_data(value: Any) -> str:
    """Event data as sent on the wire: strings as they are, anything else as compact JSON.
    Raises ValueError for what JSON cannot carry (a value nested more than 255 deep, a type
    it does not know).

    >>> to_data({"a": [1, 2]}), to_data("as is")
    ('{"a":[1,2]}', 'as is')
    """
    if isinstance(value, str):
        return value
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError as exc:
        raise ValueError(f"the data cannot be sent as JSON: {exc}") from None


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """Events of one topic after a position, oldest first (:meth:`Hub.history`).

    ``earliest``: the position before the oldest event still held — resuming from it or later
    is exact; ``latest``: the newest event's position (``None`` both for a topic the hub does
    not hold). Each event (:class:`StoredEvent`) has its ``id`` (what a client resumes from),
    ``event`` type (``None`` for a plain message), ``data`` (text) and ``published_at`` (Unix
    time). :meth:`to_json` is the page as ``GET /topics/{topic}/history`` answers it.

    >>> page = HistoryPage("news", [StoredEvent("news", "e1-1", 1, None, "hi", 1.5)],
    ...                    Position("e1", 0), Position("e1", 1))
    >>> page.to_json()["events"], page.to_json()["earliest"]
    ([{'id': 'e1-1', 'event': None, 'data': 'hi', 'published_at': 1.5}], 'e1-0')
    """

    topic: str
    events: list[StoredEvent]
    earliest: Position | None
    latest: Position | None

    def to_json(self) -> dict[str, Any]:
        """The page as plain JSON values (positions as ids), ready for any JSON response."""
        return {
            "topic": self.topic,
            "events": [
                {"id": e.id, "event": e.event, "data": e.data, "published_at": e.published_at}
                for e in self.events
            ],
            "earliest": str(self.earliest) if self.earliest else None,
            "latest": str(self.latest) if self.latest else None,
        }


class Hub:
    """Topics created on first use, each with a bounded history; publish and subscribe.

    >>> hub = Hub()
    >>> first = await hub.publish("news", "hello")               # doctest: +SKIP
    >>> sub = await hub.subscribe(["news"], last_event_id=first)  # doctest: +SKIP

    A subscription replays what came after ``last_event_id`` and continues live, with no gap
    and no duplicate at the seam (both come from the same log). When the position is no longer
    in history, the subscription starts with a :data:`RESET_EVENT` and continues live; opened
    without an id, its SSE stream starts with a ``sluiceway.position`` event naming the id to
    resume from (:meth:`Subscription.opening`).
    """

    def __init__(self, config: HubConfig | None = None, backend: Backend | None = None) -> None:
        config = config or HubConfig()
        self.backend = backend
        self.stats = HubStats()
        self._streams = Streams(config, self.stats)
        self._table = TopicTable(config, self._streams.schedule_many, shared=backend is not None)
        # With a shared backend, the topics followed here are mirrors of its history.
        self._mirrors = Mirrors(self._table, backend) if backend is not None else None
        self._sweeper: asyncio.Task[None] | None = None
        self._closing = False
        #: (history size, TTL) per shared topic: see :meth:`_history_bounds`.
        self._bounds: dict[str, tuple[int, float]] = {}
        #: Claims of in-process topics' events (``publish(claim=...)``): claim -> offset.
        self._claims: dict[str, dict[str, int]] = {}

    @classmethod
    def from_url(cls, url: str | None = None, config: HubConfig | None = None) -> Hub:
        """A hub in this process (``url`` None, empty or ``memory://``), or one whose topics
        every process on the same Redis shares (``redis://``, ``rediss://``, ``unix://``).

        >>> Hub.from_url(None).backend is None
        True
        """
        config = config or HubConfig()
        if not url or url in ("memory", "memory://"):
            return cls(config)
        from sluiceway.hub.redis_backend import RedisBackend  # redis is imported only when used

        backend = RedisBackend(
            url, history_size=config.history_size, history_ttl=config.history_ttl
        )
        return cls(config, backend)

    async def start(self) -> None:
        """Connect the shared backend, if any (raises :class:`BackendUnavailable`)."""
        if self._mirrors is not None:
            await self._mirrors.start()
            self._ensure_sweeper()

    def _history_bounds(self, topic: str) -> tuple[int, float]:
        """The backend's bounds for ``topic``, worked out once per topic (matching the topic
        bounds' patterns costs more than the rest of a publish)."""
        found = self._bounds.get(topic)
        if found is None:
            if len(self._bounds) >= 10_000:
                self._bounds.clear()
            found = self._bounds[topic] = self.config.history_bounds(topic)
        return found

    def is_shared(self, topic: str) -> bool:
        """True when ``topic`` lives in the shared backend (publishing it is a round trip)."""
        return self._mirrors is not None and self._table.is_shared(topic)

    @property
    def healthy(self) -> bool:
        """False while the shared backend is unreachable."""
        return self.backend is None or self.backend.healthy

    @property
    def backend_refills(self) -> int:
        """How often a mirror had to be refilled from the backend (missed notifications)."""
        return self._mirrors.refills if self._mirrors is not None else 0

    @property
    def config(self) -> HubConfig:
        return self._table.config

    def configure_topics(self, bounds: TopicBounds, *, process_local: bool = False) -> None:
        """Give the topics matching ``bounds.pattern`` bounds of their own (before any given so
        far), e.g. a family of runs that keeps each run's whole stream for its retention;
        ``process_local``: keep them in this process even with a shared backend. Topics that
        exist already keep the bounds they were made with."""
        if bounds in self.config.topic_bounds:
            return
        local = self.config.process_local_topics
        self._bounds.clear()
        self._table.config = self._streams.config = dataclasses.replace(
            self.config,
            topic_bounds=(bounds, *self.config.topic_bounds),
            process_local_topics=(*local, bounds.pattern) if process_local else local,
        )

    # -- publishing --------------------------------------------------------------------------

    async def publish(
        self,
        topic: str,
        data: Any,
        *,
        event: str | None = None,
        claim: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        """Append an event to ``topic`` and return its id. Never waits for subscribers.

        ``data`` is a string, or any JSON-serializable value (sent as compact JSON).  With a
        shared backend the backend assigns the id (raises :class:`BackendUnavailable`).
        ``claim``: a name no other event the topic still holds may have been published with
        (raises :class:`ClaimTaken`; across processes, atomically, with a shared backend), as
        Mercure's publisher ids need.  ``tags``: strings by name that WebSocket subscribers
        see with the publication and filter on (see :func:`check_tags`); SSE does not carry
        them.

        >>> import asyncio
        >>> hub = Hub()
        >>> asyncio.run(hub.publish("prices", {"p": 187.2}, tags={"ticker": "AAPL"}))[-2:]
        '-1'
        """
        if self._closing:
            raise HubClosed("the hub is shutting down")
        if event is not None and event.startswith(RESERVED_EVENT_PREFIX):
            raise ValueError(f"event types starting with {RESERVED_EVENT_PREFIX!r} are reserved")
        text = to_data(data)  # before anything is created: a value JSON cannot carry fails here
        tags = check_tags(tags)
        if self._mirrors is not None and self._table.is_shared(topic):
            assert self.backend is not None
            bounds = self._history_bounds(topic)
            publication = await self.backend.publish(
                check_topic_name(topic), text, event, bounds, claim, tags
            )
            self.stats.published += 1
            self._mirrors.apply_own(publication)
            return f"{publication.epoch}-{publication.offset}"
        found = self._topic(topic)
        if found.finished:
            raise TopicFinished(f"topic {topic!r} is finished")
        if claim is not None:
            self._claim(found, claim)
        event_id = found.append(text, event, tags=tags)
        if claim is not None:
            self._claims.setdefault(topic, {})[claim] = found.head
        self.stats.published += 1
        self._ensure_sweeper()  # history must expire even on topics nobody follows
        return event_id

    async def publish_many(self, topic: str, events: Sequence[tuple[str | None, Any]]) -> list[str]:
        """Append ``events`` (``(event type or None, data)``) to ``topic`` at consecutive
        offsets; their ids.  With a shared backend, in one round trip — how a token stream
        keeps up with its producer: what arrived while the last batch was being stored goes
        in the next one.

        >>> import asyncio
        >>> hub = Hub()
        >>> ids = asyncio.run(hub.publish_many("t", [(None, "a"), ("token", {"text": "b"})]))
        >>> ids[1].endswith("-2")
        True
        """
        if self._closing:
            raise HubClosed("the hub is shutting down")
        for event, _ in events:
            if event is not None and event.startswith(RESERVED_EVENT_PREFIX):
                raise ValueError(
                    f"event types starting with {RESERVED_EVENT_PREFIX!r} are reserved"
                )
        texts = [(event, to_data(data)) for event, data in events]
        if not texts:
            return []
        if self._mirrors is not None and self._table.is_shared(topic):
            assert self.backend is not None
            bounds = self._history_bounds(topic)
            stored = await self.backend.publish_many(check_topic_name(topic), texts, bounds)
            self.stats.published += len(stored)
            for publication in stored:
                self._mirrors.apply_own(publication)
            return [f"{p.epoch}-{p.offset}" for p in stored]
        found = self._topic(topic)
        if found.finished:
            raise TopicFinished(f"topic {topic!r} is finished")
        ids = [found.append(text, event) for event, text in texts]
        self.stats.published += len(ids)
        self._ensure_sweeper()
        return ids

    async def finish(self, topic: str) -> None:
        """Mark ``topic`` complete (an LLM generation that ended, a finished job): its
        subscribers receive what remains and their streams end; later subscribers replay its
        history and end.  Publishing to it afterwards raises :class:`TopicFinished`.  With a
        shared backend this holds in every process (the mark is stored with the topic)."""
        if self._mirrors is not None and self._table.is_shared(topic):
            assert self.backend is not None
            await self.backend.finish(check_topic_name(topic))
            return  # the notification ends the streams, here as in every process
        end_when_complete(self._topic(topic))

    def _claim(self, topic: Topic[Subscription], claim: str) -> None:
        """Refuse ``claim`` if a retained event of ``topic`` holds it (in-process topics)."""
        claims = self._claims.get(topic.name)
        if claims is None:
            return
        held = claims.get(claim)
        if held is not None and held >= topic.base:
            raise ClaimTaken(f"topic {topic.name!r} still holds an event claimed as {claim!r}")
        if len(claims) > 2 * (topic.head - topic.base + 1) + 64:  # trimmed ones linger
            self._claims[topic.name] = {k: o for k, o in claims.items() if o >= topic.base}

    # -- subscribing -------------------------------------------------------------------------

    async def subscribe(
        self,
        topics: Iterable[str],
        last_event_id: str | None = None,
        *,
        from_start: bool = False,
        delta: str | None = None,
    ) -> Subscription:
        """Follow ``topics`` after ``last_event_id`` (an id this hub gave out), or live; with
        ``from_start`` (and no id), from the oldest event each topic still holds.

        ``delta="fossil"`` (one topic only): each event that follows the one sent before goes
        as a Fossil delta from that one's data, with a ``delta: fossil`` line, when that is
        smaller (a dashboard republishing a large state with small changes); the first event,
        and the first after a gap, go whole. The client applies them
        (:class:`sluiceway.client.EventSource`, ``sluiceway.js``); a plain ``EventSource``
        cannot. A delta is made once per event, for every stream that asked.

        Raises :class:`InvalidEventId` for an id that is not one of ours, :class:`HubClosed`
        while shutting down, :class:`BackendUnavailable` when a shared topic cannot be loaded.
        """
        if self._mirrors is not None:
            names = sorted({check_topic_name(name) for name in topics})
            shared = [name for name in names if self._table.is_shared(name)]
            if shared:
                requested: dict[str, Position] = {}
                if last_event_id:
                    positions = parse_cursor(last_event_id, len(names))
                    requested = dict(zip(names, positions, strict=True))
                await self._mirrors.ensure(shared, requested)
        return self.subscribe_nowait(
            topics, last_event_id, caught_up=True, from_start=from_start, delta=delta
        )

    def subscribe_nowait(
        self,
        topics: Iterable[str],
        last_event_id: str | None = None,
        *,
        caught_up: bool = False,
        from_start: bool = False,
        delta: str | None = None,
    ) -> Subscription:
        """:meth:`subscribe` without awaiting: the in-process history answers at once, which
        lets a connection attach from a protocol callback, with no task of its own."""
        if self._closing:
            raise HubClosed("the hub is shutting down")
        names = sorted({check_topic_name(name) for name in topics})
        if not names:
            raise InvalidTopic("subscribe to at least one topic")
        if delta is not None:
            check_delta(delta, len(names))
        mirrors = self._mirrors
        if mirrors is not None:
            for name in names:
                if self._table.is_shared(name) and not mirrors.holds(name):
                    raise TopicNotReady(f"topic {name!r} is not loaded in this process yet")
        requested = parse_cursor(last_event_id, len(names)) if last_event_id else None
        followed = [self._topic(name) for name in names]
        if requested is not None and mirrors is not None and not caught_up:
            for topic, position in zip(followed, requested, strict=True):
                ahead = position.epoch == topic.epoch and position.offset > topic.head
                if ahead and self._table.is_shared(topic.name):
                    # This process has not seen that event yet: subscribe() catches up first,
                    # instead of a false reset here.
                    raise TopicNotReady(f"topic {topic.name!r} is behind the requested id")
        offsets = [topic.base - 1 if from_start else topic.head for topic in followed]
        lost: list[dict[str, Any]] = []
        if requested is not None:
            for index, (topic, position) in enumerate(zip(followed, requested, strict=True)):
                if topic.can_resume_from(position):
                    offsets[index] = position.offset
                else:
                    lost.append(self._reset_detail(topic, position))
        subscription = Subscription(
            self._streams,
            followed,
            offsets,
            position_due=requested is None,
            deltas=delta is not None,
        )
        for topic in followed:
            topic.subscribers.add(subscription)
        self._streams.add(subscription)
        if lost:
            subscription.lost = True
            self.stats.resets += 1
            subscription.push_control(self._reset_frame(lost, subscription.cursor))
        if all(topic.finished for topic in followed):
            subscription.close(CloseReason.COMPLETE, flush=True)  # replay, then end
        self._ensure_sweeper()
        return subscription

    @staticmethod
    def _reset_detail(topic: Topic[Subscription], requested: Position) -> dict[str, Any]:
        if requested.epoch != topic.epoch:
            reason = "unknown_epoch"  # a history we no longer have (restart, flush, expiry)
        elif requested.offset > topic.head:
            reason = "unknown_position"  # ahead of anything ever published here
        else:
            reason = "expired"  # trimmed from history (count, size or age)
        return {
            "topic": topic.name,
            "reason": reason,
            "requested": str(requested),
            "earliest": str(topic.earliest),
            "resumed_at": str(topic.position),
        }

    @staticmethod
    def _reset_frame(lost: list[dict[str, Any]], cursor: str) -> bytes:
        data = orjson.dumps({"topics": lost}).decode()
        return encode_event(data, event=RESET_EVENT, id=cursor)

    # -- history -----------------------------------------------------------------------------

    async def history(self, topic: str, after: str | None = None, limit: int = 100) -> HistoryPage:
        """Up to ``limit`` events after ``after`` (oldest retained first when ``None``).

        Raises :class:`HistoryGone` when events after ``after`` have been trimmed or belong to
        a history that no longer exists: the caller must not mistake a partial page for a
        complete one.
        """
        check_topic_name(topic)
        if self._mirrors is not None and self._table.is_shared(topic):
            await self._mirrors.ensure([topic], {})
        found = self._table.get(topic)
        if found is None:
            if after is not None:
                Position.parse(after)  # garbage is an InvalidEventId, not HistoryGone
                raise HistoryGone(topic, after, None)
            return HistoryPage(topic, [], None, None)
        start = found.base - 1
        if after is not None:
            position = Position.parse(after)
            if not found.can_resume_from(position):
                raise HistoryGone(topic, after, found.earliest)
            start = position.offset
        return HistoryPage(topic, found.history(start, limit), found.earliest, found.position)

    async def retained(self, topic: str) -> RetainedTopic | None:
        """``topic``'s log as this process holds it (a shared one loaded first), or None when
        it holds nothing: for readers that walk its events by offset (``record_at``) rather
        than copy a page of history."""
        check_topic_name(topic)
        if self._mirrors is not None and self._table.is_shared(topic):
            await self._mirrors.ensure([topic], {})
        return self._table.get(topic)

    def topic_names(self) -> list[str]:
        return self._table.names()

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    def earliest_id(self, topic: str) -> str:
        """The id to resume from to get everything ``topic`` holds (its whole history)."""
        return str(self._topic(topic).earliest)

    def latest_id(self, topic: str) -> str:
        """The id of the newest event of ``topic`` (offset 0 while it has none)."""
        return str(self._topic(topic).position)

    def subscriber_count(self, topic: str) -> int:
        """Streams following ``topic`` now (0 for a topic the hub does not hold)."""
        found = self._table.get(topic)
        return len(found.subscribers) if found is not None else 0

    # -- internals ---------------------------------------------------------------------------

    def _topic(self, name: str) -> Topic[Subscription]:
        table = self._table
        topic = table.get(name)
        if topic is None:
            check_topic_name(name)
            if table.is_shared(name):  # only the mirrors create shared topics
                raise TopicNotReady(f"topic {name!r} is not loaded in this process yet")
            if table.full:
                self._trim_topics(time.monotonic())
                self._forget_idle_topics()
                if table.full:
                    raise TooManyTopics(f"the hub already holds {self.config.max_topics} topics")
            topic = table.new(name)
            table.add(topic)
        return topic

    def _forget_idle_topics(self, idle_for: float | None = 0.0) -> None:
        """Forget topics idle for ``idle_for`` seconds (None: each topic's own history TTL)."""
        now = time.monotonic()
        for topic in list(self._table):
            if (
                topic.idle_since is not None
                and not self._table.is_shared(topic.name)  # mirrors are dropped by Mirrors.sweep
                and now - topic.idle_since
                >= (topic.config.history_ttl if idle_for is None else idle_for)
            ):
                self._table.pop(topic.name)
                self._claims.pop(topic.name, None)  # a new topic of that name starts at 1

    def _trim_topics(self, now: float) -> None:
        """Expire old history; forget topics idle for a whole history TTL.

        Forgetting sooner would turn a client's brief reconnect into a spurious reset: the
        topic would come back with a new epoch.
        """
        for topic in self._table:
            topic.trim_expired(now)
            if not topic.idle:
                topic.idle_since = None
            elif topic.idle_since is None:
                topic.idle_since = now
        self._forget_idle_topics(None)

    def _ensure_sweeper(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        """Pings idle subscribers, drops stuck ones, trims expired history.

        One task for the whole hub instead of a timer per subscriber: 10,000 idle streams
        cost one pass over a set per tick.
        """
        config = self.config
        tick = min(1.0, config.ping_interval / 4, config.write_timeout / 4)
        loop = asyncio.get_running_loop()
        next_trim = 0.0
        while len(self._streams) or len(self._table) or self._mirrors is not None:
            await asyncio.sleep(tick)
            now = loop.time()
            try:
                self._streams.check(now)
                if now >= next_trim:  # history ages in seconds: once a second is enough
                    next_trim = now + 1.0
                    self._trim_topics(time.monotonic())
                    if self._mirrors is not None:
                        await self._mirrors.sweep()
            except Exception:  # keep sweeping: pings and write deadlines depend on it
                logger.exception("hub sweep failed")

    async def aclose(self, grace: float = 5.0) -> None:
        """Refuse new work, end every stream after flushing what was already published, and
        wait (at most ``grace`` seconds) for the writers to finish; then drop the streams whose
        sockets accept nothing, so that a stuck client cannot hold the shutdown. Calling it
        again is harmless and quick."""
        self._closing = True
        await self._streams.close_all(grace)
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._mirrors is not None:
            await self._mirrors.aclose()

    @property
    def closing(self) -> bool:
        return self._closing


__all__ = [
    "RESET_EVENT",
    "HistoryPage",
    "Hub",
    "InvalidEventId",
    "check_topic_name",
    "to_data",
]
