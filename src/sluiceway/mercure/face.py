"""Mercure updates in the hub, and the subscriber's stream of them.

One hub topic carries every Mercure update: a Mercure subscriber's ``Last-Event-ID`` is one
cursor across all the topics it matches, including topics that do not exist yet, so the
updates share one log and one position. Each is stored as JSON with its Mercure topic, private
flag, id, type and retry; subscribers read the log (as WebSocket connections do, with the
same buffer bounds and overflow policy) and get only the updates their matchers select and
their grants allow.

Ids: a publisher's id when it gave one, else ``#<epoch>-<offset>`` (publishers may not start
ids with ``#``, so the two never collide). Resuming from an id the hub no longer holds starts
live and answers ``Last-Event-ID: earliest``: the subscriber learns it may have missed updates.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

import orjson

from sluiceway.auth.grants import Grants
from sluiceway.hub import Hub, StoredEvent, Subscription
from sluiceway.hub.topic import Topic
from sluiceway.ids import InvalidEventId, Position
from sluiceway.mercure.publication import (
    EARLIEST,
    MercureUpdate,
    PublishError,
    encode_update,
    hub_event_id,
    parse_last_event_id,
    response_last_event_id,
)
from sluiceway.mercure.selectors import Selector

EVENT = "mercure"
#: Internal (``sluiceway.*``): the topic API refuses it, as it would show private updates.
HUB_TOPIC = "sluiceway.mercure"
#: Decoded updates kept for reuse: one update fanned out to N subscribers is decoded once.
CACHE_SIZE = 4096
BATCH = 256


def mercure_id(update: MercureUpdate, position: Position) -> str:
    return update.id if update.id is not None else hub_event_id(position)


class MercureFace:
    """Publishes updates into ``hub_topic`` and serves them to subscribers."""

    def __init__(self, hub: Hub, hub_topic: str = HUB_TOPIC) -> None:
        self.hub = hub
        self.hub_topic = hub_topic
        self._decoded: dict[tuple[str, int], tuple[MercureUpdate, str]] = {}

    async def publish(self, update: MercureUpdate) -> str:
        """Store ``update``; its Mercure id. A publisher's id that history still holds is
        refused (409): resuming from it must name one update."""
        if update.id is not None and await self._offset_of(update.id) is not None:
            raise PublishError("id", "an update with this id is still in history", 409)
        hub_id = await self.hub.publish(self.hub_topic, asdict(update), event=EVENT)
        return mercure_id(update, Position.parse(hub_id))

    async def _history(self) -> list[StoredEvent]:
        page = await self.hub.history(self.hub_topic, None, self.hub.config.history_size)
        return page.events

    async def _offset_of(self, external_id: str) -> int | None:
        for stored in await self._history():
            if orjson.loads(stored.data).get("id") == external_id:
                return stored.offset
        return None

    async def open(self, last_event_id: str | None, grants: Grants) -> tuple[Subscription, str]:
        """A subscription resuming after ``last_event_id`` (None: live), and the
        ``Last-Event-ID`` to answer: the id of the last update before the first one sent
        that this subscriber may receive, or ``earliest``."""
        events = await self._history()
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
            offset = next(
                (e.offset for e in events if orjson.loads(e.data).get("id") == resume.external_id),
                None,
            )
            if offset is not None:
                epoch = events[0].id.rpartition("-")[0]
                cursor = str(Position(epoch, offset))
        subscription = await self.hub.subscribe([self.hub_topic], cursor)
        if resume is not None and (cursor is None or subscription.lost):
            return subscription, EARLIEST  # that id names nothing we hold: updates may be lost
        start = subscription.offsets[0]
        before = [e for e in reversed(events) if e.offset <= start]
        candidates = (self._candidate(e) for e in before)
        return subscription, response_last_event_id(candidates, grants.may_receive)

    @staticmethod
    def _candidate(stored: StoredEvent) -> tuple[str, str, bool]:
        update = _update(stored.data)
        return mercure_id(update, Position.parse(stored.id)), update.topic, update.private

    async def updates(
        self, subscription: Subscription, selectors: list[Selector], grants: Grants
    ) -> AsyncIterator[bytes]:
        """The subscriber's stream: the updates it matches and may receive, encoded; it ends
        when the subscription closes (overflow, shutdown) or the token expires."""
        topic = subscription.topics[0]
        expires_at = grants.expires_at
        async with subscription:
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
                    if grants.may_receive(update.topic, update.private) and any(
                        selector.matches(update.topic) for selector in selectors
                    ):
                        out.append(encode_update(update, event_id))
                if out:
                    yield b"".join(out)

    def _decode(self, topic: Topic, offset: int) -> tuple[MercureUpdate, str]:
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
    fields: dict[str, Any] = orjson.loads(data)
    return MercureUpdate(**fields)


__all__ = ["EVENT", "MercureFace", "mercure_id"]
