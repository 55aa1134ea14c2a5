"""The Redis backend: history in a Redis Stream per topic, live fan-out over pub/sub — on one
Redis or a Redis Cluster.

Publishing runs one Lua script that assigns the next offset, appends to the stream (trimmed to
``history_size``), refreshes the topics' expiry (``history_ttl`` after its last event) and
publishes the event to the topic's channel — one round trip, atomically, so history and live
never disagree.  On one Redis each process holds one pub/sub connection for all the topics its
clients follow; on a cluster the script publishes with ``SPUBLISH`` and each process subscribes,
on each master, only to the shards its clients follow (:mod:`sluiceway.hub.redis_channels`).

``redis://`` / ``rediss://`` / ``unix://`` name one Redis;
``redis+cluster://host:port[,host:port…]`` (``rediss+cluster://`` with TLS) names a cluster by
one or more of its nodes (a plain ``redis://`` URL of a cluster node is refused at start, with
the URL to use instead: the two need different clients).

A topic's *epoch* lives in Redis next to its counter: if Redis loses the topic (flushed,
restarted without persistence, expired), the next use creates a new epoch, and a client
resuming with an old id gets the hub's reset event instead of a silent gap.

Keys (hash-tagged, so a topic's keys share a Redis Cluster slot):
``sluiceway:{<topic>}:meta`` (hash: ``epoch``, ``seq``) and ``sluiceway:{<topic>}:log``
(stream; entry ids ``<offset>-0``; fields ``e`` event, ``d`` data, ``t`` unix ms); the live
channel ``sluiceway:live:{<topic>}`` hashes to the same slot, as ``SPUBLISH`` in the script
requires.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    RedisError,
    ResponseError,
    TryAgainError,
)

from sluiceway.hub.backend import FINISH_NOTICE, Head, Publication, Snapshot
from sluiceway.hub.errors import BackendUnavailable, ClaimTaken, TopicFinished
from sluiceway.hub.redis_channels import REDIS_ERRORS, ShardedChannels, SingleChannels
from sluiceway.hub.redis_wire import Address, CommandConnection, ConnectionLost, pack
from sluiceway.ids import new_epoch

logger = logging.getLogger("sluiceway.redis")

PREFIX = "sluiceway:"
CHANNEL_PREFIX = "sluiceway:live:"
#: Always subscribed on one Redis, so the pub/sub connection exists before any topic is watched.
CONTROL_CHANNEL = "sluiceway:control"
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}

#: Batches of publishes go at most this often (seconds): a publish after a quiet spell goes at
#: once, and under load what arrives within it shares one round trip (~40 calls of 200
#: generations side by side instead of one; ``bench/run_tokens.py``), for at most 1 ms more
#: latency.  (uvloop's timers count whole milliseconds.)
PUBLISH_LINGER = 0.001

#: How long a batch may wait for its replies before its connection counts as lost.
COMMAND_TIMEOUT = 5.0

# Both publish scripts start here: the topic's epoch (a new one, and an empty history, when
# the topic is unknown), or a refusal when it is finished. Refusals come back as a negative
# offset: -1 the claim is taken, -2 the topic is finished.
_OPEN = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2], KEYS[3])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'seq', 0)
elseif redis.call('HGET', KEYS[1], 'finished') then
  return {epoch, -2}
end
"""

_PUBLISH = (
    _OPEN
    + """
local claim = ARGV[9]
if claim ~= '' then
  local held = redis.call('ZSCORE', KEYS[3], claim)
  local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1]
  if held and first and tonumber(held) >= tonumber(string.match(first[1], '^%d+')) then
    return {epoch, -1}
  end
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local tags = ARGV[10]
if tags == '' then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], seq .. '-0',
             'e', ARGV[2], 'd', ARGV[3], 't', ARGV[7])
else
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], seq .. '-0',
             'e', ARGV[2], 'd', ARGV[3], 't', ARGV[7], 'g', tags)
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
if claim ~= '' then
  redis.call('ZADD', KEYS[3], seq, claim)
  local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1]
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. string.match(first[1], '^%d+'))
  redis.call('PEXPIRE', KEYS[3], ARGV[5])
end
if tags == '' then
  redis.call(ARGV[8], ARGV[6],
             epoch .. '\\n' .. seq .. '\\n' .. ARGV[7] .. '\\n' .. ARGV[2] .. '\\n' .. ARGV[3])
else  -- a JSON object (an epoch never starts with "{"): [epoch, offset, ms, event, data, tags]
  redis.call(ARGV[8], ARGV[6], cjson.encode({t = {epoch, seq, tonumber(ARGV[7]), ARGV[2],
                                                  ARGV[3], tags}}))
end
return {epoch, seq}
"""
)

