"""Mercure updates in the hub, and the subscriber's stream of them.

One hub topic carries every Mercure update: a Mercure subscriber's ``Last-Event-ID`` is one
cursor across all the topics it matches, including topics that do not exist yet, so the
updates share one log and one position. Each is stored as JSON with its Mercure topic, private
flag, id, type and retry; subscribers read the log (as WebSocket connections do, with the
same buffer bounds and overflow policy) and get only the updates their matchers select and
their grants allow.

Ids: a publisher's id when it gave one, else ``#<epoch>-<offset>`` (publishers may not start
ids with ``#``, so the two never collide). Resuming from an id the hub no longer holds starts
live and answers ``Mercure-Last-Event-ID: earliest``: the subscriber learns it may have missed
updates. A publisher's id still in history is refused (409), so that resuming from it names one
update: the hub checks it atomically with the append (``Hub.publish(claim=...)``; in the
backend's publish script with Redis), so two processes publishing the same new id at the same
instant cannot both succeed.

Active subscriptions (the draft's "Active Subscriptions"): each matcher of a stream is one
subscription, and the stream is one subscriber (a random ``urn:uuid:``). When the stream
starts, the hub publishes a private update ``active: true``, of SSE type ``mercure``, to
``/.well-known/mercure/subscriptions/{match_type}/{match}/{subscriber}``, and ``active: false``
when it ends, whatever the reason (the client left, the token expired, overflow, shutdown).
They go through :meth:`MercureFace.publish`, so they are ordinary updates: delivered to the
subscribers whose matchers select them and whose grants allow ``subscribe`` on them, and
resumable. The face remembers the active subscriptions of *this process*: with a shared (Redis)
backend the subscription events reach every process, but the subscriptions API lists the ones
of the process that answers. (The events are not the source of the list: history expires and
is trimmed, and a process that dies never says ``active: false``.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from sluiceway.auth.grants import Grants
from sluiceway.hub import (
    BackendUnavailable,
    ClaimTaken,
    Hub,
    HubClosed,
    RetainedTopic,
    Subscription,
)
from sluiceway.ids import InvalidEventId, Position
from sluiceway.mercure.publication import (
    EARLIEST,
    MercureUpdate,
    PublishError,
    encode_update,
    hub_event_id,
    new_subscriber_id,
    parse_last_event_id,
    response_last_event_id,
    subscription_document,
    subscription_topic,
    subscription_update,
)
from sluiceway.mercure.selectors import MatchType, Selector

EVENT = "mercure"
#: Internal (``sluiceway.*``): the topic API refuses it, as it would show private updates.
HUB_TOPIC = "sluiceway.mercure"
#: Decoded updates kept for reuse: one update fanned out to N subscribers is decoded once.
CACHE_SIZE = 4096
BATCH = 256

logger = logging.getLogger("sluiceway.mercure")


@dataclass(frozen=True, slots=True)
class ActiveSubscription:
    """One matcher of a running stream, as the subscriptions API and events describe it."""

    match_type: MatchType
    match: str
    subscriber: str
    payload: Any = None

    @property
    def topic(self) -> str:
        return subscription_topic(self.match_type, self.match, self.subscriber)

    def document(self) -> dict[str, Any]:
        return subscription_document(
            self.match_type, self.match, self.subscriber, active=True, payload=self.payload
        )

    def update(self, *, active: bool) -> MercureUpdate:
        return subscription_update(
            self.match_type, self.match, self.subscriber, active=active, payload=self.payload
        )


def mercure_id(update: MercureUpdate, position: Position) -> str:
    return update.id if update.id is not None else hub_event_id(position)


class MercureFace:
    """Publishes updates into ``hub_topic`` and serves them to subscribers."""

    def __init__(self, hub: Hub, hub_topic: str = HUB_TOPIC) -> None:
        self.hub = hub
        self.hub_topic = hub_topic
        self._decoded: dict[tuple[str, int], tuple[MercureUpdate, str]] = {}
        #: This process's active subscriptions, by topic (unique: see :meth:`_register`).
        self._active: dict[str, ActiveSubscription] = {}
        self._announcing: set[asyncio.Task[None]] = set()
        #: Publishers' ids of the updates in the hub topic -> their offsets, oldest first
        #: (an id is unique but for a race between processes), brought up to date
        #: incrementally (each update is read once), valid for ``_indexed_epoch``.
        self._ids: dict[str, list[int]] = {}
        self._indexed_epoch: str | None = None
        self._indexed_upto = 0

    async def publish(self, update: MercureUpdate) -> str:
        """Store ``update``; its Mercure id. A publisher's id that history still holds is
        refused (409): resuming from it must name one update. The hub checks it atomically
        with the append (a claim), across processes with a shared backend."""
        external_id = update.id
        if external_id is not None:  # answered here without a round trip when we know it
            topic = await self.hub.retained(self.hub_topic)
            if topic is not None and self._offset_of(topic, external_id) is not None:
                raise PublishError("id", "an update with this id is still in history", 409)
        try:
            hub_id = await self.hub.publish(
                self.hub_topic, update.to_json(), event=EVENT, claim=external_id
            )
        except ClaimTaken:
            raise PublishError("id", "an update with this id is still in history", 409) from None
        position = Position.parse(hub_id)
        if external_id is not None and position.epoch == self._indexed_epoch:
            # Known before a shared topic's mirror has it (the index skips it then).
            self._remember(external_id, position.offset)
        return mercure_id(update, position)

    def _remember(self, external_id: str, offset: int) -> None:
        offsets = self._ids.setdefault(external_id, [])
        if offset not in offsets:
            offsets.append(offset)
            offsets.sort()

    def _offset_of(self, topic: RetainedTopic, external_id: str) -> int | None:
        """The offset of the earliest retained update a publisher gave ``external_id``."""
        self._index(topic)
        # Past the head: published here a moment ago, and a shared topic's mirror lags.
        return next((o for o in self._ids.get(external_id, ()) if o >= topic.base), None)

    def _index(self, topic: RetainedTopic) -> None:
        """Read the updates published since the last call into ``_ids``."""
        if topic.epoch != self._indexed_epoch:  # a new history: the old offsets mean nothing
            self._ids.clear()
            self._indexed_epoch = topic.epoch
            self._indexed_upto = topic.base - 1
        for offset in range(max(self._indexed_upto + 1, topic.base), topic.head + 1):
            update, _ = self._decode(topic, offset)
            if update.id is not None:
                self._remember(update.id, offset)
        self._indexed_upto = topic.head
        if len(self._ids) > 2 * (topic.head - topic.base + 1) + 1024:  # trimmed ones linger
            kept = {k: [o for o in v if o >= topic.base] for k, v in self._ids.items()}
            self._ids = {k: v for k, v in kept.items() if v}

    def _candidates(
        self, topic: RetainedTopic, start: int
    ) -> Iterator[tuple[str, tuple[str, ...], bool]]:
        """(id, topics, private) of the retained updates at ``start`` and before, newest
        first."""
        for offset in range(start, topic.base - 1, -1):
            update, event_id = self._decode(topic, offset)
            yield event_id, update.topics, update.private

    async def open(self, last_event_id: str | None, grants: Grants) -> tuple[Subscription, str]:
        """A subscription resuming after ``last_event_id`` (None: live), and the
        ``Last-Event-ID`` to answer: the id of the last update before the first one sent
        that this subscriber may receive, or ``earliest``."""
        try:
            resume = parse_last_event_id(last_event_id) if last_event_id else None
        except InvalidEventId:  # a "#..." id that was never ours: it names nothing
            return await self.hub.subscribe([self.hub_topic]), EARLIEST
        cursor: str | None = None
        if resume is not None and resume.earliest:
            subscription = await self.hub.subscribe([self.hub_topic], from_start=True)
            return subscription, EARLIEST
        if resume is not None and resume.position is not None:
            cursor = str(resume.position)
        elif resume is not None and resume.external_id is not None:
            held = await self.hub.retained(self.hub_topic)
            offset = self._offset_of(held, resume.external_id) if held is not None else None
            if held is not None and offset is not None:
                cursor = str(Position(held.epoch, offset))  # its hub position
        subscription = await self.hub.subscribe([self.hub_topic], cursor)
        if resume is not None and (cursor is None or subscription.lost):
            return subscription, EARLIEST  # that id names nothing we hold: updates may be lost
        candidates = self._candidates(subscription.log, subscription.offset)
        return subscription, response_last_event_id(candidates, grants.may_receive_any)

    async def updates(
        self, subscription: Subscription, selectors: list[Selector], grants: Grants
    ) -> AsyncIterator[bytes]:
        """The subscriber's stream: the updates it matches and may receive, encoded; it ends
        when the subscription closes (overflow, shutdown) or the token expires. Its
        subscriptions are announced active when it starts and inactive when it ends, for
        whatever reason."""
        topic = subscription.log
        expires_at = grants.expires_at
        async with subscription:
            # Registered here, not when the request is answered: only a generator that started
            # is sure to run its ``finally`` (a HEAD request never starts it).
            active = self._register(selectors, grants)
            try:
                await self._announce(active, active_now=True)
                while True:
                    taken = subscription.take(BATCH)
                    if taken is None:
                        if subscription.closed:
                            return
                        timeout = None if expires_at is None else expires_at - time.time()
                        if timeout is not None and timeout <= 0:
                            return  # the token expired: so does the subscription
                        try:
                            await asyncio.wait_for(subscription.wait(), timeout)
                        except TimeoutError:
                            return
                        continue
                    out = []
                    for offset in range(taken[0] + 1, taken[1] + 1):
                        update, event_id = self._decode(topic, offset)
                        if grants.may_receive_any(update.topics, update.private) and any(
                            selector.matches(one) for one in update.topics for selector in selectors
                        ):
                            out.append(encode_update(update, event_id))
                    if out:
                        yield b"".join(out)
            finally:
                self._unregister(active)
                # In a task of its own: a second cancellation of this one (a client gone
                # during shutdown) cannot stop the announcement half way.
                task = asyncio.create_task(self._announce(active, active_now=False))
                self._announcing.add(task)
                task.add_done_callback(self._announcing.discard)
                await asyncio.shield(task)

    # -- active subscriptions ----------------------------------------------------------------

    def _register(self, selectors: Sequence[Selector], grants: Grants) -> list[ActiveSubscription]:
        """One active subscription per matcher, all with the same subscriber id: a random
        ``urn:uuid:`` for this stream (see :func:`new_subscriber_id`)."""
        subscriber = new_subscriber_id()
        active = [
            ActiveSubscription(s.match_type, s.pattern, subscriber, grants.payload_for(s.pattern))
            for s in selectors
        ]
        for entry in active:
            self._active[entry.topic] = entry
        return active

    def _unregister(self, active: Sequence[ActiveSubscription]) -> None:
        for entry in active:
            self._active.pop(entry.topic, None)

    async def _announce(self, active: Sequence[ActiveSubscription], *, active_now: bool) -> None:
        """Publish the subscription events of ``active``. Those that end are best effort: a
        hub shutting down, or a backend that is gone, is logged and otherwise ignored."""
        for entry in active:
            try:
                await self.publish(entry.update(active=active_now))
            except (HubClosed, BackendUnavailable) as exc:
                if active_now:
                    raise
                logger.warning("subscription %s ended unannounced: %s", entry.topic, exc)

    def subscriptions(
        self,
        match_type: MatchType | None = None,
        match: str | None = None,
        subscriber: str | None = None,
    ) -> list[ActiveSubscription]:
        """This process's active subscriptions, optionally those of one matcher, or one."""
        if match_type is not None and match is not None and subscriber is not None:
            found = self._active.get(subscription_topic(match_type, match, subscriber))
            return [found] if found is not None else []
        return [
            entry
            for entry in self._active.values()
            if match_type is None or (entry.match_type is match_type and entry.match == match)
        ]

    async def last_event_id(self, grants: Grants) -> str:
        """The id of the last update in the hub that ``grants`` may receive (``earliest``
        when none): the cursor of the subscriptions API. Never an update it may not
        receive; resuming from it misses none it may."""
        topic = await self.hub.retained(self.hub_topic)
        candidates = self._candidates(topic, topic.head) if topic is not None else iter(())
        return response_last_event_id(candidates, grants.may_receive_any)

    def _decode(self, topic: RetainedTopic, offset: int) -> tuple[MercureUpdate, str]:
        key = (topic.epoch, offset)
        found = self._decoded.get(key)
        if found is None:
            _, data, _ = topic.record_at(offset)
            update = _update(data)
            found = (update, mercure_id(update, Position(topic.epoch, offset)))
            if len(self._decoded) >= CACHE_SIZE:
                del self._decoded[next(iter(self._decoded))]
            self._decoded[key] = found
        return found


def _update(data: str) -> MercureUpdate:
    return MercureUpdate.from_json(orjson.loads(data))


__all__ = ["EVENT", "ActiveSubscription", "MercureFace", "mercure_id"]
