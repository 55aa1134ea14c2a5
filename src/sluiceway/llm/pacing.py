"""Pacing: token events at a steady rate for clients that want smooth output.

Tokens arrive in bursts (a provider's network chunks, a replay).  :func:`paced` lets token events
through at most ``rate`` per second; when the client falls more than a second behind, the
tokens waiting are merged into one event (its ``text`` joined, its id the last one's), so being
behind costs fewer events instead of a growing queue.  Other events pass at once, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator

import orjson

from sluiceway.sse import Event


def _merge(events: list[Event]) -> Event:
    if len(events) == 1:
        return events[0]
    text = "".join(orjson.loads(e.data or "{}")["text"] for e in events)
    return Event(data=orjson.dumps({"text": text}).decode(), event="token", id=events[-1].id)


async def paced(events: AsyncIterator[Event], rate: float) -> AsyncIterator[Event]:
    """``events`` with ``token`` events spaced ``1 / rate`` seconds apart (a token bucket
    holding one token), merged when more than ``rate`` of them are waiting.

    >>> async for event in paced(generation_events, rate=30):   # doctest: +SKIP
    ...     ...
    """
    if rate <= 0:
        raise ValueError("rate must be positive")
    waiting: deque[Event] = deque()
    arrived = asyncio.Event()
    ended = False

    async def read() -> None:
        nonlocal ended
        try:
            async for event in events:
                waiting.append(event)
                arrived.set()
        finally:
            ended = True
            arrived.set()

    loop = asyncio.get_running_loop()
    reader = loop.create_task(read())
    interval = 1 / rate
    next_at = loop.time()
    try:
        while True:
            while not waiting:
                if ended:
                    reader.result()  # re-raise what stopped the source, if anything did
                    return
                arrived.clear()
                await arrived.wait()
            event = waiting.popleft()
            if event.event != "token":
                yield event
                continue
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            batch = [event]
            if sum(1 for e in waiting if e.event == "token") > rate:  # over a second behind
                while waiting and waiting[0].event == "token":
                    batch.append(waiting.popleft())
            next_at = max(next_at, loop.time() - interval) + interval
            yield _merge(batch)
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
