"""The client against servers that are not scripted: an sse-starlette app (not ours) and a
real ``sluiceway serve`` that restarts under it."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from conftest import StartServer
from sse_servers import UvicornThread
from sse_starlette import EventSourceResponse
from sse_starlette.event import ServerSentEvent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from test_client import MODES, take

from sluiceway.client import EventSource, Reset, RetryInfo

TOTAL = 50
PER_CONNECTION = 7


def sse_starlette_app() -> Starlette:
    """Numbered events, resumable from Last-Event-ID; each response ends after a few events;
    204 once everything was sent.  CRLF line ends and pings, as sse-starlette can do."""
    seen: list[str | None] = []

    async def numbers(request: Request) -> Response:
        last = request.headers.get("last-event-id")
        seen.append(last)
        start = int(last or 0) + 1
        if start > TOTAL:
            return Response(status_code=204)

        async def events():  # type: ignore[no-untyped-def]
            for number in range(start, min(start + PER_CONNECTION, TOTAL + 1)):
                yield ServerSentEvent(data=f"n={number}\nsquare={number * number}", id=str(number))

        return EventSourceResponse(events(), ping=1, sep="\r\n")

    async def slow(request: Request) -> Response:
        seen.append(request.headers.get("last-event-id"))
        if request.headers.get("last-event-id"):
            return Response(status_code=204)

        async def events():  # type: ignore[no-untyped-def]
            yield ServerSentEvent(data="first", id="1")
            await asyncio.sleep(2.5)  # only sse-starlette's pings (every 0.5 s) meanwhile
            yield ServerSentEvent(data="second", id="2")

        return EventSourceResponse(events(), ping=0.5)

    app = Starlette(routes=[Route("/numbers", numbers), Route("/slow", slow)])
    app.state.seen = seen
    return app


@pytest.mark.parametrize("mode", MODES)
def test_sse_starlette_stream_is_read_whole_across_its_reconnections(mode: str) -> None:
    app = sse_starlette_app()
    with UvicornThread(app) as server:
        events = take(EventSource(server.url + "/numbers", retry_delay=0.01), mode)
    assert [e.id for e in events] == [str(n) for n in range(1, TOTAL + 1)]
    assert events[6].data == "n=7\nsquare=49"
    connections = -(-TOTAL // PER_CONNECTION)
    assert app.state.seen == [None] + [str(n * PER_CONNECTION) for n in range(1, connections)] + [
        str(TOTAL)
    ]


@pytest.mark.parametrize("mode", MODES)
def test_sse_starlette_pings_keep_an_idle_stream_alive(mode: str) -> None:
    app = sse_starlette_app()
    with UvicornThread(app) as server:
        events = take(EventSource(server.url + "/slow", idle_timeout=1.5, retry_delay=0.01), mode)
    assert [e.data for e in events] == ["first", "second"]
    assert app.state.seen == [None, "2"]  # no reconnect during the 2.5 s pause


async def test_sluiceway_restart_is_surfaced_as_a_reset_then_the_stream_goes_on(
    start_server: StartServer,
) -> None:
    server = start_server("--retry-ms", "50")
    resets: list[Reset] = []
    retries: list[RetryInfo] = []
    source = EventSource(
        f"{server.url}/topics/news",
        max_backoff=0.3,
        on_reset=resets.append,
        on_retry=retries.append,
    )
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http, source:
        events = aiter(source)

        async def publish(data: str) -> str:
            return (await http.post("/topics/news", json={"data": data})).json()["id"]

        first = asyncio.create_task(anext(events))
        await asyncio.sleep(0.3)  # subscribed before publishing
        ids = [await publish("one")]
        assert (await first).data == "one"
        ids.append(await publish("two"))
        assert (await anext(events)).data == "two"
        assert source.last_event_id == ids[-1]

        await asyncio.to_thread(server.restart)  # a fresh in-memory hub: the history is gone
        reset_event = await asyncio.wait_for(anext(events), 15)
        assert reset_event.event == "sluiceway.reset"
        after = asyncio.create_task(anext(events))
        await asyncio.sleep(0.2)
        await publish("three")
        assert (await asyncio.wait_for(after, 5)).data == "three"
    assert len(resets) == 1 and source.resets == 1
    assert [(t.topic, t.reason, t.requested) for t in resets[0].topics] == [
        ("news", "unknown_epoch", ids[-1])
    ]
    assert retries and retries[0].last_event_id == ids[-1]
    assert source.retry_delay == 0.05  # the server's retry: 50