# Appends ARGV[7..] (event, data pairs) in one call; one notification carries them all, as
# JSON: [epoch, first offset, unix ms, [event, data, event, data, ...]].
_PUBLISH_MANY = (
    _OPEN
    + """
local count = (#ARGV - 6) / 2
local last = redis.call('HINCRBY', KEYS[1], 'seq', count)
local first = last - count + 1
for i = 0, count - 1 do
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], (first + i) .. '-0',
             'e', ARGV[7 + 2 * i], 'd', ARGV[8 + 2 * i], 't', ARGV[5])
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
local items = {}
for i = 7, #ARGV do items[#items + 1] = ARGV[i] end
redis.call(ARGV[6], ARGV[4], cjson.encode({epoch, first, tonumber(ARGV[5]), items}))
return {epoch, first}
"""
)

# Marks the topic finished and tells every process (an event type no publisher may use).
_FINISH = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2], KEYS[3])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'seq', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
redis.call('HSET', KEYS[1], 'finished', 1)
local seq = redis.call('HGET', KEYS[1], 'seq')
redis.call(ARGV[4], ARGV[3], epoch .. '\\n' .. seq .. '\\n0\\n' .. ARGV[5] .. '\\n')
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
return {epoch, head, entries, redis.call('HGET', KEYS[1], 'finished') or ''}
"""


# Replace the epoch (and drop the log) if the topic still has ``ARGV[1]`` as epoch and, when
# ``ARGV[2]`` >= 0, a head below it: the store lost events a process had seen.
_FORK = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if epoch ~= ARGV[1] then return 0 end
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
if tonumber(ARGV[2]) >= 0 and seq >= tonumber(ARGV[2]) then return 0 end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], 'epoch', ARGV[3], 'seq', 0)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""


def _keys(topic: str) -> list[str]:
    return [f"{PREFIX}{{{topic}}}:meta", f"{PREFIX}{{{topic}}}:log", f"{PREFIX}{{{topic}}}:claims"]


def channel_of(topic: str) -> str:
    """The topic's live channel, in its keys' hash slot (``SPUBLISH`` from the script)."""
    return f"{CHANNEL_PREFIX}{{{topic}}}"


def describe_url(url: str) -> str:
    """``redis://host:port/db`` without any password, for messages and logs."""
    parts = urlsplit(url)
    if parts.scheme in CLUSTER_SCHEMES:
        return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


_Queued = tuple[AsyncScript, list[str], Sequence[str | int | bytes], "asyncio.Future[Any]"]


#: Replies that redis-py's own path handles: it loads a missing script, follows a cluster's
#: redirection and re-reads the slots.
_REDIRECTED = (NoScriptError, MovedError, AskError, ClusterDownError, TryAgainError)


def _source(script: AsyncScript) -> str | bytes:
    """A script's text (redis-py's type allows a memoryview too)."""
    return bytes(script.script) if isinstance(script.script, memoryview) else script.script


async def _slow(script: AsyncScript, keys: list[str], args: Sequence[str | int | bytes]) -> Any:
    """``script`` through redis-py; its reply, or the error as a Redis error."""
    try:
        return await script(keys=keys, args=args)
    except Exception as exc:  # see RedisBackend._unavailable
        return exc if isinstance(exc, REDIS_ERRORS) else RedisError(repr(exc))


def _settle(future: asyncio.Future[Any], result: Any) -> None:
    if future.done():  # its caller gave up (cancelled)
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


def cluster_node_refusal(url: str) -> str:
    """Why a ``redis://`` URL of a cluster node is refused, and the URL to use instead."""
    parts = urlsplit(url)
    return (
        f"{describe_url(url)} is a node of a Redis Cluster: use "
        f"redis+cluster://{parts.hostname}:{parts.port or 6379} (any of its nodes)"
    )


def cluster_seeds(url: str) -> list[tuple[str, int]]:
    """The ``host:port`` nodes a cluster URL names (raises ``ValueError`` on a bad one)."""
    hosts = urlsplit(url).netloc.rpartition("@")[2]
    seeds: list[tuple[str, int]] = []
    for address in hosts.split(","):
        host, colon, port = address.rpartition(":")
        if not colon:
            host, port = address, "6379"
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"not host:port in the Redis Cluster URL: {address!r}")
        seeds.append((host.strip("[]"), int(port)))
    return seeds


