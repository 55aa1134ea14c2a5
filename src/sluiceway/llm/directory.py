"""Where a generation can be found from any process.

A generation runs in the process that started it. With the Redis backend its topic is shared,
so any process can replay and follow it; this directory shares the rest:

* a description of each generation (model, creation time, what its wire formats need, its
  state once it ended), so another process can answer for it (``RemoteGeneration``);
* cancel requests, published to every process, acted on by the one that runs it;
* which generations are watched somewhere: a reader in another process keeps a generation
  from being abandoned;
* the Vercel AI SDK's chat → generation index.

In one process (:class:`GenerationDirectory`) all of this is a no-op: a generation is found
where it runs.
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

if TYPE_CHECKING:
    from sluiceway.llm.generation import Generation

logger = logging.getLogger("sluiceway.llm")

PREFIX = "sluiceway:generation:"
CANCEL_CHANNEL = "sluiceway:generation-cancel"
#: How long a "watched here" mark lasts; readers renew it every sweep.
WATCHED_TTL = 5


@dataclass
class RemoteGeneration:
    """A generation that runs (or ran) in another process, as this one can serve it."""

    id: str
    topic: str
    model: str
    provider: str
    created: float
    state: str
    finish_reason: str | None = None
    background: bool = False
    annotations: dict[str, Any] = field(default_factory=dict)
    owner: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        if self.state != "running":
            self.done.set()

    @property
    def running(self) -> bool:
        return self.state == "running"


class GenerationDirectory:
    """The in-process directory: generations are only found where they run."""

    shared = False

    async def start(self, on_cancel: Callable[[str], object]) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def register(self, generation: Generation) -> None:
        return None

    async def ended(self, generation: Generation) -> None:
        return None

    async def lookup(self, generation_id: str) -> RemoteGeneration | None:
        return None

    async def request_cancel(self, generation_id: str) -> None:
        return None

    async def mark_watched(self, generation_ids: list[str]) -> None:
        return None

    async def watched(self, generation_ids: list[str]) -> set[str]:
        return set()

    async def set_chat(self, chat_id: str, generation_id: str | None) -> None:
        return None

    async def chat(self, chat_id: str) -> str | None:
        return None


class RedisDirectory(GenerationDirectory):
    """The directory shared by every process on one Redis (hashes that expire with the
    generations' retention, and one pub/sub channel for cancel requests)."""

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

    async def register(self, generation: Generation) -> None:
        fields = {
            "topic": generation.topic,
            "model": generation.model,
            "provider": generation.provider.name,
            "created": repr(generation.created),
            "state": generation.state.value,
            "background": "1" if generation.background else "",
            "annotations": orjson.dumps(generation.annotations),
            "owner": orjson.dumps(generation.owner),  # JSON: a subject may be any string
        }
        await self._write(generation.id, fields)

    async def ended(self, generation: Generation) -> None:
        fields = {"state": generation.state.value, "finish_reason": generation.finish_reason or ""}
        await self._write(generation.id, fields)

    async def _write(self, generation_id: str, fields: dict[str, Any]) -> None:
        key = PREFIX + generation_id
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping=fields)
                pipe.pexpire(key, self._keep_ms)
                await pipe.execute()
        except (RedisError, OSError):
            logger.warning("could not record generation %s in Redis", generation_id)

    async def lookup(self, generation_id: str) -> RemoteGeneration | None:
        raw = await self._redis.hgetall(PREFIX + generation_id)
        if not raw:
            return None
        found = {_text(k): _text(v) for k, v in raw.items()}
        return RemoteGeneration(
            id=generation_id,
            topic=found["topic"],
            model=found["model"],
            provider=found["provider"],
            created=float(found["created"]),
            state=found["state"],
            finish_reason=found.get("finish_reason") or None,
            background=bool(found.get("background")),
            annotations=orjson.loads(found.get("annotations") or "{}"),
            owner=orjson.loads(found.get("owner") or "null"),
        )

    async def request_cancel(self, generation_id: str) -> None:
        await self._redis.publish(CANCEL_CHANNEL, generation_id)

    async def mark_watched(self, generation_ids: list[str]) -> None:
        if not generation_ids:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for generation_id in generation_ids:
                pipe.set(f"{PREFIX}{generation_id}:watched", 1, ex=WATCHED_TTL)
            await pipe.execute()

    async def watched(self, generation_ids: list[str]) -> set[str]:
        if not generation_ids:
            return set()
        keys = [f"{PREFIX}{generation_id}:watched" for generation_id in generation_ids]
        marks = await self._redis.mget(keys)
        return {gid for gid, mark in zip(generation_ids, marks, strict=True) if mark}

    async def set_chat(self, chat_id: str, generation_id: str | None) -> None:
        key = f"sluiceway:chat:{chat_id}"
        if generation_id is None:
            await self._redis.delete(key)
        else:
            await self._redis.set(key, generation_id, px=self._keep_ms)

    async def chat(self, chat_id: str) -> str | None:
        found = await self._redis.get(f"sluiceway:chat:{chat_id}")
        return _text(found) if found is not None else None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
