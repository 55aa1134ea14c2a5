"""Exactly once from the first byte: every Sluiceway SSE stream opened without an id starts with
a ``sluiceway.position`` event whose id is where the stream starts, so that a client cut before
its first event resumes exactly instead of starting live and missing what came meanwhile.

* The position itself, on both stream writers (the native path and ASGI), for a topic, for
  ``/events`` (its cursor) and for a run: in the first write (with the head on the native
  path), exact for a topic without events (resuming from it replays event 1), absent when the
  client's id already names where the stream starts, replaced by the reset when it cannot;
  keep-alives leave the id alone; a garbage ``Last-Event-ID`` is a 400, never a 5xx.
* A client cut before its first event, reconnecting with what its parser holds, gets every
  event published meanwhile (this fails without the position: the client has no id to send).
* Chaos: through a proxy that cuts every connection 0.2-0.8 s after it opened (so before the
  first event too), while 300 events are published at a steady rate, npm's ``eventsource``,
  Chromium's ``EventSource``, ``sluiceway.client`` and ``sluiceway.js`` each receive all 300
  exactly once, in order: on a topic and on a two-topic ``/events`` stream (each path), and on
  a run's stream.
* Mercure: a subscriber without an id gets an ``id:`` line alone (the draft leaves no other
  way), and resumes from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import random
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import httpx
import orjson
import pytest
from browserproc import CHROMIUM, launch_chromium
from nodeproc import node_with_packages
from playwright.async_api import TimeoutError as PlaywrightTimeoutError
from playwright.async_api import async_playwright
from serverproc import RawHTTPStream, ServerProcess, open_stream
from sse_servers import Connection, ScriptedServer, TimedCutProxy, UvicornThread, chunk
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sluiceway.client import EventSource
from sluiceway.control import POSITION_EVENT, encode_position
from sluiceway.hub import Hub
from sluiceway.ids import Position
from sluiceway.runs import Runs, run_response
from sluiceway.runs.http import HTTPRunError, find_run
from sluiceway.server.admission import Admission
from sluiceway.server.native import NativeStreams, as_http_chunk
from sluiceway.server.settings import Settings
from sluiceway.sse import Event, Parser

ROOT = Path(__file__).parent.parent
NODE_DIR = ROOT / "tests" / "node_sse"
EVENTS = 300
RETRY_MS = 100
PATHS = {"native": "true", "asgi": "false"}
MERCURE = "/.well-known/mercure"


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, ServerProcess]]:
    """One ``sluiceway serve`` per stream writer, both telling clients to come back after
    100 ms and pinging after half a second of silence."""
    started: dict[str, ServerProcess] = {}
    try:
        for name, native in PATHS.items():
            env = {
                "SLUICEWAY_NATIVE_STREAMS": native,
                "SLUICEWAY_RETRY_MS": str(RETRY_MS),
                "SLUICEWAY_PING_INTERVAL": "0.5",
            }
            started[name] = ServerProcess(env=env).start()
        yield started
    finally:
        for server in started.values():
            server.stop()


@pytest.fixture(params=list(PATHS))
def server(request: pytest.FixtureRequest, servers: dict[str, ServerProcess]) -> ServerProcess:
    return servers[request.param]


def unique(name: str) -> str:
    return f"{name}.{random.getrandbits(40):010x}"


async def publish(http: httpx.AsyncClient, topic: str, data: str) -> str:
    response = await http.post(f"/topics/{topic}", json={"data": data})
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def epoch_of(event_id: str) -> str:
    return Position.parse(event_id).epoch


# -- the position itself -------------------------------------------------------------------


async def test_an_empty_topic_starts_at_offset_0_and_resuming_there_replays_event_1(
    server: ServerProcess,
) -> None:
    topic = unique("empty")
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        async with open_stream(http, f"/topics/{topic}") as stream:
            first = await publish(http, topic, "one")
            assert (await stream.next_event()).id == first
        # retry, then the position, then the event: nothing else, in that order.
        position = f"{epoch_of(first)}-0"
        assert bytes(stream.raw) == (
            b"retry: 100\n\n" + encode_position(position) + f"data: one\nid: {first}\n\n".encode()
        )
        (event,) = stream.positions
        assert (event.event, event.id) == (POSITION_EVENT, position)
        assert orjson.loads(event.data or "") == {"position": position}
        # The position is a real one: resuming from it replays event 1.
        async with open_stream(http, f"/topics/{topic}", last_event_id=position) as again:
            assert ((await again.next_event()).id, again.positions) == (first, [])


async def test_a_topic_with_events_starts_at_its_latest(server: ServerProcess) -> None:
    topic = unique("busy")
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        ids = [await publish(http, topic, f"old {n}") for n in range(3)]
        async with open_stream(http, f"/topics/{topic}") as stream:
            fresh = await publish(http, topic, "fresh")
            event = await stream.next_event()
        assert (event.id, event.data) == (fresh, "fresh")  # live: the old ones are not replayed
        assert [p.id for p in stream.positions] == [ids[-1]]


async def test_the_position_of_a_multi_topic_stream_is_its_cursor(server: ServerProcess) -> None:
    a, b = unique("a"), unique("b")
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        b_id = await publish(http, b, "b before")
        query = f"/events?topic={b}&topic={a}"
        async with open_stream(http, query) as stream:
            a_id = await publish(http, a, "a 1")
            await stream.next_event()
        (position,) = stream.positions
        a_epoch = epoch_of(a_id)
        # Topics in sorted name order: a (nothing yet: offset 0), then b (at its event).
        assert position.id == f"{a_epoch}-0,{b_id}"
        more = await publish(http, b, "b 2")
        async with open_stream(http, query, last_event_id=position.id) as resumed:
            events = await resumed.events(2)
        assert [e.data for e in events] == ["a 1", "b 2"]
        assert events[-1].id == f"{a_id},{more}"
        assert resumed.positions == []


async def test_an_id_that_names_the_position_gets_none_and_a_lost_one_gets_the_reset(
    server: ServerProcess,
) -> None:
    topic = unique("resume")
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        first = await publish(http, topic, "one")
        async with open_stream(http, f"/topics/{topic}", last_event_id=first) as stream:
            second = await publish(http, topic, "two")
            assert (await stream.next_event()).id == second
        assert bytes(stream.raw) == b"retry: 100\n\n" + f"data: two\nid: {second}\n\n".encode()

        lost = f"{epoch_of(first)}0-1"  # another epoch: a history that does not exist
        async with open_stream(http, f"/topics/{topic}", last_event_id=lost) as stream:
            reset = await stream.next_event()
        assert (reset.event, reset.id, stream.positions) == ("sluiceway.reset", second, [])


async def test_keep_alives_change_no_id(server: ServerProcess) -> None:
    topic = unique("quiet")
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=10) as http,
        open_stream(http, f"/topics/{topic}") as stream,
    ):
        await stream.until_raw(b": ping\n\n", timeout=3)
        await stream.until_raw(b": ping\n\n", timeout=3, start=stream.raw.find(b":") + 1)
        (position,) = stream.positions
        assert stream.parser.last_event_id == position.id


async def test_the_native_path_sends_the_position_in_the_same_write_as_its_head() -> None:
    hub = Hub()
    settings = Settings(retry_ms=RETRY_MS)
    streams = NativeStreams(hub, settings, Admission(settings.admission_policy()))
    writes: list[bytes] = []

    class Transport:
        def write(self, data: bytes) -> None:
            writes.append(data)

    class Owner:
        def stream_finished(self) -> None:
            pass

    scope = {
        "type": "http",
        "method": "GET",
        "http_version": "1.1",
        "path": "/topics/t",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8000")],
        "client": ("127.0.0.1", 5000),
    }
    sink = streams.open(
        scope,
        server_headers=[],
        transport=Transport(),  # type: ignore[arg-type]
        loop=asyncio.get_running_loop(),
        write_paused=False,
        owner=Owner(),
    )
    assert sink is not None
    position = hub.latest_id("t")
    (written,) = writes
    head, _, body = written.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert body == as_http_chunk(b"retry: 100\n\n" + encode_position(position))
    sink.sub.release()
    await hub.aclose()


BAD_IDS = ["garbage", "a-b-c", "-1", "x" * 5000, "ABC-1", "é-1", "aa-1\u2028", "aa-1,,bb-2"]


@pytest.mark.parametrize("bad", BAD_IDS, ids=range(len(BAD_IDS)))
async def test_a_garbage_last_event_id_is_a_400_never_a_5xx(
    servers: dict[str, ServerProcess], bad: str
) -> None:
    for server in servers.values():
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            for path in (f"/topics/{unique('t')}", f"/events?topic={unique('a')}&topic=b"):
                for how in ("header", "query"):
                    if how == "header":
                        raw = bad.encode("utf-8")  # what a browser sends: UTF-8 bytes
                        response = await http.get(path, headers={"last-event-id": raw})
                    else:
                        query = urlencode({"last_event_id": bad})
                        response = await http.get(f"{path}{'&' if '?' in path else '?'}{query}")
                    assert response.status_code == 400, (path, how, response.text)
                    assert response.json()["error"] == "invalid_last_event_id"


# -- a client cut before its first event -----------------------------------------------------


async def _cut_before_first_event(port: int, target: str) -> str:
    """Open ``target``, keep what comes within 0.3 s (no event is published meanwhile), cut
    the connection (RST): the id the client's parser holds then."""
    stream = await RawHTTPStream.connect(port, target)
    await stream.read_head()
    with pytest.raises(TimeoutError):
        await stream.next_event(timeout=0.3)
    stream.reset()
    return stream.parser.last_event_id


