"""Who is subscribed to a channel: in this process, or shared by every process through Redis.

Each entry is a connection's ``ClientInfo`` (``user``, ``client``, ``conn_info``,
``chan_info``). The Redis store gives entries a deadline that their process renews; the
entries of a process that died expire with their deadline instead of lingering.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Protocol

import orjson

if TYPE_CHECKING:  # a server without Redis does not import it (0.3 s at every start)
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

ClientInfo = dict[str, Any]


class Presence(Protocol):
    async def add(self, channel: str, client: str, info: ClientInfo) -> None: ...

    async def remove(self, channel: str, client: str) -> None: ...

    async def get(self, channel: str) -> dict[str, ClientInfo]: ...

    async def refresh(self, entries: list[tuple[str, str, ClientInfo]]) -> None:
        """Renew the deadlines of this process's live entries (called periodically)."""


class MemoryPresence:
    """Presence of this process's connections."""

    def __init__(self) -> None:
        self._channels: dict[str, dict[str, ClientInfo]] = {}

    async def add(self, channel: str, client: str, info: ClientInfo) -> None:
        self._channels.setdefault(channel, {})[client] = info

    async def remove(self, channel: str, client: str) -> None:
        clients = self._channels.get(channel)
        if clients is not None:
            clients.pop(client, None)
            if not clients:
                del self._channels[channel]

    async def get(self, channel: str) -> dict[str, ClientInfo]:
        return dict(self._channels.get(channel, {}))

    async def refresh(self, entries: list[tuple[str, str, ClientInfo]]) -> None:
        return None


# Drop the expired entries of one channel and return the rest, atomically.
_GET = """
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
if #expired > 0 then
  redis.call('HDEL', KEYS[1], unpack(expired))
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
end
return redis.call('HGETALL', KEYS[1])
"""


class RedisPresence:
    """Presence shared through Redis (or a Redis Cluster: a channel's two keys share a hash
    slot, and pipelines are not transactions): a hash of entries and a sorted set of their
    deadlines per channel; both keys expire when nobody renews them."""

    def __init__(
        self, redis: Redis | RedisCluster, *, ttl: float = 60.0, prefix: str = "sluiceway:"
    ) -> None:
        self._redis = redis
        self.ttl = ttl
        self._prefix = prefix
        self._get_script = redis.register_script(_GET)

    def _keys(self, channel: str) -> tuple[str, str]:
        base = f"{self._prefix}presence:{{{channel}}}"
        return f"{base}:entries", f"{base}:deadlines"

    async def add(self, channel: str, client: str, info: ClientInfo) -> None:
        await self.refresh([(channel, client, info)])

    async def refresh(self, entries: list[tuple[str, str, ClientInfo]]) -> None:
        if not entries:
            return
        deadline = time.time() + self.ttl
        key_ttl = int(self.ttl) + 1
        async with self._redis.pipeline(transaction=False) as pipe:
            for channel, client, info in entries:
                entries_key, deadlines_key = self._keys(channel)
                pipe.hset(entries_key, client, orjson.dumps(info))
                pipe.zadd(deadlines_key, {client: deadline})
                pipe.expire(entries_key, key_ttl)
                pipe.expire(deadlines_key, key_ttl)
            await pipe.execute()

    async def remove(self, channel: str, client: str) -> None:
        entries_key, deadlines_key = self._keys(channel)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hdel(entries_key, client)
            pipe.zrem(deadlines_key, client)
            await pipe.execute()

    async def get(self, channel: str) -> dict[str, ClientInfo]:
        flat = await self._get_script(keys=list(self._keys(channel)), args=[time.time()])
        return {_text(flat[i]): orjson.loads(flat[i + 1]) for i in range(0, len(flat), 2)}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
