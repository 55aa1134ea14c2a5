"""The run directory shared by every process on one Redis or one Redis Cluster (see
:mod:`sluiceway.runs.directory`).

Every command names one key (a run's hash, its "watched" mark, a chat's pointer), so each goes
to the node that owns it on a cluster.  A cancel request is recorded in the run's hash and
announced on a pub/sub channel: the announcement is the fast path, and the owner also reads the
record of its running runs every second, so a request made while its listener reconnects (or
while a cluster fails over) still lands.

Needs the ``redis`` extra (``pip install "sluiceway[redis]"``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import RedisClusterException, RedisError

from sluiceway.runs.directory import DirectoryUnavailable, RemoteRun, RunDirectory

if TYPE_CHECKING:
    from sluiceway.runs.run import Run

logger = logging.getLogger("sluiceway.runs")


@contextlib.contextmanager
def _reachable() -> Iterator[None]:
    """Redis' own errors leave as :class:`DirectoryUnavailable`."""
    try:
        yield
    except (RedisError, RedisClusterException, OSError) as exc:
        raise DirectoryUnavailable(str(exc)) from exc


PREFIX = "sluiceway:run:"
CANCEL_CHANNEL = "sluiceway:run-cancel"
#: How long a "followed here" mark lasts; readers renew it every sweep.
WATCHED_TTL = 5


#: A run's record written and its expiry set in one step: KEYS[1] the hash, ARGV[1] the
#: expiry in ms, then field, value, ...
_RECORD = """
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""

#: Runs a registered script in the backend's next batch (:meth:`RedisBackend.batched`).
Batched = Callable[[AsyncScript, list[str], Sequence[str | int | bytes]], Awaitable[Any]]


class RedisRunDirectory(RunDirectory):
    """The directory shared by every process on one Redis (hashes that expire with the runs'
    retention, and one pub/sub channel for cancel requests).

    ``batched`` (the hub backend's) sends each record with the publishes in flight: a run's
    start and end cost a share of one round trip, not a redis-py transaction each."""

    shared = True

    def __init__(
        self, redis: Redis | RedisCluster, *, keep_for: float, batched: Batched | None = None
    ) -> None:
        self._redis = redis
        self._keep_ms = int(keep_for * 1000)
        self._record = redis.register_script(_RECORD)
        self._batched = batched
        self._listener: asyncio.Task[None] | None = None

    async def start(self, on_cancel: Callable[[str], object]) -> None:
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(CANCEL_CHANNEL)
        self._listener = asyncio.get_running_loop().create_task(self._listen(pubsub, on_cancel))

    async def _listen(self, pubsub: Any, on_cancel: Callable[[str], object]) -> None:
        try:
            while True:
                try:
                    message = await pubsub.get_message(timeout=5.0)
                except Exception:  # redis-py's, or RuntimeError when a resubscribe failed
                    # A new subscription, on whichever node serves the channel now (a
                    # cluster's may have failed over); requests meanwhile are read from the
                    # runs' records by the sweeper.
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()
                    await asyncio.sleep(1.0)
                    pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
                    with contextlib.suppress(Exception):  # else the next round tries again
                        await pubsub.subscribe(CANCEL_CHANNEL)
                    continue
                if message is not None and message.get("type") == "message":
                    data = message["data"]
                    on_cancel(data.decode() if isinstance(data, bytes) else str(data))
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def aclose(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener

    async def register(self, run: Run) -> None:
        fields: dict[str, str | bytes] = {
            "topic": run.topic,
            "created": repr(run.created),
            "state": run.state.value,
            "background": "1" if run.background else "",
            "annotations": orjson.dumps(run.annotations),
            "meta": orjson.dumps(run.meta),
            "owner": orjson.dumps(run.owner),  # JSON: an owner may be any string
        }
        await self._write(run.id, fields)

    async def ended(self, run: Run) -> None:
        fields: dict[str, str | bytes] = {
            "state": run.state.value,
            "finish_reason": run.finish_reason or "",
        }
        await self._write(run.id, fields)

    async def _write(self, run_id: str, fields: dict[str, str | bytes]) -> None:
        keys = [PREFIX + run_id]
        args: list[str | int | bytes] = [self._keep_ms]
        for field, value in fields.items():
            args += (field, value)
        try:
            if self._batched is not None:
                await self._batched(self._record, keys, args)
            else:
                await self._record(keys=keys, args=args)
        except (RedisError, RedisClusterException, OSError):
            logger.warning("could not record run %s in Redis", run_id)

    async def lookup(self, run_id: str) -> RemoteRun | None:
        with _reachable():
            raw = await self._redis.hgetall(PREFIX + run_id)
            if not raw:
                return None
            found = {_text(k): _text(v) for k, v in raw.items()}
            return RemoteRun(
                id=run_id,
                topic=found["topic"],
                created=float(found["created"]),
                state=found["state"],
                finish_reason=found.get("finish_reason") or None,
                background=bool(found.get("background")),
                annotations=orjson.loads(found.get("annotations") or "{}"),
                meta=orjson.loads(found.get("meta") or "{}"),
                owner=orjson.loads(found.get("owner") or "null"),
            )

    async def request_cancel(self, run_id: str) -> None:
        with _reachable():
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hset(PREFIX + run_id, "cancel", "1")
                pipe.pexpire(PREFIX + run_id, self._keep_ms)  # never a record without expiry
                await pipe.execute()
            await self._redis.publish(CANCEL_CHANNEL, run_id)

    async def cancel_requested(self, run_ids: list[str]) -> set[str]:
        with _reachable():
            if not run_ids:
                return set()
            async with self._redis.pipeline(transaction=False) as pipe:
                for run_id in run_ids:
                    pipe.hget(PREFIX + run_id, "cancel")
                marks = await pipe.execute()
            return {rid for rid, mark in zip(run_ids, marks, strict=True) if mark}

    async def mark_watched(self, run_ids: list[str]) -> None:
        with _reachable():
            if not run_ids:
                return
            async with self._redis.pipeline(transaction=False) as pipe:
                for run_id in run_ids:
                    pipe.set(f"{PREFIX}{run_id}:watched", 1, ex=WATCHED_TTL)
                await pipe.execute()

    async def watched(self, run_ids: list[str]) -> set[str]:
        with _reachable():
            if not run_ids:
                return set()
            # One GET per key (not MGET): on a cluster the marks live in different slots.
            async with self._redis.pipeline(transaction=False) as pipe:
                for run_id in run_ids:
                    pipe.get(f"{PREFIX}{run_id}:watched")
                marks = await pipe.execute()
            return {rid for rid, mark in zip(run_ids, marks, strict=True) if mark}

    async def set_chat(self, chat_id: str, run_id: str | None) -> None:
        with _reachable():
            key = f"sluiceway:chat:{chat_id}"
            if run_id is None:
                await self._redis.delete(key)
            else:
                await self._redis.set(key, run_id, px=self._keep_ms)

    async def chat(self, chat_id: str) -> str | None:
        with _reachable():
            found = await self._redis.get(f"sluiceway:chat:{chat_id}")
            return _text(found) if found is not None else None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
