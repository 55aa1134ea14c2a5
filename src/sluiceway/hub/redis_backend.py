"""The Redis backend: history in a Redis Stream per topic, live fan-out over pub/sub.

Publishing runs one Lua script that assigns the next offset, appends to the stream (trimmed to
``history_size``), refreshes the topics' expiry (``history_ttl`` after its last event) and
publishes the event to the topic's channel — one round trip, atomically, so history and live
never disagree.  Each process holds one pub/sub connection for all the topics its clients
follow.  A topic's *epoch* lives in Redis next to its counter: if Redis loses the topic
(flushed, restarted without persistence, expired), the next use creates a new epoch, and a
client resuming with an old id gets the hub's reset event instead of a silent gap.

Keys (hash-tagged, so a topic's keys share a Redis Cluster slot):
``sluiceway:{<topic>}:meta`` (hash: ``epoch``, ``seq``) and ``sluiceway:{<topic>}:log``
(stream; entry ids ``<offset>-0``; fields ``e`` event, ``d`` data, ``t`` unix ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from sluiceway.hub.backend import Publication, Snapshot
from sluiceway.hub.errors import BackendUnavailable
from sluiceway.ids import new_epoch

logger = logging.getLogger("sluiceway.redis")

PREFIX = "sluiceway:"
CHANNEL_PREFIX = "sluiceway:live:"
#: Always subscribed, so the pub/sub connection exists even before any topic is watched.
CONTROL_CHANNEL = "sluiceway:control"

_PUBLISH = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'seq', 0)
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], seq .. '-0',
           'e', ARGV[2], 'd', ARGV[3], 't', ARGV[7])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('PUBLISH', ARGV[6],
           epoch .. '\\n' .. seq .. '\\n' .. ARGV[7] .. '\\n' .. ARGV[2] .. '\\n' .. ARGV[3])
return {epoch, seq}
"""

_SNAPSHOT = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'seq', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
local head = redis.call('HGET', KEYS[1], 'seq')
local entries
if tonumber(ARGV[2]) < 0 then
  entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', ARGV[3])
else
  entries = redis.call('XRANGE', KEYS[2], '(' .. ARGV[2] .. '-0', '+', 'COUNT', ARGV[3])