async def test_a_client_cut_before_its_first_event_gets_everything_after_reconnecting(
    server: ServerProcess,
) -> None:
    """Without the position, the client would have no id to send, would start live and would
    silently miss what was published while it was away."""
    topic, a, b = unique("t"), unique("a"), unique("b")
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        await publish(http, topic, "before the client came")
        for target, topics in (
            (f"/topics/{topic}", [topic]),
            (f"/events?topic={a}&topic={b}", [a, b]),
        ):
            held = await _cut_before_first_event(server.port, target)
            assert held, f"{target}: the client holds no id"
            missed = [await publish(http, name, f"{name} {n}") for n in range(3) for name in topics]
            stream = await RawHTTPStream.connect(
                server.port, target, headers={"last-event-id": held}
            )
            await stream.read_head()
            got = [(await stream.next_event()).data for _ in missed]
            await stream.close()
            assert sorted(got) == sorted(f"{name} {n}" for n in range(3) for name in topics)


# -- chaos: every client, every stream --------------------------------------------------------

EXPECTED = [f"event {n}" for n in range(1, EVENTS + 1)]
Received = list[tuple[str, str]]  # (last event id, data) of each "message" event

#: In the page: an EventSource whose "message" events land in window.received.
FOLLOW_JS = """([url]) => {
  window.received = [];
  window.opened = false;
  const source = new EventSource(url);
  source.onopen = () => { window.opened = true; };
  source.onmessage = (e) => window.received.push([e.lastEventId, e.data]);
}"""


