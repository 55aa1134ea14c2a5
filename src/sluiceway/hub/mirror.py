"""Mirrors: this process's copies of shared topics, kept in step with the backend.

A mirror is an ordinary topic log (so fan-out, resume and the native path are unchanged),
loaded from the backend's snapshot when a client first follows the topic here, then extended
by the backend's live notifications.  Offsets must stay contiguous: a notification that skips
one means something was missed, and the mirror is refilled from the backend's history.  The
same check runs after the notification channel reconnects and every few seconds, so a process
never stays silently deaf.  If the backend lost the topic's history (a new epoch), the mirror
is dropped and its streams end; clients reconnect with their last id and get a reset event.

A store that goes *back* (a Redis failover that lost writes acknowledged by the old master: the
head is below what this mirror holds, or an offset it holds comes again with other content)
would reuse offsets for other events, and a client resuming from one would skip events
silently.  The mirror then forks the topic's epoch in the store (atomically, once, whichever
process notices first) and drops itself: every client resumes with an explicit reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Iterable
from typing import Any

from sluiceway.hub.backend import Backend, Publication
from sluiceway.hub.errors import BackendUnavailable, TooManyTopics
from sluiceway.hub.subscription import CloseReason, Subscription, end_when_complete
from sluiceway.hub.table import TopicTable
from sluiceway.hub.topic import Topic
from sluiceway.ids import Position

logger = logging.getLogger("sluiceway.hub")

#: A mirror nobody here has followed for this long is dropped (and its channel unwatched).
LONELY_AFTER = 30.0
#: How many of a mirror's last events are compared with the store's after a reconnect.
VERIFIED_TAIL = 64
#: How often mirrors are compared with the backend's heads.
CONTINUITY_CHECK_INTERVAL = 2.0


class Mirrors:
    """The shared topics of ``table``, kept in step with ``backend``."""

    def __init__(self, table: TopicTable, backend: Backend) -> None:
        self.table = table
        self.backend = backend
        self._loading: dict[str, asyncio.Future[None]] = {}
        self._buffered: dict[str, list[Publication]] = {}
        self._refills: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # catch-ups and unwatches under way
        self._lonely_since: dict[str, float] = {}
        #: Topics finished at a head this mirror has not reached yet: finished once it has.
        self._finish_at: dict[str, int] = {}
        self._next_check = 0.0
        self.refills = 0  # for tests and metrics: how often a gap had to be filled

    async def start(self) -> None:
        await self.backend.start(self.on_publication, self.on_reconnect, self.on_finish)

    def holds(self, name: str) -> bool:
        return name in self.table and name not in self._loading

    # -- loading -----------------------------------------------------------------------------

    async def ensure(self, names: Iterable[str], requested: dict[str, Position]) -> None:
        """Mirror ``names`` (loading those not held yet); catch up first on any whose
        requested position is ahead of the mirror (an event this process has not seen yet)."""
        for name in names:
            if not self.holds(name):
                await self._load(name)
            position = requested.get(name)
            topic = self.table.get(name)
            ahead = (
                topic is not None
                and position is not None
                and position.epoch == topic.epoch
                and position.offset > topic.head
            )
            if ahead:
                await self._refill(name)

    async def _load(self, name: str) -> None:
        pending = self._loading.get(name)
        if pending is not None:
            await asyncio.shield(pending)
            return
        if self.table.full:
            await self._drop_lonely(0.0)
            if self.table.full:
                raise TooManyTopics(f"the hub already holds {len(self.table)} topics")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._loading[name] = future
        self._buffered[name] = []
        try:
            await self.backend.watch(name)  # first, so nothing published meanwhile is missed
            size = self.table.config.for_topic(name).history_size
            snapshot = await self.backend.snapshot(name, None, size)
            base = snapshot.events[0].offset if snapshot.events else snapshot.head + 1
            topic = self.table.new(name, epoch=snapshot.epoch, base=base)
            for publication in snapshot.events:
                topic.append(
                    publication.data,
                    publication.event,
                    publication.published_at,
                    publication.tags,
                )
            self.table.add(topic)
            for publication in self._buffered[name]:
                self._apply(topic, publication)
            if snapshot.finished:
                self._finish(topic, snapshot.head)
            future.set_result(None)
        except BaseException as exc:
            self.table.pop(name)
            future.set_exception(exc)
            with contextlib.suppress(BaseException):
                future.exception()  # retrieved: waiters see it through shield
            raise
        finally:
            del self._loading[name]
            self._buffered.pop(name, None)

    # -- live --------------------------------------------------------------------------------

    def on_publication(self, publication: Publication) -> None:
        buffered = self._buffered.get(publication.topic)
        if buffered is not None:
            buffered.append(publication)
            return
        topic = self.table.get(publication.topic)
        if topic is not None:
            self._apply(topic, publication)

    def on_finish(self, name: str, epoch: str, head: int) -> None:
        topic = self.table.get(name)
        if topic is not None and name not in self._loading and epoch == topic.epoch:
            self._finish(topic, head)
        # loading: its snapshot says whether it is finished

    def _finish(self, topic: Topic[Subscription], head: int) -> None:
        """Finished at ``head``: at once if this mirror has everything, else after a refill."""
        if topic.head >= head:
            self._finish_at.pop(topic.name, None)
            end_when_complete(topic)
        else:
            self._finish_at[topic.name] = head
            self._schedule_refill(topic.name)

    def apply_own(self, publication: Publication) -> None:
        """A publication this process made: applied now if it is the next one (else the
        notification, or a refill, brings it in order)."""
        topic = self.table.get(publication.topic)
        if (
            topic is not None
            and publication.topic not in self._loading
            and publication.epoch == topic.epoch
        ):
            if publication.offset == topic.head + 1:
                topic.append(
                    publication.data,
                    publication.event,
                    publication.published_at,
                    publication.tags,
                )
            elif topic.base <= publication.offset <= topic.head and (
                topic.record_at(publication.offset)[1] != publication.data
            ):  # the store gave our event an offset this mirror holds another event at
                self._diverged(topic.name, topic.epoch, None)

    def _apply(self, topic: Topic[Subscription], publication: Publication) -> None:
        if publication.epoch != topic.epoch:
            self._drop(topic.name, "the backend's history of this topic was replaced")
        elif publication.offset == topic.head + 1:
            topic.append(
                publication.data,
                publication.event,
                publication.published_at,
                publication.tags,
            )
        elif publication.offset > topic.head + 1:
            self._schedule_refill(topic.name)
        elif publication.offset >= topic.base and (
            topic.record_at(publication.offset)[1] != publication.data
        ):
            self._diverged(topic.name, topic.epoch, None)
        # else already here (our own publication, or a refill got it first)

    def on_reconnect(self) -> None:
        """Notifications may have been lost while the channel was down: check every mirror,
        and the content of its last events (a failover may have replaced some)."""
        self._start(self.catch_up(self.table.names(), verify=True))

    def _start(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in the background, kept (cancelled on close) and its failure logged."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.warning("shared topic upkeep failed: %r", exc)

    async def catch_up(self, names: list[str], *, verify: bool = False) -> None:
        """Compare the mirrors with the store's heads: refill, drop or fork as needed; with
        ``verify`` also compare their last :data:`VERIFIED_TAIL` events' content."""
        names = [n for n in names if self.holds(n) and self.table.is_shared(n)]
        if not names:
            return
        if verify:
            for name in names:
                await self._verify_tail(name)
        # What each mirror held before asking: our own publications may land meanwhile, and
        # only a store head below what we had *before* asking means the store went back.
        held = {name: topic.head for name in names if (topic := self.table.get(name))}
        try:
            heads = await self.backend.heads(names)
        except BackendUnavailable:
            return  # the next check (or reconnect) tries again
        for name, found in heads.items():
            topic = self.table.get(name)
            if topic is None:
                continue
            if found.epoch != topic.epoch:
                self._drop(name, "the backend lost this topic's history")
            elif found.head > topic.head:
                self._schedule_refill(name)
            elif found.head < held.get(name, 0):
                self._diverged(name, topic.epoch, held[name])
            if found.finished and not topic.finished and found.epoch == topic.epoch:
                self._finish(topic, found.head)

    async def _verify_tail(self, name: str) -> None:
        """After a failover the store may hold other events at offsets this mirror has (the
        old master acknowledged some that the new one never got, then gave their offsets to
        others): heads alike, contents not. Compared over the last few events."""
        topic = self.table.get(name)
        if topic is None or topic.head < topic.base:
            return
        after = max(topic.base, topic.head - VERIFIED_TAIL + 1) - 1
        try:
            snapshot = await self.backend.snapshot(name, after, VERIFIED_TAIL)
        except BackendUnavailable:
            return
        if self.table.get(name) is not topic or snapshot.epoch != topic.epoch:
            return  # dropped meanwhile, or a new history: the heads check handles it
        for publication in snapshot.events:
            offset = publication.offset
            if topic.base <= offset <= topic.head and topic.record_at(offset)[1] != (
                publication.data
            ):
                self._diverged(name, topic.epoch, None)
                return

    def _schedule_refill(self, name: str) -> None:
        if name not in self._refills:
            task = asyncio.get_running_loop().create_task(self._refill(name))
            self._refills[name] = task
            task.add_done_callback(lambda _: self._refills.pop(name, None))

    async def _refill(self, name: str) -> None:
        """Fetch what this mirror missed, in order, until it has everything."""
        while (topic := self.table.get(name)) is not None:
            limit = topic.config.history_size
            try:
                after = topic.head
                snapshot = await self.backend.snapshot(name, after, limit)
            except BackendUnavailable:
                return
            if self.table.get(name) is not topic:
                return
            self.refills += 1
            if snapshot.epoch != topic.epoch:
                self._drop(name, "the backend's history of this topic was replaced")
                return
            # Compared with what was asked for: notifications may have moved head meanwhile.
            missing = snapshot.events and snapshot.events[0].offset != after + 1
            if missing or (not snapshot.events and snapshot.head > after):
                # What this mirror missed is no longer in the backend's history.
                self._drop(name, "events this process missed were trimmed from history")
                return
            for publication in snapshot.events:
                if publication.offset == topic.head + 1:
                    topic.append(
                        publication.data,
                        publication.event,
                        publication.published_at,
                        publication.tags,
                    )
            if len(snapshot.events) < limit:
                finish_at = self._finish_at.get(name)
                if finish_at is not None and topic.head >= finish_at:
                    self._finish(topic, finish_at)
                return

    def _diverged(self, name: str, epoch: str, seen_head: int | None) -> None:
        """The store went back on events this mirror holds: fork the epoch, then drop."""

        async def fork_then_drop() -> None:
            try:
                if await self.backend.fork(name, epoch, seen_head):
                    logger.warning("topic %r: the backend lost events; new epoch", name)
            finally:  # first the fork, so that clients coming back find the new epoch
                self._drop(name, "the backend went back on events this process had")

        self._start(fork_then_drop())

    def _drop(self, name: str, why: str) -> None:
        """Forget a mirror that can no longer be trusted; its streams end (after what they
        were sent) and their clients reconnect, resuming exactly or getting a reset."""
        topic = self.table.pop(name)
        self._finish_at.pop(name, None)
        if topic is None:
            return
        logger.warning("topic %r: %s; its %d stream(s) end", name, why, len(topic.subscribers))
        for subscription in list(topic.subscribers):
            subscription.close(CloseReason.RESYNC, flush=True)
        self._start(self.backend.unwatch(name))

    # -- upkeep ------------------------------------------------------------------------------

    async def sweep(self) -> None:
        """Drop mirrors nobody follows; compare the others with the backend now and then."""
        await self._drop_lonely(LONELY_AFTER)
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + CONTINUITY_CHECK_INTERVAL
            await self.catch_up(self.table.names())

    async def _drop_lonely(self, after: float) -> None:
        now = time.monotonic()
        for topic in list(self.table):
            name = topic.name
            if not self.table.is_shared(name) or name in self._loading:
                continue
            if topic.subscribers:
                self._lonely_since.pop(name, None)
            elif now - self._lonely_since.setdefault(name, now) >= after:
                self.table.pop(name)
                self._lonely_since.pop(name, None)
                await self.backend.unwatch(name)

    async def aclose(self) -> None:
        tasks = [*self._refills.values(), *self._tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.backend.aclose()
