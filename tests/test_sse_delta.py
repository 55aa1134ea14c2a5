"""Fossil deltas over SSE (``?delta=fossil``): the hub makes each event's delta frame once and
sends it to the streams that were sent the event before; ``sluiceway.client`` applies them, so
every event it yields equals the published one — through connections cut mid-event, resets,
and a delta that does not apply. Both stream paths: the server's native one, and the ASGI one a
FastAPI endpoint of the user's takes."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from browserproc import CHROMIUM, launch_chromium
from conftest import MakeHub, StartServer
from fastapi import FastAPI, Request
from playwright.async_api import async_playwright
from serverproc import ServerProcess
from sse_servers import ChaosProxy, Connection, ScriptedServer

from sluiceway import fossil
from sluiceway.asgi import EventStreamResponse
from sluiceway.client import EventSource
from sluiceway.hub import Hub, HubConfig, InvalidDelta, Subscription, check_delta
from sluiceway.sse import Event, Parser, encode_event
from sluiceway.testing import client


def dashboard(n: int, sensors: int = 90) -> dict[str, Any]:
    """A state of ``sensors`` readings (90: ~4 KiB), a few values changed at each step."""
    rng = random.Random(n)
    state: dict[str, Any] = {
        f"sensor-{i:03d}": {"value": round(i * 1.5, 1), "unit": "°C", "ok": True}
        for i in range(sensors)
    }
    for _ in range(3):
        state[f"sensor-{rng.randrange(sensors):03d}"]["value"] = round(rng.uniform(0, 100), 1)
    state["seq"] = n
    return state


class Rebuilder:
    """Parses a stream as a client with deltas does: applies each delta to the data before."""

    def __init__(self) -> None:
        self.parser = Parser()
        self.base: str | None = None
        self.events: list[Event] = []  # as received (deltas as such)
        self.data: list[str] = []  # rebuilt

    def feed(self, chunk: bytes) -> None:
        for event in self.parser.feed(chunk):
            if event.event.startswith("sluiceway."):
                continue
            self.events.append(event)
            assert event.data is not None
            data = event.data
            if event.delta is not None:
                assert event.delta == "fossil" and self.base is not None
                data = fossil.apply(self.base.encode(), data.encode()).decode()
            self.base = data
            self.data.append(data)

    def drain(self, sub: Subscription) -> None:
        while (chunk := sub.next_chunk()) is not None:
            self.feed(chunk)

    async def until(self, sub: Subscription, count: int) -> None:
        """Drain ``sub`` until ``count`` events came (a shared backend delivers later)."""
        self.drain(sub)
        while len(self.data) < count:
            await asyncio.wait_for(sub.wait(), 5)
            self.drain(sub)


# -- the hub ----------------------------------------------------------------------------------


async def test_each_event_after_the_one_sent_goes_as_a_delta(make_hub: MakeHub) -> None:
    hub = await make_hub()
    await hub.publish("dash", dashboard(0))
    sub = await hub.subscribe(["dash"], delta="fossil")
    client = Rebuilder()
    client.feed(sub.opening())
    for n in range(1, 6):
        await hub.publish("dash", dashboard(n), event="state")
        await client.until(sub, n)
    assert [json.loads(data) for data in client.data] == [dashboard(n) for n in range(1, 6)]
    # The first after subscribing is whole: the client holds no data yet.
    assert [event.delta for event in client.events] == [None] + ["fossil"] * 4
    assert all(event.event == "state" for event in client.events)
    whole = len(json.dumps(dashboard(1), separators=(",", ":"), ensure_ascii=False).encode())
    assert all(len(event.data or "") < whole // 10 for event in client.events[1:])


async def test_delta_frames_are_made_once_and_shared() -> None:
    hub = Hub()
    subs = [await hub.subscribe(["dash"], delta="fossil") for _ in range(3)]
    plain = await hub.subscribe(["dash"])
    for n in range(3):
        await hub.publish("dash", dashboard(n))
        chunks = [sub.next_chunk() for sub in [*subs, plain]]
        assert chunks[0] is chunks[1] is chunks[2]  # the same bytes object
        assert (chunks[0] == chunks[3]) == (n == 0)  # whole first, then deltas
        assert b"delta:" not in (chunks[3] or b"")
    # Several pending events come in one chunk: the first whole, the rest deltas.
    late = await hub.subscribe(["dash"], delta="fossil", from_start=True)
    client = Rebuilder()
    client.drain(late)
    assert [event.delta for event in client.events] == [None, "fossil", "fossil"]
    assert [json.loads(data) for data in client.data] == [dashboard(n) for n in range(3)]


async def test_a_delta_rebuilds_the_data_the_client_sees() -> None:
    """The client's parser turns CR and CRLF into LF: deltas are made between those texts."""
    hub = Hub()
    sub = await hub.subscribe(["t"], delta="fossil")
    lines = [f"line {i}: {'x' * 40}" for i in range(20)]
    client = Rebuilder()
    for n in range(3):
        lines[n] = f"changed {n}"
        await hub.publish("t", "\r\n".join(lines[:10]) + "\r" + "\n".join(lines[10:]))
        client.drain(sub)
    assert client.data[-1] == "\n".join(lines)
    assert [event.delta for event in client.events] == [None, "fossil", "fossil"]


