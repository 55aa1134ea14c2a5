"""Peer (b): the tutorial pattern people copy.

Starlette ``StreamingResponse`` over a per-subscriber ``asyncio.Queue``, yielding
hand-formatted ``f"data: ...\\n\\n"`` strings. Run with uvicorn, e.g.::

    uvicorn tutorial_app:app --app-dir bench/peers --loop uvloop --http httptools
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import defaultdict
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route

subscribers: defaultdict[str, set[asyncio.Queue[tuple[str, str]]]] = defaultdict(set)
ids = itertools.count(1)


async def publish(request: Request) -> JSONResponse:
    body = await request.json()
    data = body.get("data")
    if not isinstance(data, str):
        data = json.dumps(data, separators=(",", ":"))
    event_id = str(next(ids))
    for queue in subscribers.get(request.path_params["topic"], ()):
        queue.put_nowait((event_id, data))
    return JSONResponse({"id": event_id})


async def subscribe(request: Request) -> StreamingResponse:
    topic = request.path_params["topic"]
    queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    # Register before the response starts so an event published right after the
    # client sees the headers is not missed.
    subscribers[topic].add(queue)

    async def events() -> AsyncIterator[str]:
        try:
            while True:
                event_id, data = await queue.get()
                yield f"id: {event_id}\ndata: {data}\n\n"
        finally:
            subscribers[topic].discard(queue)

    return StreamingResponse(events(), media_type="text/event-stream")


async def healthz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


app = Starlette(
    routes=[
        Route("/topics/{topic}", publish, methods=["POST"]),
        Route("/topics/{topic}", subscribe, methods=["GET"]),
        Route("/healthz", healthz),
    ]
)
