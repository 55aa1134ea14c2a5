"""The live notification channels of the Redis backend: one pub/sub connection on a single
Redis, one per master on a Redis Cluster (sharded pub/sub).

On a single Redis, ``PUBLISH`` reaches the process's one subscriber connection.  On a cluster,
classic ``PUBLISH`` is broadcast to every node — every process would receive every topic's
events, followed or not — so the backend publishes with ``SPUBLISH`` and each process
``SSUBSCRIBE``\\s, on the master that owns the channel's slot, to the channels of the topics
its clients follow: a node receives only the shards it asked for.

Both keep themselves from going deaf, the failure where a subscriber connection dies quietly
(a partition, a failover) and the process never hears again: each connection is pinged and
must answer within :data:`DEAF_AFTER` seconds, a lost one is re-made, and after every
re-subscription ``on_reconnect`` runs so the mirrors compare themselves with the store.  On a
cluster, a node that stops serving a channel's slot (a failover, a resharding) says so with an
unsolicited ``sunsubscribe``; the topology is re-read and every channel re-subscribed on its
new owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from sluiceway.hub.redis_wire import Address, ConnectionLost, PubSubConnection

logger = logging.getLogger("sluiceway.redis")

#: What a lost connection raises: redis-py's errors (the cluster's are not RedisErrors) and
#: the socket's own.
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, RedisClusterException, OSError)

#: How often an idle subscriber connection is pinged, and how long without any answer makes
#: it deaf (then it is dropped and re-made).
PING_EVERY = 1.0
DEAF_AFTER = 3.0

Deliver = Callable[[str, str], None]


class _Subscriber:
    """One pub/sub connection and the channels it should hold; re-made when lost.

    ``sharded`` uses ``SSUBSCRIBE`` (one command per channel: a node holds channels of many
    slots, and one ``SSUBSCRIBE`` may name one slot only)."""

    def __init__(
        self,
        address: Address,
        *,
        sharded: bool,
        deliver: Deliver,
        on_lost: Callable[[_Subscriber, str], None],
        on_ready: Callable[[_Subscriber], None],
        always: tuple[str, ...] = (),
    ) -> None:
        self.address = address
        self.sharded = sharded
        self.channels: set[str] = set(always)
        self._deliver = deliver
        self._on_lost = on_lost
        self._on_ready = on_ready
        self._connection: PubSubConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def add(self, channel: str) -> None:
        self.channels.add(channel)
        if self._connection is not None:
            with contextlib.suppress(ConnectionLost):  # a lost connection re-subscribes all
                await self._connection.subscribe([channel], sharded=self.sharded)

    async def discard(self, channel: str) -> None:
        self.channels.discard(channel)
        if self._connection is not None:
            with contextlib.suppress(ConnectionLost):
                self._connection.unsubscribe(channel, sharded=self.sharded)

    def _moved(self, channel: str) -> bool:
        # An unsubscribe not asked for (the channel is still held): the node no longer
        # serves the channel's slot.
        return channel in self.channels

    async def _run(self) -> None:
        connection = None
        try:
            connection = await PubSubConnection.open(self.address, self._deliver, self._moved)
            # Set first: a channel added while these subscribe is subscribed by add() itself.
            self._connection = connection
            async with asyncio.timeout(DEAF_AFTER + 2):
                await connection.subscribe(sorted(self.channels), sharded=self.sharded)
            self.ready.set()
            self._on_ready(self)
            self._on_lost(self, await self._watch(connection))
        except asyncio.CancelledError:
            raise
        except (OSError, ConnectionLost) as exc:  # TimeoutError is an OSError
            self._on_lost(self, f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # a bug in delivery must not leave the process deaf
            logger.exception("Redis pub/sub listener failed")
            self._on_lost(self, repr(exc))
        finally:
            self._connection = None
            if connection is not None:
                connection.close()

    async def _watch(self, connection: PubSubConnection) -> str:
        """Ping while the connection lives; why it was lost (gone, or deaf)."""
        pinged = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(asyncio.shield(connection.lost), PING_EVERY)
            now = time.monotonic()
            if now - connection.heard >= DEAF_AFTER:
                return f"no answer to pings for {now - connection.heard:.1f} s"
            if now - max(connection.heard, pinged) >= PING_EVERY:
                pinged = now
                with contextlib.suppress(ConnectionLost):
                    connection.ping()

    async def aclose(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class SingleChannels:
    """Notifications on one Redis: one ``SUBSCRIBE`` connection for every watched channel."""

    publish_command = "PUBLISH"

    def __init__(
        self,
        url: str,
        where: str,
        *,
        deliver: Deliver,
        on_reconnect: Callable[[], None],
        set_healthy: Callable[[bool], None],
        always: str,
    ) -> None:
        self._address = Address.from_url(url)
        self._where = where
        self._deliver = deliver
        self._on_reconnect = on_reconnect
        self._set_healthy = set_healthy
        self._always = always
        self._subscriber: _Subscriber | None = None
        self._lost = False
        self._closed = False
        self._retry: asyncio.Task[None] | None = None
        self._delay = 0.05

    def _new(self, channels: set[str]) -> _Subscriber:
        subscriber = _Subscriber(
            self._address,
            sharded=False,
            deliver=self._deliver,
            on_lost=self._lost_one,
            on_ready=self._ready,
            always=(self._always,),
        )
        subscriber.channels |= channels
        subscriber.start()
        return subscriber

    async def start(self) -> None:
        self._subscriber = self._new(set())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscriber.ready.wait(), 5)

    def _ready(self, subscriber: _Subscriber) -> None:
        self._set_healthy(True)
        self._delay = 0.05
        if self._lost:
            self._lost = False
            logger.warning("Redis pub/sub at %s is back; catching up", self._where)
            self._on_reconnect()  # notifications may have been missed meanwhile

    def _lost_one(self, subscriber: _Subscriber, why: str) -> None:
        if not self._lost:
            logger.warning("Redis pub/sub at %s lost (%s); reconnecting", self._where, why)
        self._lost = True
        self._set_healthy(False)
        if not self._closed:
            self._retry = asyncio.get_running_loop().create_task(self._remake(subscriber))

    async def _remake(self, old: _Subscriber) -> None:
        await asyncio.sleep(self._delay)
        self._delay = min(self._delay * 2, 2.0)
        channels = old.channels
        if not self._closed:
            self._subscriber = self._new(channels)

    async def watch(self, channel: str) -> None:
        assert self._subscriber is not None
        await self._subscriber.add(channel)

    async def unwatch(self, channel: str) -> None:
        assert self._subscriber is not None
        await self._subscriber.discard(channel)

    async def aclose(self) -> None:
        self._closed = True
        if self._retry is not None:
            self._retry.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._retry
        if self._subscriber is not None:
            await self._subscriber.aclose()


class ShardedChannels:
    """Notifications on a Redis Cluster: one ``SSUBSCRIBE`` connection per master that owns
    a watched channel's slot; the whole set re-made on the new topology when one is lost."""

    publish_command = "SPUBLISH"

    def __init__(
        self,
        cluster: RedisCluster,
        where: str,
        *,
        address: Address,
        deliver: Deliver,
        on_reconnect: Callable[[], None],
        set_healthy: Callable[[bool], None],
    ) -> None:
        """``address`` gives the nodes' credentials and TLS."""
        self._cluster = cluster
        self._address = address
        self._where = where
        self._deliver = deliver
        self._on_reconnect = on_reconnect
        self._set_healthy = set_healthy
        self._channels: set[str] = set()
        self._by_node: dict[str, _Subscriber] = {}
        self._resync = asyncio.Event()
        self._healthy = True
        self._supervisor: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self) -> None:
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise())

    def _owner(self, channel: str) -> str:
        node = self._cluster.get_node_from_key(channel)
        if node is None:
            raise ConnectionError(f"no node serves the slot of {channel!r}")
        return f"{node.host}:{node.port}"

    def _subscriber(self, name: str) -> _Subscriber:
        subscriber = self._by_node.get(name)
        if subscriber is None:
            host, port = name.rsplit(":", 1)
            subscriber = _Subscriber(
                self._address.node(host, int(port)),
                sharded=True,
                deliver=self._deliver,
                on_lost=self._lost_one,
                on_ready=lambda _: None,
            )
            self._by_node[name] = subscriber
            subscriber.start()
        return subscriber

    async def watch(self, channel: str) -> None:
        self._channels.add(channel)
        try:
            name = self._owner(channel)
        except REDIS_ERRORS:
            self._resync.set()  # the slot is not served right now; the resync places it
            return
        await self._subscriber(name).add(channel)

    async def unwatch(self, channel: str) -> None:
        self._channels.discard(channel)
        for name, subscriber in list(self._by_node.items()):
            if channel in subscriber.channels:
                await subscriber.discard(channel)
                # Looked up again: a resync may have replaced the connections meanwhile.
                if not subscriber.channels and self._by_node.get(name) is subscriber:
                    del self._by_node[name]
                    await subscriber.aclose()

    def _lost_one(self, subscriber: _Subscriber, why: str) -> None:
        if self._healthy:
            logger.warning(
                "Redis Cluster pub/sub at %s lost (%s); re-reading the cluster", self._where, why
            )
        self._healthy = False
        self._set_healthy(False)
        self._resync.set()

    async def _supervise(self) -> None:
        """Each time a connection is lost: re-read the topology (until the cluster answers),
        re-subscribe every channel on its owner, and once all are subscribed let the mirrors
        catch up.  While the topology is stale (a failover under way) this repeats, paced."""
        delay = 0.05
        while not self._closed:
            await self._resync.wait()
            try:
                await self._resubscribe_all()
                delay = 0.05
            except asyncio.CancelledError:
                raise
            except Exception:  # never leave the process deaf: log, pause, try again
                logger.exception("Redis Cluster pub/sub resync failed; trying again")
                self._resync.set()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def _resubscribe_all(self) -> None:
        """One pass: re-read the slots, re-subscribe everything on its owner; raises while
        the cluster cannot say who owns what (the caller tries again)."""
        delay = 0.05
        while not self._closed and self._resync.is_set():
            try:
                # The client's own initialize() runs once; this re-reads the slots.
                await self._cluster.nodes_manager.initialize()
                owners = {channel: self._owner(channel) for channel in self._channels}
            except REDIS_ERRORS as exc:
                logger.debug("Redis Cluster not ready yet: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            self._resync.clear()
            old, self._by_node = self._by_node, {}
            for subscriber in old.values():
                await subscriber.aclose()
            for channel, name in owners.items():
                self._subscriber(name).channels.add(channel)
            if await self._all_ready():
                delay = 0.05
                self._healthy = True
                self._set_healthy(True)
                logger.warning("Redis Cluster pub/sub at %s is back; catching up", self._where)
                self._on_reconnect()
            else:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def _all_ready(self) -> bool:
        """True once every connection is subscribed; False when one is lost first."""

        async def subscribed() -> None:
            for subscriber in list(self._by_node.values()):
                await subscriber.ready.wait()

        ready = asyncio.ensure_future(subscribed())
        lost = asyncio.ensure_future(self._resync.wait())
        await asyncio.wait({ready, lost}, timeout=5, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        lost.cancel()
        return not self._resync.is_set() and ready.done() and not ready.cancelled()

    async def aclose(self) -> None:
        self._closed = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._supervisor
        for subscriber in self._by_node.values():
            await subscriber.aclose()
        self._by_node.clear()
