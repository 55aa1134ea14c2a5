"""The library as an application sees it: the names at the top level, the hub's errors answered
in one line, and history pages returned as JSON from a user's own FastAPI endpoint."""

from __future__ import annotations

import doctest
import subprocess
import sys

import pytest
from fastapi import FastAPI, Request
from starlette.applications import Starlette
from starlette.routing import Route

import sluiceway
import sluiceway.asgi.errors
import sluiceway.hub.core
from sluiceway.asgi import EXCEPTION_HANDLERS, EventStreamResponse, install_error_handlers
from sluiceway.hub import Hub
from sluiceway.testing import client


@pytest.mark.parametrize("module", [sluiceway, sluiceway.asgi.errors, sluiceway.hub.core])
def test_doctests(module: object) -> None:
    assert doctest.testmod(module, raise_on_error=False).failed == 0  # type: ignore[arg-type]


def test_the_top_level_names_are_the_modules_own_and_cost_nothing_to_import() -> None:
    import sluiceway.asgi
    import sluiceway.client
    import sluiceway.hub
    import sluiceway.runs
    import sluiceway.server
    import sluiceway.sse

    assert sluiceway.Hub is sluiceway.hub.Hub
    assert sluiceway.EventStreamResponse is sluiceway.asgi.EventStreamResponse
    assert sluiceway.Event is sluiceway.sse.Event
    assert sluiceway.EventSource is sluiceway.client.EventSource
    assert sluiceway.Runs is sluiceway.runs.Runs
    assert sluiceway.create_app is sluiceway.server.create_app
    assert sluiceway.__version__[0].isdigit()
    assert set(dir(sluiceway)) >= {"Hub", "EventSource", "install_error_handlers"}
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        sluiceway.Nope  # noqa: B018
    check = "import sys, sluiceway; assert 'sluiceway.hub' not in sys.modules, sorted(sys.modules)"
    assert subprocess.run([sys.executable, "-c", check], capture_output=True).returncode == 0


def fastapi_app(hub: Hub) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/news")
    async def news(request: Request) -> EventStreamResponse:
        last = request.headers.get("last-event-id")
        return EventStreamResponse(await hub.subscribe(["news"], last_event_id=last))

    @app.get("/news/history")
    async def history(after: str | None = None) -> dict[str, object]:
        return (await hub.history("news", after=after)).to_json()

    return app


async def test_a_bad_last_event_id_is_a_400_in_the_users_app_not_a_500() -> None:
    hub = Hub()
    async with client(fastapi_app(hub)) as http:
        refused = await http.get("/news", headers={"last-event-id": "not-ours"})
        assert refused.status_code == 400
        assert refused.json()["error"] == "invalid_last_event_id"
        bad_after = await http.get("/news/history", params={"after": "garbage"})
        assert (bad_after.status_code, bad_after.json()["error"]) == (400, "invalid_last_event_id")
        await hub.aclose()
        closed = await http.get("/news")
        assert (closed.status_code, closed.json()["error"]) == (503, "shutting_down")
        assert closed.headers["retry-after"] == "1"


async def test_history_pages_return_as_json() -> None:
    hub = Hub()
    first = await hub.publish("news", {"title": "one"}, event="headline")
    await hub.publish("news", "two")
    async with client(fastapi_app(hub)) as http:
        page = (await http.get("/news/history", params={"after": first})).json()
    assert page["topic"] == "news"
    assert [(e["event"], e["data"]) for e in page["events"]] == [(None, "two")]
    assert page["latest"] == first.replace("-1", "-2") and page["earliest"].endswith("-0")


async def test_starlette_takes_the_handlers_as_a_mapping() -> None:
    hub = Hub()

    async def news(request: Request) -> EventStreamResponse:
        last = request.headers.get("last-event-id")
        return EventStreamResponse(await hub.subscribe(["news"], last_event_id=last))

    app = Starlette(routes=[Route("/news", news)], exception_handlers=dict(EXCEPTION_HANDLERS))
    async with client(app) as http:
        refused = await http.get("/news", headers={"last-event-id": "x-y-z"})
    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_last_event_id")
