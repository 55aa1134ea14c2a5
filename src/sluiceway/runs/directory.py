"""Where a run can be found from any process.

A run goes on in the process that started it. With the Redis backend its topic is shared, so
any process can replay and follow it; this directory shares the rest:

* a description of each run (its owner, creation time, meta, what its wire formats need, its
  state once it ended), so another process can answer for it (:class:`RemoteRun`);
* cancel requests, published to every process, acted on by the one that runs it;
* which runs are followed somewhere: a reader in another process keeps a run from being
  abandoned;
* the Vercel AI SDK's chat → run index.

In one process (:class:`RunDirectory`) all of this is a no-op: a run is found where it goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError
from redis.typing import EncodableT

if TYPE_CHECKING:
    from sluiceway.runs.run import Run

logger = logging.getLogger("sluiceway.runs")

PREFIX = "sluiceway:run:"
CANCEL_CHANNEL = "sluiceway:run-cancel"
#: How long a "followed here" mark lasts; readers renew it every sweep.
WATCHED_TTL = 5


@dataclass
class RemoteRun:
    """A run that goes (or went) on in another process, as this one can serve it."""

    id: str
    topic: str
    created: float
    state: str
    finish_reason: str | None = None
    background: bool = False
    annotations: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    owner: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        if self.state != "running":
            self.done.set()

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def model(self) -> str:
        return str(self.meta.get("model", ""))

    @property
    def provider(self) -> str:
        return str(self.meta.get("provider", ""))


class RunDirectory:
    """The in-process directory: runs are only found where they go on."""

    shared = False

    async def start(self, on_cancel: Callable[[str], object]) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def register(self, run: Run) -> None:
        return None

    async def ended(self, run: Run) -> None:
        return None

    async def lookup(self, run_id: str) -> RemoteRun | None:
        return None

    async def request_cancel(self, run_id: str) -> None:
        return None

    async def mark_watched(self, run_ids: list[str]) -> None:
        return None

    async def watched(self, run_ids: list[str]) -> set[str]:
        return set()

    async def set_chat(self, chat_id: str, run_id: str | None) -> None:
        return None

    async def chat(self, chat_id: str) -> str | None:
        return None


class RedisRunDirectory(RunDirectory):
    """The directory shared by every process on one Redis (hashes that expire with the runs'
    retention, and one pub/sub channel for cancel requests)."""

    shared = True

    def __init__(self, redis: Redis, *, keep_for: float) -> None:
        self._redis = redis
        self._keep_ms = int(keep_for * 1000)
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
                except (RedisError, OSError):
                    await asyncio.sleep(1.0)  # redis-py reconnects on the next call
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
        fields: dict[EncodableT, EncodableT] = {
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
        fields: dict[EncodableT, EncodableT] = {
            "state": run.state.value,
            "finish_reason": run.finish_reason or "",
        }
        await self._write(run.id, fields)

    async def _write(self, run_id: str, fields: dict[EncodableT, EncodableT]) -> None:
        key = PREFIX + run_id
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping=fields)
                pipe.pexpire(key, self._keep_ms)
                await pipe.execute()
        except (RedisError, OSError):
            logger.warning("could not record run %s in Redis", run_id)

    async def lookup(self, run_id: str) -> RemoteRun | None:
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
        await self._redis.publish(CANCEL_CHANNEL, run_id)

    async def mark_watched(self, run_ids: list[str]) -> None:
        if not run_ids:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for run_id in run_ids:
                pipe.set(f"{PREFIX}{run_id}:watched", 1, ex=WATCHED_TTL)
            await pipe.execute()

    async def watched(self, run_ids: list[str]) -> set[str]:
        if not run_ids:
            return set()
        keys = [f"{PREFIX}{run_id}:watched" for run_id in run_ids]
        marks = await self._redis.mget(keys)
        return {rid for rid, mark in zip(run_ids, marks, strict=True) if mark}

    async def set_chat(self, chat_id: str, run_id: str | None) -> None:
        key = f"sluiceway:chat:{chat_id}"
        if run_id is None:
            await self._redis.delete(key)
        else:
            await self._redis.set(key, run_id, px=self._keep_ms)

    async def chat(self, chat_id: str) -> str | None:
        found = await self._redis.get(f"sluiceway:chat:{chat_id}")
        return _text(found) if found is not None else None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
