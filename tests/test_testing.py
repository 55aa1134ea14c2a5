"""``sluiceway.testing``: streaming responses of an ASGI app in process, as users test theirs.

The seeds' pattern — ``client.stream("GET", ...)``, read five events, break — returns at once
on a stream that never ends (httpx's own ``ASGITransport`` waits for the end of the body);
leaving the block disconnects, so the producer's ``finally`` has run; ``Last-Event-ID``
resumes; FastAPI, Starlette and Sluiceway's own app alike.
"""

from __future__ import annotations

import asyncio
import doctest
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import sluiceway.testing
from sluiceway.asgi import EventStreamResponse
from sluiceway.client import EventSource
from sluiceway.hub import Hub
from sluiceway.server import create_app
from sluiceway.server.settings import Settings
from sluiceway.sse import Event, Parser
from sluiceway.testing import StreamingASGITransport, client


def test_doctests() -> None:
    assert doctest.testmod(sluiceway.testing, raise_on_error=False).failed == 0


def ticking_app() -> tuple[FastAPI, list[str]]:
    """A FastAPI app whose stream never ends; ``log`` says what its producer did."""
    app = FastAPI()
    log: list[str] = []

    @app.get("/ticks")
    async def ticks(request: Request) -> EventStreamResponse:
        start = int(request.headers.get("last-event-id") or 0)

        async def produce() -> AsyncIterator[Event]:
            log.append(f"started after {start}")
            n = start
            try:
                while True:
                    n += 1
                    yield Event(data=f"tick {n}", id=str(n))
                    await asyncio.sleep(0.01)
            finally:
                log.append(f"finally after {n}")

        return EventStreamResponse(produce())

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, Any]:
        return {
            "got": await request.json(),
            "client": request.client.host if request.client else None,
        }

    return app, log


async def test_the_seeds_testing_pattern_returns_and_the_producer_ends() -> None:
    app, log = ticking_app()
    events: list[Event] = []
    parser = Parser()
    # The seeds' own lines, with this transport in place of httpx.ASGITransport.
    async with (
        httpx.AsyncClient(transport=StreamingASGITransport(app), base_url="http://test") as http,
        http.stream("GET", "/ticks") as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for chunk in response.aiter_bytes():
            events += parser.feed(chunk)
            if len(events) >= 5:
                break
    assert [event.data for event in events[:5]] == [f"tick {n}" for n in range(1, 6)]
    # Leaving the block disconnected the client: the producer's finally has already run.
    assert log[0] == "started after 0" and log[1].startswith("finally after ")


async def test_last_event_id_resumes_through_the_app() -> None:
    app, log = ticking_app()
    async with client(app) as http:
        seen: list[str] = []
        async with EventSource("http://localhost/ticks", client=http) as source:
            async for event in source:
                seen.append(event.data or "")
                if len(seen) == 3:
                    resume_from = source.last_event_id
                    break
        async with EventSource(
            "http://localhost/ticks", client=http, last_event_id=resume_from
        ) as source:
            async for event in source:
                seen.append(event.data or "")
                if len(seen) == 5:
                    break
    assert seen == [f"tick {n}" for n in range(1, 6)]
    assert log[2] == "started after 3"


async def test_sluiceways_own_app_in_process_with_its_lifespan() -> None:
    """The whole server as an app: its lifespan starts the hub; publish, then stream."""
    hub = Hub()
    app = create_app(Settings(), hub)
    async with client(app) as http:
        first = await http.post("/topics/news", json={"data": {"n": 1}})
        assert first.status_code == 200, first.text
        parser = Parser()
        got: list[Event] = []
        async with http.stream(
            "GET", "/topics/news", headers={"last-event-id": first.json()["id"]}
        ) as response:
            await http.post("/topics/news", json={"data": {"n": 2}})
            async for chunk in response.aiter_bytes():
                got += parser.feed(chunk)
                if got:
                    break
        assert [json.loads(event.data or "") for event in got] == [{"n": 2}]
        assert hub.open_streams == 0  # the stream ended when the block was left
        bad = await http.get("/topics/news", headers={"last-event-id": "garbage"})
        assert bad.status_code == 400


async def test_request_bodies_errors_and_plain_responses() -> None:
    app, _ = ticking_app()
    async with client(app) as http:
        echoed = await http.post("/echo", json={"a": [1, 2]})
        assert echoed.json() == {"got": {"a": [1, 2]}, "client": "127.0.0.1"}
        assert (await http.get("/missing")).status_code == 404

    async def fails_at_once(request: Request) -> Response:
        raise RuntimeError("boom before the response")

    async def fails_midway(request: Request) -> Response:
        async def produce() -> AsyncIterator[str]:
            yield "one"
            raise RuntimeError("boom in the body")

        return EventStreamResponse(produce())

    async def plain(request: Request) -> Response:
        return JSONResponse({"ok": True})

    broken = Starlette(
        routes=[
            Route("/at-once", fails_at_once),
            Route("/midway", fails_midway),
            Route("/plain", plain),
        ]
    )
    async with client(broken, lifespan=False) as http:
        with pytest.raises(RuntimeError, match="before the response"):
            await http.get("/at-once")
        async with http.stream("GET", "/midway") as response:
            body = await response.aread()
        assert b"data: one" in body and b"producer_failed" in body  # the response's own end
        assert (await http.get("/plain")).json() == {"ok": True}


async def test_a_plain_asgi_app_without_lifespan_and_a_request_given_up_before_its_answer() -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return  # no lifespan support, the common way: uvicorn takes it as none
        if scope["path"] == "/slow":
            started.set()
            try:
                await asyncio.sleep(30)  # never answers in time
            except asyncio.CancelledError:
                cancelled.set()
                raise
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async with asyncio.timeout(10), client(app) as http:
        assert (await http.get("/")).text == "ok"
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await http.get("/slow")
        assert started.is_set()
        await asyncio.wait_for(cancelled.wait(), 6)  # the app's task did not run on