def _cluster_credentials(url: str) -> tuple[str | None, str | None, bool]:
    """(user, password, TLS) of ``redis+cluster://[user:password@]host:port[,…][?password=]``."""
    parts = urlsplit(url)
    scheme = CLUSTER_SCHEMES.get(parts.scheme, parts.scheme)
    user, _, password = parts.netloc.rpartition("@")[0].partition(":")
    query = parse_qs(parts.query)
    if "password" in query:
        password = query["password"][0]
    return user or None, password or None, scheme == "rediss"


def cluster_client(url: str, **options: Any) -> RedisCluster:
    """A cluster client from ``redis+cluster://[user:password@]host:port[,host:port…]`` (the
    nodes are seeds: any one that answers tells the whole topology)."""
    user, password, tls = _cluster_credentials(url)
    seeds = [ClusterNode(host, port) for host, port in cluster_seeds(url)]
    return RedisCluster(startup_nodes=seeds, username=user, password=password, ssl=tls, **options)


def cluster_address(url: str) -> Address:
    """The pub/sub connections' credentials and TLS for the nodes of a cluster URL."""
    user, password, tls = _cluster_credentials(url)
    return Address(
        username=user, password=password, tls=ssl.create_default_context() if tls else None
    )


async def _drop_unsent_on_close(connection: Any) -> None:
    """Run on each new command connection: closing it resets it (``SO_LINGER`` 0), so the
    kernel drops what it has not delivered instead of sending it on.  A command cut off by a
    partition, whose caller was answered ``503`` when it timed out, must not reach Redis and
    run once the link is back (a publish refused, then published after all)."""
    writer = getattr(connection, "_writer", None)  # redis-py keeps its stream private
    sock = writer.get_extra_info("socket") if writer is not None else None
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await connection.on_connect()