async def test_a_delta_that_would_cut_a_character_or_is_no_smaller_goes_whole() -> None:
    hub = Hub()
    sub = await hub.subscribe(["t"], delta="fossil")
    # é is C3 A9 and è C3 A8: a delta would copy the C3 and insert a lone A8, which SSE (text)
    # cannot carry.
    before = "é" * 60
    after = "é" * 30 + "è" + "é" * 29
    random_texts = ["".join(random.Random(n).choices("abcdefgh", k=30)) for n in range(2)]
    client = Rebuilder()
    for data in (before, after, *random_texts):
        await hub.publish("t", data)
        client.drain(sub)
    assert client.data == [before, after, *random_texts]
    assert [event.delta for event in client.events] == [None, None, None, None]


async def test_after_a_skip_to_the_latest_the_next_event_goes_whole() -> None:
    hub = Hub(HubConfig(buffer_events=3, keep_latest_topics=("dash.*",)))
    sub = await hub.subscribe(["dash.cpu"], delta="fossil")
    await hub.publish("dash.cpu", dashboard(0))
    client = Rebuilder()
    client.drain(sub)
    for n in range(1, 10):  # more than its buffer: it skips to the latest
        await hub.publish("dash.cpu", dashboard(n))
    client.drain(sub)
    await hub.publish("dash.cpu", dashboard(10))
    client.drain(sub)
    assert [json.loads(data)["seq"] for data in client.data] == [0, 9, 10]
    assert [event.delta for event in client.events] == [None, None, "fossil"]
    assert hub.stats.skipped_to_latest == 1


async def test_deltas_need_one_topic_and_the_fossil_format() -> None:
    hub = Hub()
    with pytest.raises(ValueError, match="one topic"):
        await hub.subscribe(["a", "b"], delta="fossil")
    with pytest.raises(ValueError, match="unknown delta format"):
        await hub.subscribe(["a"], delta="xdelta")
    assert check_delta("fossil") == "fossil"
    assert hub.open_streams == 0


# -- the server, sluiceway.client -------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    env = {"SLUICEWAY_HISTORY_SIZE": "1000", "SLUICEWAY_DELTA_TOPICS": '["dash.*"]'}
    process = ServerProcess(env=env).start()
    yield process
    process.stop()


def published(server: ServerProcess, topic: str) -> list[str]:
    history = httpx.get(f"{server.url}/topics/{topic}/history?limit=1000").json()
    return [event["data"] for event in history["events"]]


