"""The hub's open streams: every subscription, and the bounds applied to every writer alike.

Callback-driven writers with something to send are flushed once per loop iteration, so that
events published in a burst leave in one write per subscriber. :meth:`Streams.check`, called by
the hub's sweep, applies the writer contract's bounds (see :mod:`sluiceway.hub.subscription`)
the same way whatever drives the writer: a keep-alive after a silence, an abort after
``write_timeout`` blocked, and the overflow policy for a blocked writer past its buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sluiceway.hub.config import HubConfig
from sluiceway.hub.stats import HubStats
from sluiceway.hub.subscription import CloseReason, StreamState, Subscription

logger = logging.getLogger("sluiceway.hub")


class Streams:
    """The registry a :class:`Subscription` is held by (its :class:`Registry`)."""

    def __init__(self, config: HubConfig, stats: HubStats) -> None:
        self.config = config
        self.stats = stats
        self._open: set[Subscription] = set()
        self._ready: dict[Subscription, None] = {}
        self._flush_scheduled = False
        self._all_released: asyncio.Event | None = None

    def __len__(self) -> int:
        return len(self._open)

    def add(self, subscription: Subscription) -> None:
        self._open.add(subscription)
        self.stats.streams_opened += 1

    # -- the registry a subscription sees ----------------------------------------------------

    def schedule(self, subscription: Subscription) -> None:
        self._ready[subscription] = None
        self._request_flush()

    def schedule_many(self, subscriptions: set[Subscription]) -> None:
        self._ready.update(dict.fromkeys(subscriptions))
        self._request_flush()

    def release(self, subscription: Subscription) -> None:
        for topic in subscription.topics:
            topic.subscribers.discard(subscription)
            topic.waiters.discard(subscription)
            topic.sinks.discard(subscription)
        self._ready.pop(subscription, None)
        self._open.discard(subscription)
        if self._all_released is not None and not self._open:
            self._all_released.set()

    def _request_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        ready, self._ready = self._ready, {}
        for subscription in ready:
            sink = subscription.sink
            if sink is None:
                continue
            try:
                sink.ready()
            except Exception:  # one broken connection must not starve the others
                logger.exception("event stream writer failed; closing that stream")
                subscription.close(CloseReason.DISCONNECT)
                sink.ready()

    # -- bounds ------------------------------------------------------------------------------

    def check(self, now: float) -> None:
        """Keep-alives, write deadlines and the buffer bounds of blocked writers (``now``:
        loop time)."""
        config = self.config
        for sub in self._open:
            blocked_since = sub.blocked_since
            if blocked_since is not None:
                if now - blocked_since > config.write_timeout:
                    if sub.state is not StreamState.ABORTED:
                        self.stats.write_timeout_disconnects += 1
                        sub.abort(CloseReason.WRITE_TIMEOUT)
                elif sub.state.sends:
                    # It is not reading, so the log is where its backlog grows.
                    sub.check_lag()
            elif sub.parked and now - sub.last_write >= config.ping_interval:
                sub.request_ping()

    async def close_all(self, grace: float) -> None:
        """End every stream after flushing what was already published; after ``grace``
        seconds, drop those whose sockets accept nothing."""
        if not self._open:
            return
        self._all_released = asyncio.Event()
        for sub in self._open:
            sub.close(CloseReason.SHUTDOWN, flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._all_released.wait(), grace)
        for sub in list(self._open):
            sub.abort(CloseReason.SHUTDOWN_STUCK)
        with contextlib.suppress(TimeoutError):  # writers end at their next step
            await asyncio.wait_for(self._all_released.wait(), 1.0)