class RedisBackend:
    """``RedisBackend("redis://127.0.0.1:6379/0", history_size=1000, history_ttl=3600)``;
    ``redis+cluster://10.0.0.1:7000,10.0.0.2:7000`` for a Redis Cluster."""

    def __init__(
        self,
        url: str,
        *,
        history_size: int,
        history_ttl: float,
    ) -> None:
        scheme = urlsplit(url).scheme
        if scheme not in ("redis", "rediss", "unix", *CLUSTER_SCHEMES):
            raise ValueError(
                "not a Redis URL (redis://, rediss://, unix:// or redis+cluster://): "
                f"{describe_url(url)!r}"
            )
        self.url = url
        self.where = describe_url(url)
        self.history_size = history_size
        self.ttl_ms = int(history_ttl * 1000)
        self.healthy = False
        #: A Redis Cluster (``redis+cluster://``).
        self.cluster = scheme in CLUSTER_SCHEMES
        self._options: dict[str, Any] = {
            "socket_connect_timeout": 5.0,
            "socket_keepalive": True,
        }
        # Commands wait (up to 5 s) for one of 128 connections rather than fail: redis-py's
        # default pool refuses the 101st concurrent command ("Too many connections"), which a
        # burst of subscribers reaches. A cluster client keeps a pool per node.
        self._redis: aioredis.Redis | RedisCluster = (
            cluster_client(url, socket_timeout=5.0, max_connections=1024, **self._options)
            if self.cluster
            else aioredis.Redis(
                connection_pool=aioredis.BlockingConnectionPool.from_url(
                    url,
                    max_connections=128,
                    timeout=5.0,
                    socket_timeout=5.0,
                    redis_connect_func=_drop_unsent_on_close,
                    **self._options,
                )
            )
        )
        self._channels: SingleChannels | ShardedChannels | None = None
        #: Publishes waiting for the next pipeline (see :meth:`batched`).
        self._queued: list[_Queued] = []
        self._flusher: asyncio.Task[None] | None = None
        self._last_batch = 0.0
        #: Our own connections for the batches (one per cluster node), see :meth:`_send`.
        self._address = cluster_address(url) if self.cluster else Address.from_url(url)
        self._commands: dict[tuple[str, int] | None, CommandConnection] = {}
        self._on_publication: Callable[[Publication], None] = lambda p: None
        self._on_finish: Callable[[str, str, int], None] = lambda t, e, h: None

    @property
    def redis(self) -> aioredis.Redis | RedisCluster:
        """The client for commands (shared with others, e.g. WebSocket presence and the run
        directory): a :class:`RedisCluster` on a cluster, so keep to one slot per command."""
        return self._redis

    async def start(
        self,
        on_publication: Callable[[Publication], None],
        on_reconnect: Callable[[], None],
        on_finish: Callable[[str, str, int], None],
    ) -> None:
        """Connect (raises :class:`BackendUnavailable` with a clear message if Redis cannot be
        reached) and start listening."""
        self._on_publication = on_publication
        self._on_finish = on_finish
        try:
            if not self.cluster and await self._is_cluster_node():
                raise BackendUnavailable(cluster_node_refusal(self.url))
            if isinstance(self._redis, RedisCluster):
                await self._redis.initialize()
            await self._redis.ping()
        except REDIS_ERRORS as exc:
            raise BackendUnavailable(f"cannot reach Redis at {self.where}: {exc}") from None
        self._publish_script = self._redis.register_script(_PUBLISH)
        self._snapshot_script = self._redis.register_script(_SNAPSHOT)
        self._fork_script = self._redis.register_script(_FORK)
        self._finish_script = self._redis.register_script(_FINISH)
        self._publish_many_script = self._redis.register_script(_PUBLISH_MANY)
        self.healthy = True
        # No read timeout on pub/sub connections (they may be quiet for hours): pings find a
        # dead one.
        if isinstance(self._redis, RedisCluster):
            self._channels = ShardedChannels(
                self._redis,
                self.where,
                address=cluster_address(self.url),
                deliver=self._deliver,
                on_reconnect=on_reconnect,
                set_healthy=self._set_healthy,
            )
        else:
            self._channels = SingleChannels(
                self.url,
                self.where,
                deliver=self._deliver,
                on_reconnect=on_reconnect,
                set_healthy=self._set_healthy,
                always=CONTROL_CHANNEL,
            )
        await self._channels.start()

    async def _is_cluster_node(self) -> bool:
        if urlsplit(self.url).scheme == "unix":
            return False
        info = await self._redis.info("cluster")
        return bool(info.get("cluster_enabled"))

    def _set_healthy(self, healthy: bool) -> None:
        self.healthy = healthy

    def _unavailable(self, exc: BaseException) -> BackendUnavailable:
        # Any failure of a command counts: besides its own errors, redis-py raises others when
        # a connection dies under a command (AttributeError, RuntimeError; seen in the chaos
        # soak), and a caller must get a 503, never a 500 or an unanswered request.
        self.healthy = False
        return BackendUnavailable(f"Redis at {self.where} is unreachable: {exc}")

    def _bounds(self, bounds: tuple[int, float] | None) -> tuple[int, int]:
        """(history size, TTL in ms): the topic's, else the backend's."""
        if bounds is None:
            return self.history_size, self.ttl_ms
        return bounds[0], int(bounds[1] * 1000)

    async def publish(
        self,
        topic: str,
        data: str,
        event: str | None,
        bounds: tuple[int, float] | None = None,
        claim: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> Publication:
        assert self._channels is not None, "start() first"
        now_ms = int(time.time() * 1000)
        size, ttl_ms = self._bounds(bounds)
        tags_json = orjson.dumps(tags).decode() if tags else ""
        args: list[str | int] = [
            new_epoch(),
            event or "",
            data,
            size,
            ttl_ms,
            channel_of(topic),
            now_ms,
            self._channels.publish_command,
            claim or "",
            tags_json,
        ]
        try:
            epoch, seq = await self.batched(self._publish_script, _keys(topic), args)
        except Exception as exc:  # see _unavailable
            raise self._unavailable(exc) from None
        if seq == -1:
            raise ClaimTaken(f"topic {topic!r} still holds an event claimed as {claim!r}")
        if seq == -2:
            raise TopicFinished(f"topic {topic!r} is finished")
        return Publication(
            topic, _text(epoch), int(seq), event, data, now_ms / 1000, dict(tags or {})
        )

    async def batched(
        self, script: AsyncScript, keys: list[str], args: Sequence[str | int | bytes]
    ) -> Any:
        """Run ``script`` (registered on :attr:`redis`) in the next batch, and return its
        reply: the publishes (and run records) of every topic made while one batch is on its
        way go together in the next (one write, one read, a fraction of redis-py's cost per
        call); one after a quiet spell goes alone, with no wait. (On a cluster, each master's
        share in one write to it.)"""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queued.append((script, keys, args, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queued:
            wait = self._last_batch + PUBLISH_LINGER - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            self._last_batch = loop.time()
            batch, self._queued = self._queued, []
            groups: dict[tuple[str, int] | None, list[_Queued]] = {}
            for queued in batch:
                groups.setdefault(self._node_of(queued[1][0]), []).append(queued)
            await asyncio.gather(*(self._send(node, items) for node, items in groups.items()))

    def _node_of(self, key: str) -> tuple[str, int] | None:
        """The cluster node that owns ``key``'s slot (None: the one Redis, or a slot that no
        node serves right now, which redis-py's slow path then finds)."""
        if not isinstance(self._redis, RedisCluster):
            return None
        with contextlib.suppress(*REDIS_ERRORS):
            node = self._redis.get_node_from_key(key)
            if node is not None:
                return node.host, int(node.port)
        return None

    async def _send(self, node: tuple[str, int] | None, batch: list[_Queued]) -> None:
        """The batch's ``EVALSHA`` commands in one write on our own connection to ``node``,
        and each caller answered with its reply: redis-py spends tens of µs per command
        (profiled under ``bench/run_tokens.py``), this a few.  A script not loaded there yet
        (a restart) and a cluster's redirections take redis-py's path, in order."""
        if node is None and isinstance(self._redis, RedisCluster):
            for script, keys, args, future in batch:
                _settle(future, await _slow(script, keys, args))
            return
        connection = None
        try:
            connection = await self._command_connection(node)
            # Each script loaded before its first use on this connection (a new one may be to
            # a restarted Redis): NOSCRIPT replies would take the slow path, one by one.
            load = {s.sha: s for s, *_ in batch if s.sha not in connection.scripts}
            connection.scripts.update(load)
            futures = connection.send(
                b"".join(pack("SCRIPT", "LOAD", _source(s)) for s in load.values())
                + b"".join(
                    pack("EVALSHA", script.sha, len(keys), *keys, *args)
                    for script, keys, args, _ in batch
                ),
                len(load) + len(batch),
            )[len(load) :]
            async with asyncio.timeout(COMMAND_TIMEOUT):
                with contextlib.suppress(ResponseError):  # that command's, not the connection's
                    await futures[-1]  # replies come in order: the last one comes last
        except (TimeoutError, OSError, ConnectionLost) as exc:
            if connection is not None:
                connection.close()  # replies may be left unread: never reuse it
            for *_, future in batch:
                _settle(future, ConnectionError(f"{type(exc).__name__}: {exc}"))
            return
        for (script, keys, args, future), reply in zip(batch, futures, strict=True):
            result = reply.exception() or reply.result()
            if isinstance(result, _REDIRECTED):
                result = await _slow(script, keys, args)
            _settle(future, result)

    async def _command_connection(self, node: tuple[str, int] | None) -> CommandConnection:
        """Our connection to ``node`` (the one Redis for None), opened again once lost; only
        the flusher sends on them, so batches go one at a time and in order."""
        connection = self._commands.get(node)
        if connection is None or connection.closed:
            address = self._address if node is None else self._address.node(*node)
            connection = self._commands[node] = await CommandConnection.open(address)
        return connection

    async def watch(self, topic: str) -> None:
        assert self._channels is not None, "start() first"
        await self._channels.watch(channel_of(topic))

    async def unwatch(self, topic: str) -> None:
        if self._channels is not None:
            await self._channels.unwatch(channel_of(topic))

    async def snapshot(self, topic: str, after: int | None, limit: int) -> Snapshot:
        args: list[str | int] = [new_epoch(), -1 if after is None else after, limit, self.ttl_ms]
        try:
            epoch, head, entries, finished = await self.batched(
                self._snapshot_script, _keys(topic), args
            )
        except Exception as exc:  # see _unavailable
            raise self._unavailable(exc) from None
        epoch = _text(epoch)
        if after is None:
            entries = list(reversed(entries))
        events = [self._entry(topic, epoch, entry_id, fields) for entry_id, fields in entries]
        return Snapshot(epoch, int(head), events, finished=bool(finished))

    @staticmethod
    def _entry(topic: str, epoch: str, entry_id: bytes, fields: Any) -> Publication:
        values = (
            dict(zip(fields[::2], fields[1::2], strict=True))
            if isinstance(fields, list)
            else fields
        )
        event = _text(values[b"e"]) or None
        offset = int(_text(entry_id).split("-", 1)[0])
        tags = orjson.loads(values[b"g"]) if b"g" in values else {}
        return Publication(
            topic, epoch, offset, event, _text(values[b"d"]), int(values[b"t"]) / 1000, tags
        )

    async def publish_many(
        self,
        topic: str,
        events: Sequence[tuple[str | None, str]],
        bounds: tuple[int, float] | None = None,
    ) -> list[Publication]:
        assert self._channels is not None, "start() first"
        now_ms = int(time.time() * 1000)
        size, ttl_ms = self._bounds(bounds)
        args: list[str | int] = [
            new_epoch(),
            size,
            ttl_ms,
            channel_of(topic),
            now_ms,
            self._channels.publish_command,
        ]
        for event, data in events:
            args += (event or "", data)
        try:
            epoch, first = await self.batched(self._publish_many_script, _keys(topic), args)
        except Exception as exc:  # see _unavailable
            raise self._unavailable(exc) from None
        if first == -2:
            raise TopicFinished(f"topic {topic!r} is finished")
        epoch = _text(epoch)
        return [
            Publication(topic, epoch, first + i, event, data, now_ms / 1000)
            for i, (event, data) in enumerate(events)
        ]

    async def finish(self, topic: str) -> None:
        assert self._channels is not None, "start() first"
        args: list[str | int] = [
            new_epoch(),
            self.ttl_ms,
            channel_of(topic),
            self._channels.publish_command,
            FINISH_NOTICE,
        ]
        try:
            await self.batched(self._finish_script, _keys(topic), args)
        except Exception as exc:  # see _unavailable
            raise self._unavailable(exc) from None

    async def fork(self, topic: str, epoch: str, seen_head: int | None) -> bool:
        """Give ``topic`` a new epoch if it still has ``epoch`` and (with ``seen_head``) a head
        below what this process saw: after a failover that lost acknowledged writes, offsets
        would otherwise be reused for other events.  True if this call forked it."""
        args: list[str | int] = [
            epoch,
            -1 if seen_head is None else seen_head,
            new_epoch(),
            self.ttl_ms,
        ]
        try:
            forked = await self.batched(self._fork_script, _keys(topic), args)
        except Exception as exc:  # see _unavailable
            raise self._unavailable(exc) from None
        return bool(forked)

    async def heads(self, topics: Sequence[str]) -> dict[str, Head]:
        try:
            # Not a transaction: on a cluster the topics' keys live in different slots.
            async with self._redis.pipeline(transaction=False) as pipe:
                for topic in topics:
                    pipe.hmget(_keys(topic)[0], "epoch", "seq", "finished")
                results = await pipe.execute()
        except Exception as exc:  # see _unavailable
            raise self._unavailable(exc) from None
        self.healthy = True
        return {
            topic: Head(_text(epoch) if epoch is not None else None, int(seq or 0), bool(done))
            for topic, (epoch, seq, done) in zip(topics, results, strict=True)
        }

    async def aclose(self) -> None:
        if self._flusher is not None:  # what was accepted is stored (or fails) first
            await asyncio.wait({self._flusher}, timeout=5)
        if self._channels is not None:
            await self._channels.aclose()
        for connection in self._commands.values():
            connection.close()
        with contextlib.suppress(*REDIS_ERRORS):
            await self._redis.aclose()

    def _deliver(self, channel: str, data: str) -> None:
        if not channel.startswith(CHANNEL_PREFIX + "{"):
            return
        topic = channel[len(CHANNEL_PREFIX) + 1 : -1]
        if data.startswith("{"):  # one tagged publication (see _PUBLISH)
            epoch, seq, at_ms, event, body, tags = orjson.loads(data)["t"]
            self._on_publication(
                Publication(
                    topic, epoch, int(seq), event or None, body, at_ms / 1000, orjson.loads(tags)
                )
            )
            return
        if data.startswith("["):  # a batch (publish_many); an epoch never starts with "["
            epoch, first, at_ms, items = orjson.loads(data)
            for i in range(0, len(items), 2):
                self._on_publication(
                    Publication(
                        topic, epoch, first + i // 2, items[i] or None, items[i + 1], at_ms / 1000
                    )
                )
            return
        epoch, seq, at_ms, event, body = data.split("\n", 4)
        if event == FINISH_NOTICE:
            self._on_finish(topic, epoch, int(seq))
            return
        self._on_publication(
            Publication(topic, epoch, int(seq), event or None, body, int(at_ms) / 1000)
        )
