"""The app of ``bench/user_runs.py``: a user's own producer, served two ways.

* ``POST /runs?n=N``: ``runs.respond(produce(n))`` — a detached run (resumable, cancellable,
  followed through the hub), what this project offers;
* ``POST /plain?n=N``: ``StreamingResponse`` over the same generator, each item formatted
  as an SSE ``data:`` line — what the tutorials do (nothing survives the client leaving).

The producer yields small JSON objects and never awaits: its own cost is measured apart
(``python bench/peers/user_runs_app.py --producer-only``), so that the server's CPU per item
minus it is what serving it costs.

    uvicorn user_runs_app:app --app-dir bench/peers --loop uvloop --http httptools
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator

import uvloop
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from sluiceway.hub import Hub
from sluiceway.runs import RunLimits, Runs

runs = Runs(Hub(), family="item", limits=RunLimits(max_concurrent=4096, retention=30))


def items(n: int) -> Iterator[dict[str, int]]:
    for i in range(n):
        yield {"i": i, "of": n}


async def produce(n: int, awaits: bool = False) -> AsyncIterator[dict[str, int]]:
    """``awaits``: give the event loop a turn before each item, as a producer that awaits
    I/O per item does (then every item is published, and read, on its own)."""
    for item in items(n):
        if awaits:
            await asyncio.sleep(0)
        yield item


def producer_of(request: Request) -> AsyncIterator[dict[str, int]]:
    query = request.query_params
    return produce(int(query["n"]), awaits=query.get("awaits") == "1")


async def with_runs(request: Request) -> Response:
    return await runs.respond(producer_of(request))


async def plain(request: Request) -> Response:
    async def events() -> AsyncIterator[str]:
        async for item in producer_of(request):
            yield f"data: {json.dumps(item)}\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


app = Starlette(
    routes=[
        Route("/runs", with_runs, methods=["POST"]),
        Route("/plain", plain, methods=["POST"]),
        Route("/healthz", healthz),
    ],
    lifespan=runs.lifespan,
)


async def _consume(n: int, awaits: bool) -> None:
    async for _ in produce(n, awaits):
        pass


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--producer-only", type=int, default=300_000, metavar="N")
    parser.add_argument("--awaits", action="store_true")
    args = parser.parse_args()
    uvloop.install()
    start = time.process_time()
    asyncio.run(_consume(args.producer_only, args.awaits))
    spent = time.process_time() - start
    print(json.dumps({"producer_us_per_item": spent / args.producer_only * 1e6}))