def follow(
    url: str, count: int, *, use_async: bool, mismatches: int = 0, **options: Any
) -> list[Event]:
    """The first ``count`` events an EventSource with deltas yields (sync or async), checking
    that exactly ``mismatches`` deltas did not apply (a correct server sends none)."""
    got: list[Event] = []
    reasons: list[str] = []
    source = EventSource(
        url,
        delta=True,
        retry_delay=0.05,
        max_backoff=0.2,
        on_retry=lambda info: reasons.append(info.reason),
        **options,
    )
    if use_async:

        async def read() -> None:
            async with source:
                async for event in source:
                    got.append(event)
                    if len(got) == count:
                        return

        asyncio.run(read())
    else:
        with source:
            for event in source:
                got.append(event)
                if len(got) == count:
                    break
    assert sum("delta" in reason for reason in reasons) == mismatches, reasons
    return got


@pytest.mark.parametrize("use_async", [True, False], ids=["async", "sync"])
def test_the_client_rebuilds_every_event_through_cuts(
    server: ServerProcess, use_async: bool
) -> None:
    """Each connection is cut after 3-9 KB, mid-event too (FIN or RST): the client resumes
    with Last-Event-ID, the next event comes whole, and deltas go on from there."""
    topic = f"dash.{time.time_ns()}"
    total = 150
    with ChaosProxy(server.port, seed=7, min_bytes=3000, max_bytes=9000) as proxy:
        url = f"http://127.0.0.1:{proxy.port}/topics/{topic}"
        got: list[Event] = []
        with httpx.Client(base_url=server.url) as http:
            first = http.post(f"/topics/{topic}", json={"data": dashboard(0, 30)}).json()["id"]
            reader = threading.Thread(
                target=lambda: got.extend(
                    follow(url, total - 1, use_async=use_async, last_event_id=first)
                )
            )
            reader.start()
            for n in range(1, total):
                http.post(f"/topics/{topic}", json={"data": dashboard(n, 30)})
                time.sleep(0.005)
            reader.join(60)
        cuts = proxy.cuts
    assert not reader.is_alive()
    assert [event.data for event in got] == published(server, topic)[1:]
    assert all(event.delta is None for event in got)  # applied: the data is whole
    assert cuts >= 3


def test_a_reset_sends_the_next_event_whole(start_server: StartServer) -> None:
    """History too short to resume: the client gets the reset event, then whole data."""
    server = start_server(env={"SLUICEWAY_HISTORY_SIZE": "3"})
    topic = "dash.reset"

    async def scenario() -> list[Event]:
        got: list[Event] = []
        async with httpx.AsyncClient(base_url=server.url) as http:
            ids = [
                (await http.post(f"/topics/{topic}", json={"data": dashboard(n)})).json()["id"]
                for n in range(8)
            ]
            source = EventSource(
                f"{server.url}/topics/{topic}",
                delta=True,
                last_event_id=ids[0],
                on_retry=lambda info: pytest.fail(f"it reconnected: {info.reason}"),
            )
            async with source:
                async for event in source:
                    got.append(event)
                    if len(got) == 1:  # the reset: it resumes at the latest event
                        for n in range(8, 11):
                            await http.post(f"/topics/{topic}", json={"data": dashboard(n)})
                    if len(got) == 4:
                        return got
        return got

    got = asyncio.run(scenario())
    assert got[0].event == "sluiceway.reset"
    assert [json.loads(event.data or "") for event in got[1:]] == [dashboard(n) for n in (8, 9, 10)]


SLUICEWAY_JS = Path(__file__).parent.parent / "src" / "sluiceway" / "web" / "sluiceway.js"

#: In the page: an EventStream with deltas whose events land in window.received.
FOLLOW_JS = """([path]) => {
  window.received = [];
  window.errors = [];
  const stream = new window.sluiceway.EventStream(path, { delta: true, retry: 50, maxRetry: 200 });
  stream.addEventListener("message", (e) => window.received.push(e.data));
  stream.addEventListener("error", (e) => window.errors.push(String(e.error)));
  stream.addEventListener("open", () => { window.opened = true; });
}"""


