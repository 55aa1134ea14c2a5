"""Peer (a): sse-starlette's EventSourceResponse over a per-subscriber asyncio.Queue.

Written the way the sse-starlette README shows it: an async generator yielding
dicts, wrapped in ``EventSourceResponse``. Run with uvicorn, e.g.::

    uvicorn sse_starlette_app:app --app-dir bench/peers --loop uvloop --http httptools
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

subscribers: defaultdict[str, set[asyncio.Queue[dict[str, Any]]]] = defaultdict(set)
ids = itertools.count(1)


async def publish(request: Request) -> JSONResponse:
    body = await request.json()
    data = body.get("data")
    if not isinstance(data, str):
        data = json.dumps(data, separators=(",", ":"))
    event_id = str(next(ids))
    event = {"id": event_id, "data": data}
    for queue in subscribers.get(request.path_params["topic"], ()):
        queue.put_nowait(event)
    return JSONResponse({"id": event_id})


async def subscribe(request: Request) -> EventSourceResponse:
    topic = request.path_params["topic"]
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    # Register before the response starts so an event published right after the
    # client sees the headers is not missed.
    subscribers[topic].add(queue)

    async def events() -> AsyncIterator[dict[str, Any]]:
        try:
            while True:
                yield await queue.get()
        finally:
            subscribers[topic].discard(queue)

    return EventSourceResponse(events())


async def healthz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


app = Starlette(
    routes=[
        Route("/topics/{topic}", publish, methods=["POST"]),
        Route("/topics/{topic}", subscribe, methods=["GET"]),
        Route("/healthz", healthz),
    ]
)