@dataclass
class Target:
    """A stream to follow through the proxy, and how to make its events."""

    upstream_port: int
    path: str
    produce: Callable[[], Awaitable[None]]  # makes the EVENTS events, at a steady rate
    check: Callable[[str, Received], None]  # asserts what one client received


def check_one_topic(client: str, received: Received) -> None:
    data = [d for _, d in received]
    wrong = next((i for i, (d, e) in enumerate(zip(data, EXPECTED, strict=False)) if d != e), None)
    assert data == EXPECTED, f"{client}: {len(data)} events, the first wrong at {wrong}"
    offsets = [Position.parse(i).offset for i, _ in received]
    assert offsets == sorted(set(offsets)), f"{client}: ids repeat or go back"


def check_two_topics(client: str, received: Received) -> None:
    data = [d for _, d in received]
    assert len(data) == len(set(data)) == EVENTS, f"{client}: {len(data)} events"
    for name in ("a", "b"):  # in order within each topic
        mine = [d for d in data if d.startswith(f"{name} ")]
        assert mine == [f"{name} {n}" for n in range(EVENTS // 2)], f"{client}: {name} out of order"


async def steady(publish_one: Callable[[int], Awaitable[None]]) -> None:
    """``publish_one(0..EVENTS-1)``, one every 10 ms."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for n in range(EVENTS):
        await publish_one(n)
        await asyncio.sleep(max(0.0, start + (n + 1) * 0.01 - loop.time()))


async def python_client(url: str, opened: asyncio.Event) -> Received:
    received: Received = []
    source = EventSource(url, idle_timeout=10, on_open=lambda _: opened.set())
    # Like the others, it gives up after a minute: what it got is then checked.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(60), source:
            async for event in source:
                if event.event == "message":
                    received.append((event.id or "", event.data or ""))
                    if len(received) == EVENTS:
                        break
    return received


async def node_client(node: str, client: str, url: str, opened: asyncio.Event) -> Received:
    process = await asyncio.create_subprocess_exec(
        *(node, str(NODE_DIR / "follow.mjs"), client, url, str(EVENTS), "60000"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    if await process.stdout.readline() == b"open\n":
        opened.set()
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return [(i, d) for i, d in json.loads(out)["received"]]


async def chromium_client(proxy_url: str, path: str, opened: asyncio.Event) -> Received:
    async with async_playwright() as playwright:
        browser = await launch_chromium(playwright)
        try:
            page = await browser.new_page()
            # The page comes from the proxy's origin: the stream is same-origin (no CORS).
            await page.goto(f"{proxy_url}/healthz")
            await page.evaluate(FOLLOW_JS, [path])
            await page.wait_for_function("window.opened", timeout=30_000)
            opened.set()
            with contextlib.suppress(PlaywrightTimeoutError):  # checked below, in full
                await page.wait_for_function(
                    "n => window.received.length >= n", arg=EVENTS, timeout=60_000
                )
            received = await page.evaluate("window.received")
        finally:
            await browser.close()
    return [(i, d) for i, d in received]


async def follow_through_cuts(target: Target, seed: int) -> None:
    """Every client follows ``target`` through a :class:`TimedCutProxy`; once each has opened
    a connection, and a second later (longer than any connection lives, so every first one
    was cut before an event), ``target.produce()`` runs; then each client's events are
    checked."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: Chromium's EventSource is NOT tested")
    node = node_with_packages(NODE_DIR, ["eventsource"], "npm's eventsource and sluiceway.js")
    with TimedCutProxy(target.upstream_port, seed=seed) as proxy:
        url = proxy.url + target.path
        opened = {name: asyncio.Event() for name in CLIENTS}
        followers = {
            "sluiceway.client": python_client(url, opened["sluiceway.client"]),
            "npm eventsource": node_client(node, "eventsource", url, opened["npm eventsource"]),
            "sluiceway.js": node_client(node, "sluiceway.js", url, opened["sluiceway.js"]),
            "Chromium EventSource": chromium_client(
                proxy.url, target.path, opened["Chromium EventSource"]
            ),
        }
        tasks = [asyncio.ensure_future(follower) for follower in followers.values()]
        try:
            async with asyncio.timeout(30):
                await asyncio.gather(*(event.wait() for event in opened.values()))
            await asyncio.sleep(1.0)
            await target.produce()
            async with asyncio.timeout(90):
                results = await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
        cuts = proxy.cuts
    problems = []  # every client's, not only the first one's
    for name, received in zip(followers, results, strict=True):
        try:
            target.check(name, received)
        except AssertionError as exc:
            problems.append(str(exc).splitlines()[0])
    assert not problems, problems
    assert cuts >= 20, cuts  # connections really were cut, again and again


CLIENTS = ["sluiceway.client", "npm eventsource", "sluiceway.js", "Chromium EventSource"]


@pytest.mark.parametrize("path", list(PATHS))
async def test_every_client_gets_every_event_of_a_topic_once_through_cuts(
    servers: dict[str, ServerProcess], path: str
) -> None:
    server = servers[path]
    topic = unique("chaos")
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:

        async def publish_one(n: int) -> None:
            await publish(http, topic, f"event {n + 1}")

        produce = functools.partial(steady, publish_one)
        target = Target(server.port, f"/topics/{topic}", produce, check_one_topic)
        await follow_through_cuts(target, seed=len(path))


@pytest.mark.parametrize("path", list(PATHS))
async def test_every_client_gets_every_event_of_two_topics_once_through_cuts(
    servers: dict[str, ServerProcess], path: str
) -> None:
    server = servers[path]
    a, b = unique("a"), unique("b")
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:

        async def publish_one(n: int) -> None:
            name, topic = ("a", a) if n % 2 == 0 else ("b", b)
            await publish(http, topic, f"{name} {n // 2}")

        produce = functools.partial(steady, publish_one)
        path_ = f"/events?topic={a}&topic={b}"
        await follow_through_cuts(Target(server.port, path_, produce, check_two_topics), seed=9)


def run_app(runs: Runs, go: threading.Event) -> Starlette:
    """``POST /runs`` starts a background run of EVENTS items, one every 10 ms once ``go`` is
    set; ``GET /runs/{id}/events`` follows it: the runs' own stream (:func:`run_response`),
    telling clients to come back after 100 ms."""

    async def produce() -> AsyncIterator[str]:
        await asyncio.to_thread(go.wait, 60)  # set from the test's own loop
        loop = asyncio.get_running_loop()
        start = loop.time()
        for n in range(EVENTS):
            yield f"event {n + 1}"
            await asyncio.sleep(max(0.0, start + (n + 1) * 0.01 - loop.time()))

    async def start(request: Request) -> Response:
        run = runs.start(produce(), background=True)
        return JSONResponse({"id": run.id})

    async def events(request: Request) -> Response:
        try:
            run = await find_run(runs, request.path_params["run_id"], None)
        except HTTPRunError as exc:
            return exc.response()
        last_event_id = request.headers.get("last-event-id") or None
        return await run_response(runs, run, last_event_id=last_event_id, retry=RETRY_MS)

    return Starlette(
        routes=[
            Route("/runs", start, methods=["POST"]),
            Route("/runs/{run_id}/events", events, methods=["GET"]),
        ]
    )


async def test_every_client_gets_every_event_of_a_run_once_through_cuts() -> None:
    go = threading.Event()
    with UvicornThread(run_app(Runs(Hub()), go)) as app_server:
        async with httpx.AsyncClient(base_url=app_server.url, timeout=10) as http:
            run_id = (await http.post("/runs")).json()["id"]
            path = f"/runs/{run_id}/events"
            async with open_stream(http, path) as stream:
                start = await stream.next_event()  # the run's own first event
            # Before it, where the stream starts: before the run's first event.
            (position,) = stream.positions
            assert start.event == "start"
            assert Position.parse(position.id or "") == Position(epoch_of(start.id or ""), 0)
            garbage = await http.get(path, headers={"last-event-id": "x"})
            assert garbage.status_code == 400  # the run's own error, never a 5xx

        async def produce() -> None:
            go.set()  # the run makes its events by itself

        await follow_through_cuts(Target(app_server.port, path, produce, check_one_topic), seed=3)


# -- the Python client, against a scripted server --------------------------------------------


def test_sluiceway_client_takes_the_position_in_without_yielding_it() -> None:
    async def handler(connection: Connection) -> None:
        await connection.send_head()
        if "last-event-id" not in connection.request.headers:
            await connection.send_raw(chunk(encode_position("e1-0")))
            connection.writer.transport.abort()  # cut before any event
            return
        resumed = connection.request.headers["last-event-id"]
        await connection.send_raw(chunk(f"id: e1-1\ndata: after {resumed}\n\n".encode()))
        await connection.hold()

    with ScriptedServer(handler) as scripted:
        seen: list[str] = []
        with EventSource(scripted.url + "/t", retry_delay=0.01) as source:
            for event in source:
                seen.append(f"{event.event} {event.data} {event.id}")
                break
            assert source.last_event_id == "e1-1"
    assert seen == ["message after e1-0 e1-1"]


# -- Mercure: what its draft allows ----------------------------------------------------------


async def test_a_mercure_subscriber_without_an_id_gets_an_id_line_alone_and_resumes_from_it(
    server: ServerProcess,
) -> None:
    topic = f"https://example.com/position/{unique('m')}"
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:

        async def mercure_publish(data: str) -> str:
            response = await http.post(MERCURE, data={"topic": topic, "data": data})
            assert response.status_code == 200, response.text
            return response.text

        before = await mercure_publish("before")
        async with http.stream("GET", MERCURE, params={"match": topic}) as response:
            assert "mercure-last-event-id" not in response.headers  # no cursor came
            first = b""
            async for chunk in response.aiter_bytes():
                first += chunk
                if first.endswith(b"\n\n"):
                    break
        # The update before the stream: the last one it could have had, with no data, so
        # nothing is dispatched (Mercure clients see updates only).
        assert first == f"id: {before}\n\n".encode()
        parser = Parser()
        assert parser.feed(first) == [] and parser.last_event_id == before
        after = await mercure_publish("after")
        headers = {"last-event-id": parser.last_event_id}
        async with http.stream("GET", MERCURE, params={"match": topic}, headers=headers) as again:
            assert again.headers["mercure-last-event-id"] == before
            events: list[Event] = []
            async for chunk in again.aiter_bytes():
                events += parser.feed(chunk)
                if events:
                    break
        assert [(e.id, e.data) for e in events] == [(after, "after")]