async def test_sluiceway_js_in_chromium_rebuilds_every_event_through_cuts(
    server: ServerProcess,
) -> None:
    """``sluiceway.js`` in Chromium, through connections cut mid-event: every state it
    dispatches equals the published text, and no delta failed to apply."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: sluiceway.js with deltas is NOT tested in a browser")
    topic = f"dash.js{time.time_ns()}"
    total = 120
    with ChaosProxy(server.port, seed=11, min_bytes=3000, max_bytes=9000) as proxy:
        async with async_playwright() as playwright, httpx.AsyncClient(base_url=server.url) as http:
            browser = await launch_chromium(playwright)
            try:
                page = await browser.new_page()
                await page.goto(f"{proxy.url}/healthz")  # the proxy's origin: no CORS
                module = SLUICEWAY_JS.read_text() + "\nwindow.sluiceway = { EventStream };"
                await page.add_script_tag(content=module, type="module")
                await page.wait_for_function("window.sluiceway !== undefined")
                await page.evaluate(FOLLOW_JS, [f"/topics/{topic}"])
                await page.wait_for_function("window.opened === true", timeout=10_000)
                for n in range(total):
                    await http.post(f"/topics/{topic}", json={"data": dashboard(n, 30)})
                    await asyncio.sleep(0.005)
                await page.wait_for_function(
                    "n => window.received.length >= n", arg=total, timeout=60_000
                )
                received = await page.evaluate("window.received")
                errors = await page.evaluate("window.errors")
            finally:
                await browser.close()
        cuts = proxy.cuts
    history = await asyncio.to_thread(published, server, topic)
    assert received == history
    assert not [error for error in errors if "Delta" in error], errors
    assert cuts >= 3


def read_raw(url: str, publish: Any, count: int) -> tuple[Rebuilder, int]:
    """Open ``url``, call ``publish()``, read until ``count`` events: (the events, bytes)."""
    client = Rebuilder()
    size = 0
    with httpx.Client(timeout=10) as http, http.stream("GET", url) as response:
        assert response.status_code == 200, response.read()
        publish()
        for chunk in response.iter_bytes():
            size += len(chunk)
            client.feed(chunk)
            if len(client.data) >= count:
                break
    return client, size


def test_deltas_only_where_asked_and_allowed(server: ServerProcess) -> None:
    stamp = time.time_ns()

    def publish(topic: str) -> None:
        with httpx.Client(base_url=server.url) as http:
            for n in range(10):
                http.post(f"/topics/{topic}", json={"data": dashboard(n)})

    sizes = {}
    for name, path in {
        "deltas": f"/topics/dash.a{stamp}?delta=fossil",
        "plain": f"/topics/dash.b{stamp}",
        "not allowed": f"/topics/room.c{stamp}?delta=fossil",  # outside SLUICEWAY_DELTA_TOPICS
        "one topic of /events": f"/events?topic=dash.d{stamp}&delta=fossil",
    }.items():
        topic = path.split("/")[-1].split("?")[0] if "topic=" not in path else f"dash.d{stamp}"
        client, sizes[name] = read_raw(server.url + path, lambda t=topic: publish(t), 10)
        assert [json.loads(data) for data in client.data] == [dashboard(n) for n in range(10)]
        with_deltas = name in ("deltas", "one topic of /events")
        assert [e.delta for e in client.events] == [None] + ["fossil" if with_deltas else None] * 9
    assert sizes["deltas"] < sizes["plain"] * 0.2
    assert sizes["not allowed"] == pytest.approx(sizes["plain"], rel=0.05)


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/topics/dash.x?delta=xdelta", "invalid_delta"),
        ("/topics/dash.x?delta=", "invalid_delta"),
        ("/events?topic=dash.x&topic=dash.y&delta=fossil", "invalid_delta"),
        ("/topics/dash.x?delta=" + "f" * 5000, "invalid_delta"),
    ],
)
def test_bad_delta_requests_are_refused(server: ServerProcess, path: str, error: str) -> None:
    response = httpx.get(server.url + path)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == error
    assert len(response.text) < 500  # the bad value is not echoed in full
    assert httpx.get(f"{server.url}/healthz").json()["status"] == "ok"


async def test_a_fastapi_endpoint_of_the_users_streams_deltas() -> None:
    """The library path (ASGI, not the server's native one), tested in process as users test
    theirs (``sluiceway.testing``): a user's own endpoint passes ``delta`` to the hub; the raw
    stream carries deltas, and the client rebuilds every state, resuming too."""
    hub = Hub()
    app = FastAPI()

    @app.get("/dashboard")
    async def stream(request: Request) -> EventStreamResponse:
        sub = await hub.subscribe(
            ["dash"],
            last_event_id=request.headers.get("last-event-id"),
            delta=request.query_params.get("delta"),
        )
        return EventStreamResponse(sub)

    raw = Rebuilder()
    async with client(app) as http:
        async with http.stream("GET", "/dashboard?delta=fossil") as response:
            for n in range(12):
                await hub.publish("dash", dashboard(n))
            async for chunk in response.aiter_bytes():
                raw.feed(chunk)
                if len(raw.data) == 12:
                    break
        got: list[Event] = []
        first = f"{hub._table.get('dash').epoch}-1"  # type: ignore[union-attr]
        source = EventSource(
            "http://localhost/dashboard", client=http, delta=True, last_event_id=first
        )
        async with source:
            async for event in source:
                got.append(event)
                if len(got) == 11:
                    break
    assert [json.loads(data) for data in raw.data] == [dashboard(n) for n in range(12)]
    assert [event.delta for event in raw.events].count("fossil") == 11
    assert [json.loads(event.data or "") for event in got] == [dashboard(n) for n in range(1, 12)]


def test_the_client_resumes_after_a_delta_that_does_not_apply() -> None:
    """A delta for another origin (a server bug): the client drops the connection and resumes
    from the last event it could rebuild; what it yields stays right."""
    first, second = "x" * 50 + "one", "x" * 50 + "two"
    good = fossil.create(first.encode(), second.encode()).decode()
    wrong = fossil.create(b"y" * 50 + b"one", b"y" * 50 + b"three").decode()

    async def handler(connection: Connection) -> None:
        await connection.send_head()
        if connection.request.headers.get("last-event-id") is None:
            await connection.send(
                encode_event(first, id="1")
                + encode_event(good, id="2", delta="fossil")
                + encode_event(wrong, id="3", delta="fossil")
            )
        else:
            resumed = connection.request.headers["last-event-id"]
            await connection.send(encode_event(f"after {resumed}", id="3"))
            await connection.end()

    with ScriptedServer(handler) as scripted:
        got = follow(scripted.url, 3, use_async=True, mismatches=1)
        assert [event.data for event in got] == [first, second, "after 2"]
        assert [request.path for request in scripted.requests] == ["/?delta=fossil"] * 2


async def test_large_events_go_whole_and_bad_formats_are_hub_errors() -> None:
    """Over ``MAX_DELTA_INPUT`` no delta is made (the encoder runs on the event loop); a bad
    format is the hub's ``InvalidDelta``, which users' apps answer 400 (install_error_handlers)."""
    hub = Hub()
    sub = await hub.subscribe(["big"], delta="fossil")
    client = Rebuilder()
    big = "x" * (fossil.MAX_DELTA_INPUT + 1)
    started = time.perf_counter()
    for text in (big, big + "y", "small " * 40, "small " * 39 + "z"):
        await hub.publish("big", text)
        client.drain(sub)
    assert time.perf_counter() - started < 1
    assert [event.delta for event in client.events] == [None, None, None, "fossil"]
    assert client.data[-1] == "small " * 39 + "z"
    with pytest.raises(InvalidDelta):
        await hub.subscribe(["big"], delta="vcdiff")