end
return {epoch, head, entries}
"""


def _keys(topic: str) -> list[str]:
    return [f"{PREFIX}{{{topic}}}:meta", f"{PREFIX}{{{topic}}}:log"]


def describe_url(url: str) -> str:
    """``redis://host:port/db`` without any password, for messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisBackend:
    """``RedisBackend("redis://127.0.0.1:6379/0", history_size=1000, history_ttl=3600)``."""

    def __init__(
        self,
        url: str,
        *,
        history_size: int,
        history_ttl: float,
    ) -> None:
        if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"not a Redis URL (redis://, rediss:// or unix://): {url!r}")
        self.url = url
        self.where = describe_url(url)
        self.history_size = history_size
        self.ttl_ms = int(history_ttl * 1000)
        self.healthy = False
        timeouts = {"socket_connect_timeout": 5.0, "socket_keepalive": True}
        self._redis = aioredis.from_url(url, socket_timeout=5.0, **timeouts)
        # No read timeout on the pub/sub connection (it may be quiet for hours); pings find a
        # dead one.
        self._pubsub_redis = aioredis.from_url(url, health_check_interval=5, **timeouts)
        self._publish_script = self._redis.register_script(_PUBLISH)
        self._snapshot_script = self._redis.register_script(_SNAPSHOT)
        self._watched: set[str] = set()
        self._pubsub: Any = None
        self._listener: asyncio.Task[None] | None = None
        self._on_publication: Callable[[Publication], None] = lambda p: None
        self._on_reconnect: Callable[[], None] = lambda: None
        self._connected = asyncio.Event()
        self._closed = False

    @property
    def redis(self) -> aioredis.Redis:
        """The client for commands (shared with others, e.g. WebSocket presence)."""
        return self._redis

    async def start(
        self,
        on_publication: Callable[[Publication], None],
        on_reconnect: Callable[[], None],
    ) -> None:
        """Connect (raises :class:`BackendUnavailable` with a clear message if Redis cannot be
        reached) and start listening."""
        self._on_publication = on_publication
        self._on_reconnect = on_reconnect
        try:
            await self._redis.ping()
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"cannot reach Redis at {self.where}: {exc}") from None
        self.healthy = True
        self._listener = asyncio.get_running_loop().create_task(self._listen())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), 5)

    async def publish(
        self,
        topic: str,
        data: str,
        event: str | None,
        bounds: tuple[int, float] | None = None,
    ) -> Publication:
        now_ms = int(time.time() * 1000)
        size, ttl_ms = self.history_size, self.ttl_ms
        if bounds is not None:
            size, ttl_ms = bounds[0], int(bounds[1] * 1000)
        args: list[str | int] = [
            new_epoch(),
            event or "",
            data,
            size,
            ttl_ms,
            CHANNEL_PREFIX + topic,
            now_ms,
        ]
        try:
            epoch, seq = await self._publish_script(keys=_keys(topic), args=args)
        except (RedisError, OSError) as exc:
            self.healthy = False
            raise BackendUnavailable(f"Redis at {self.where} is unreachable: {exc}") from None
        return Publication(topic, _text(epoch), int(seq), event, data, now_ms / 1000)

    async def watch(self, topic: str) -> None:
        self._watched.add(topic)
        if self._pubsub is not None:
            with contextlib.suppress(RedisError, OSError):  # the listener resubscribes
                await self._pubsub.subscribe(CHANNEL_PREFIX + topic)

    async def unwatch(self, topic: str) -> None:
        self._watched.discard(topic)
        if self._pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.unsubscribe(CHANNEL_PREFIX + topic)

    async def snapshot(self, topic: str, after: int | None, limit: int) -> Snapshot:
        args: list[str | int] = [new_epoch(), -1 if after is None else after, limit, self.ttl_ms]
        try:
            epoch, head, entries = await self._snapshot_script(keys=_keys(topic), args=args)
        except (RedisError, OSError) as exc:
            self.healthy = False
            raise BackendUnavailable(f"Redis at {self.where} is unreachable: {exc}") from None
        epoch = _text(epoch)
        if after is None:
            entries = list(reversed(entries))
        events = [self._entry(topic, epoch, entry_id, fields) for entry_id, fields in entries]
        return Snapshot(epoch, int(head), events)

    @staticmethod
    def _entry(topic: str, epoch: str, entry_id: bytes, fields: Any) -> Publication:
        values = (
            dict(zip(fields[::2], fields[1::2], strict=True))
            if isinstance(fields, list)
            else fields
        )
        event = _text(values[b"e"]) or None
        offset = int(_text(entry_id).split("-", 1)[0])
        return Publication(
            topic, epoch, offset, event, _text(values[b"d"]), int(values[b"t"]) / 1000
        )

    async def heads(self, topics: Sequence[str]) -> dict[str, tuple[str | None, int]]:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for topic in topics:
                    pipe.hmget(_keys(topic)[0], "epoch", "seq")
                results = await pipe.execute()
        except (RedisError, OSError) as exc:
            self.healthy = False
            raise BackendUnavailable(f"Redis at {self.where} is unreachable: {exc}") from None
        self.healthy = True
        return {
            topic: (_text(epoch) if epoch is not None else None, int(seq or 0))
            for topic, (epoch, seq) in zip(topics, results, strict=True)
        }

    async def aclose(self) -> None:
        self._closed = True
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
        await self._redis.aclose()
        await self._pubsub_redis.aclose()

    # -- the notification channel ------------------------------------------------------------

    async def _listen(self) -> None:
        delay = 0.05
        reconnecting = False
        while not self._closed:
            pubsub = self._pubsub_redis.pubsub()
            try:
                channels = [CHANNEL_PREFIX + topic for topic in self._watched]
                await pubsub.subscribe(CONTROL_CHANNEL, *channels)
                self._pubsub = pubsub
                self.healthy = True
                self._connected.set()
                delay = 0.05
                if reconnecting:
                    logger.warning("Redis pub/sub at %s is back; catching up", self.where)
                    self._on_reconnect()  # notifications may have been missed meanwhile
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                    if message is not None and message["type"] == "message":
                        self._deliver(message)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if not reconnecting:
                    logger.warning("Redis pub/sub at %s lost (%s); reconnecting", self.where, exc)
                self.healthy = False
                reconnecting = True
            except Exception:  # a bug in delivery must not leave the process deaf
                logger.exception("Redis pub/sub listener failed; reconnecting")
                reconnecting = True
            finally:
                self._pubsub = None
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py lacks the hint
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _deliver(self, message: dict[str, Any]) -> None:
        channel = _text(message["channel"])
        if not channel.startswith(CHANNEL_PREFIX):
            return
        topic = channel[len(CHANNEL_PREFIX) :]
        epoch, seq, at_ms, event, data = _text(message["data"]).split("\n", 4)
        self._on_publication(
            Publication(topic, epoch, int(seq), event or None, data, int(at_ms) / 1000)
        )
