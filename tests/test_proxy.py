"""``GET /proxy?url=``: allow-listed upstreams streamed through, closed when the client leaves."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
from conftest import StartServer
from sse_servers import Connection, ScriptedServer

from sluiceway.client import EventSource


async def feed(connection: Connection) -> None:
    if connection.request.path.startswith("/feeds/missing"):
        await connection.respond(404, b"no such feed")
        return
    await connection.send_head(
        200, "text/event-stream", ETag='"v1"', Cache_Control="no-cache", X_Secret="hidden"
    )
    last = int(connection.request.headers.get("last-event-id", "0"))
    for n in range(last + 1, last + 1000):
        await connection.send(b"id: %d\ndata: tick %d\n\n" % (n, n))
        await asyncio.sleep(0.02)
    await connection.end()


def proxied(server_url: str, upstream: str) -> str:
    return f"{server_url}/proxy?url={httpx.URL(upstream)}"


def test_an_allowed_upstream_streams_through_and_is_closed_when_the_client_leaves(
    start_server: StartServer,
) -> None:
    with ScriptedServer(feed) as upstream:
        allow = json.dumps([f"{upstream.url}/feeds/"])
        server = start_server(env={"SLUICEWAY_PROXY_ALLOW": allow})
        url = proxied(server.url, f"{upstream.url}/feeds/a")
        with EventSource(url, last_event_id="41") as source:
            events = [event for _, event in zip(range(3), source, strict=False)]
            left_at = time.monotonic()
        assert [e.data for e in events] == ["tick 42", "tick 43", "tick 44"]
        assert upstream.requests[0].headers["last-event-id"] == "41"  # forwarded
        assert upstream.wait_disconnects(1, timeout=2.0)  # the upstream request was closed
        assert time.monotonic() - left_at < 2.0
        with httpx.stream("GET", url, headers={"Accept-Encoding": "identity"}) as response:
            assert response.headers["etag"] == '"v1"'
            assert response.headers["x-accel-buffering"] == "no"
            assert "x-secret" not in response.headers  # only the headers that matter cross
        missing = httpx.get(proxied(server.url, f"{upstream.url}/feeds/missing"))
        assert (missing.status_code, missing.text) == (404, "no such feed")


def test_refusals(start_server: StartServer) -> None:
    with ScriptedServer(feed) as upstream:
        off = start_server()
        answer = httpx.get(proxied(off.url, f"{upstream.url}/feeds/a"))
        assert (answer.status_code, answer.json()["error"]) == (403, "proxy_disabled")
        server = start_server(env={"SLUICEWAY_PROXY_ALLOW": json.dumps([f"{upstream.url}/feeds/"])})
        for url, status, code in [
            (f"{upstream.url}/admin", 403, "not_allowed"),
            (f"{upstream.url}/feeds/../admin", 403, "not_allowed"),
            ("http://127.0.0.1:1/feeds/a", 403, "not_allowed"),  # another port
            ("file:///etc/passwd", 400, "invalid_url"),
        ]:
            answer = httpx.get(proxied(server.url, url))
            assert (answer.status_code, answer.json()["error"]) == (status, code), url
        assert httpx.get(f"{server.url}/proxy").status_code == 400
    # The upstream is gone now: 502, not a hang.
    answer = httpx.get(proxied(server.url, f"{upstream.url}/feeds/a"), timeout=15)
    assert (answer.status_code, answer.json()["error"]) == (502, "upstream_unreachable")
