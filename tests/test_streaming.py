"""Streaming behaviour over real sockets: keep-alives, producer cleanup, exact resume under
random disconnects, slow clients, keep-latest topics and shutdown.

``sluiceway serve`` writes hub streams either natively from its protocol callbacks (the
default) or through the ASGI ``EventStreamResponse`` (``SLUICEWAY_NATIVE_STREAMS=false``);
tests of stream behaviour run against both (``mode``). Library-level tests run an in-process
uvicorn with a custom producer, so that they can observe what the producer did.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from serverproc import (
    HOST,
    RawHTTPStream,
    ServerProcess,
    client_for,
    get_metrics,
    open_stream,
    overfill_bytes,
    wait_for,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from sluiceway.asgi import EventStreamResponse, close_all_streams, open_stream_count
from sluiceway.control import encode_position
from sluiceway.ids import Position
from sluiceway.sse import Event

pytestmark = pytest.mark.timeout(90)

MODES = {"native": {}, "asgi": {"SLUICEWAY_NATIVE_STREAMS": "false"}}
OVERFLOW = 'sluiceway_slow_subscriber_disconnects_total{reason="overflow"}'
WRITE_TIMEOUT = 'sluiceway_slow_subscriber_disconnects_total{reason="write_timeout"}'


@pytest.fixture(params=list(MODES))
def mode(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(scope="module", params=list(MODES))
def mode_server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    """A default server per stream mode, shared by the module's tests (unique topics)."""
    server = ServerProcess(env=MODES[request.param]).start()
    yield server
    server.stop()


async def publish(client: httpx.AsyncClient, topic: str, data: object, **body: object) -> str:
    response = await client.post(f"/topics/{topic}", json={"data": data, **body})
    assert response.status_code == 200, response.text
    return response.json()["id"]  # type: ignore[no-any-return]


async def open_streams(client: httpx.AsyncClient) -> float:
    return (await get_metrics(client))["sluiceway_open_streams"]


# -- keep-alive ----------------------------------------------------------------------------


async def test_keep_alive_ping_after_silence(start_server, mode: str, topic: str) -> None:
    server = start_server(env={**MODES[mode], "SLUICEWAY_PING_INTERVAL": "0.3"})
    async with client_for(server) as client:
        for path in (f"/topics/{topic}", f"/events?topic={topic}&topic={topic}.b"):
            async with open_stream(client, path) as stream:
                opened = time.monotonic()
                await stream.until_raw(b": ping\n\n", timeout=2)
                assert time.monotonic() - opened < 1.0
                # Nothing else, nothing before but the position the stream starts at (which
                # the ping leaves as it is).
                (position,) = stream.positions
                assert bytes(stream.raw) == encode_position(position.id or "") + b": ping\n\n"
                assert stream.parser.last_event_id == position.id

                # An event resets the silence; the next ping follows it, and the parser
                # sees only the event (a comment is not an event).
                event_id = await publish(client, topic, "tick")
                event = await stream.next_event()
                assert event.data == "tick"
                assert Position.parse(event.id.split(",")[0]) == Position.parse(event_id)
                after_event = len(stream.raw)
                sent = time.monotonic()
                await stream.until_raw(b": ping\n\n", timeout=2, start=after_event)
                assert time.monotonic() - sent < 1.0


# -- producer cleanup (in-process) ---------------------------------------------------------


@contextlib.asynccontextmanager
async def serve_in_process(app: Starlette) -> AsyncIterator[str]:
    """Run ``app`` under uvicorn in this event loop on a socket bound here (no port race)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("uvicorn stopped before it started")
                await asyncio.sleep(0.01)
        yield f"http://{HOST}:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


class Probe:
    """What a producer did: items yielded, how it ended, when its ``finally`` ran."""

    def __init__(self) -> None:
        self.yielded = 0
        self.ended_by: str | None = None
        self.finalized = asyncio.Event()
        self.finalized_at = 0.0

    async def wait_finalized(self, since: float, within: float = 1.0) -> float:
        await asyncio.wait_for(self.finalized.wait(), within)
        return self.finalized_at - since

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        """Wrap a producer's body: records how it ended, from its ``finally``."""
        exc: BaseException | None = None
        try:
            yield
        except BaseException as error:
            exc = error
            raise
        finally:
            self.ended_by = type(exc).__name__ if exc is not None else "return"
            self.finalized_at = time.monotonic()
            self.finalized.set()


def yields_forever(probe: Probe) -> Callable[[], AsyncIterator[Event]]:
    async def produce() -> AsyncIterator[Event]:
        with probe.watching():
            while True:
                yield Event(data=str(probe.yielded), id=str(probe.yielded))
                probe.yielded += 1
                await asyncio.sleep(0.005)

    return produce


def blocks_forever(probe: Probe) -> Callable[[], AsyncIterator[str]]:
    async def produce() -> AsyncIterator[str]:
        with probe.watching():
            yield "ready"
            probe.yielded += 1
            await asyncio.sleep(3600)
            yield "never"

    return produce


def app_for(produce: Callable[[], AsyncIterator[Any]], **options: Any) -> Starlette:
    async def endpoint(request: Request) -> EventStreamResponse:
        return EventStreamResponse(produce(), **options)

    return Starlette(routes=[Route("/stream", endpoint)])  # type: ignore[arg-type]


@pytest.mark.parametrize("producer", [yields_forever, blocks_forever])
@pytest.mark.parametrize("leave", ["close", "reset"])
async def test_producer_finally_runs_when_client_leaves(
    producer: Callable[[Probe], Callable[[], AsyncIterator[Any]]], leave: str
) -> None:
    probe = Probe()
    async with serve_in_process(app_for(producer(probe), ping_interval=None)) as url:
        port = int(url.rsplit(":", 1)[1])
        if leave == "close":
            async with (
                httpx.AsyncClient(base_url=url, timeout=5) as client,
                open_stream(client, "/stream") as stream,
            ):
                first = await stream.next_event()
                assert open_stream_count() == 1
            left = time.monotonic()  # the connection is closed when the context exits
        else:
            raw = await RawHTTPStream.connect(port, "/stream")
            await raw.read_head()
            assert raw.status == 200
            first = await raw.next_event()
            raw.reset()  # RST, not FIN
            left = time.monotonic()
        assert first.data in ("0", "ready")
        assert await probe.wait_finalized(left, within=1.0) < 1.0
        assert probe.ended_by in ("GeneratorExit", "CancelledError")
        await wait_for(lambda: open_stream_count() == 0, timeout=1.0, what="stream unregistered")


async def test_close_all_streams_ends_a_generic_stream_cleanly() -> None:
    probe = Probe()
    async with (
        serve_in_process(app_for(blocks_forever(probe), ping_interval=None)) as url,
        httpx.AsyncClient(base_url=url, timeout=5) as client,
        open_stream(client, "/stream") as stream,
    ):
        assert (await stream.next_event()).data == "ready"
        await close_all_streams(grace=2.0)
        rest = await stream.until_end(timeout=2.0)  # a complete chunked body, no error
        assert rest == []
        assert stream.ended
        assert probe.finalized.is_set()
        assert open_stream_count() == 0


async def test_a_failing_producer_ends_with_an_in_band_error_event() -> None:
    async def produce() -> AsyncIterator[str]:
        yield "before"
        raise RuntimeError("secret internal detail")

    async with (
        serve_in_process(app_for(produce, ping_interval=None)) as url,
        httpx.AsyncClient(base_url=url, timeout=5) as client,
        open_stream(client, "/stream") as stream,
    ):
        events = await stream.until_end(timeout=5)  # a complete chunked body, no error
    assert [(e.event, e.data) for e in events] == [
        ("message", "before"),
        ("sluiceway.error", '{"error":"producer_failed"}'),
    ]
    assert b"secret" not in bytes(stream.raw)
    assert open_stream_count() == 0


# -- the library response: encodings and pings ---------------------------------------------


async def test_event_stream_response_encodes_every_item_kind() -> None:
    items: list[Any] = [
        Event(data="multi\nline", event="first", id="1"),
        "a plain string",  # keeps the last id, as the spec says
        {"data": {"k": [1, 2], "s": "é"}, "event": "obj", "id": "2"},
        {"data": "text in a mapping"},
        b"event: raw\ndata: pre-encoded bytes\n\n",
        Event(comment="only a comment"),
        Event(data="é ✓ 𝄞", id="3", retry=700),
        {"data": 42, "event": "number"},
        "line\r\nends\rall\nkinds",
    ]

    async def produce() -> AsyncIterator[Any]:
        for item in items:
            yield item

    app = app_for(produce, retry=2500, headers={"X-Trace": "abc"}, ping_interval=None)
    async with (
        serve_in_process(app) as url,
        httpx.AsyncClient(base_url=url, timeout=5) as client,
        open_stream(client, "/stream") as stream,
    ):
        assert stream.response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert stream.response.headers["cache-control"] == "no-cache"
        assert stream.response.headers["x-accel-buffering"] == "no"
        assert stream.response.headers["x-trace"] == "abc"
        events = await stream.until_end(timeout=5)  # the producer ended: so does the response

    raw = bytes(stream.raw)
    assert raw.startswith(b"retry: 2500\n\n")
    assert b"data: a plain string\n\n" in raw
    assert b"event: raw\ndata: pre-encoded bytes\n\n" in raw
    assert b": only a comment\n\n" in raw
    assert b"retry: 700\n" in raw
    assert [(e.data, e.event, e.id) for e in events] == [
        ("multi\nline", "first", "1"),
        ("a plain string", "message", "1"),
        ('{"k":[1,2],"s":"é"}', "obj", "2"),
        ("text in a mapping", "message", "2"),
        ("pre-encoded bytes", "raw", "2"),
        ("é ✓ 𝄞", "message", "3"),
        ("42", "number", "3"),
        ("line\nends\nall\nkinds", "message", "3"),
    ]
    assert stream.parser.retry == 700  # the last retry: wins


async def test_ping_interval_for_a_generic_producer() -> None:
    probe = Probe()
    app = app_for(blocks_forever(probe), ping_interval=0.2)
    async with (
        serve_in_process(app) as url,
        httpx.AsyncClient(base_url=url, timeout=5) as client,
        open_stream(client, "/stream") as stream,
    ):
        assert (await stream.next_event()).data == "ready"
        silent_since = time.monotonic()
        await stream.until_raw(b": ping\n\n: ping\n\n", timeout=2)
        # Two pings, about 0.2 s apart, after about 0.4 s of silence.
        assert 0.3 <= time.monotonic() - silent_since < 1.2
        assert bytes(stream.raw) == b"data: ready\n\n: ping\n\n: ping\n\n"
    assert await probe.wait_finalized(time.monotonic()) < 1.0


# -- exact resume under random disconnects -------------------------------------------------

EVENT_COUNT = 1000


async def take(
    next_event: Callable[..., Awaitable[Event]], quota: int, got: list[Event]
) -> str | None:
    """Read up to ``quota`` events into ``got`` (stopping at EVENT_COUNT); the last id read."""
    last_id = None
    for _ in range(quota):
        event = await next_event(timeout=10)
        got.append(event)
        last_id = event.id
        if len(got) == EVENT_COUNT:
            break
    return last_id


async def chaos_reader(
    server: ServerProcess,
    target: Callable[[], tuple[str, dict[str, Any]]],
    subscribed: asyncio.Event,
    rng: random.Random,
) -> tuple[list[Event], int]:
    """Connect, read a random number of events, drop the connection (FIN or RST), resume
    from the last id actually read; until all events are in. Returns (events, connections)."""
    got: list[Event] = []
    last_id: str | None = None
    connections = 0
    async with client_for(server) as client:
        while len(got) < EVENT_COUNT:
            quota = rng.randint(0 if last_id else 1, 40)
            how = rng.choice(["header", "query", "rst"])
            path, params = target()
            connections += 1
            if how == "rst":
                headers = {"Last-Event-ID": last_id} if last_id else None
                target_url = str(httpx.URL(path, params=params))
                raw = await RawHTTPStream.connect(server.port, target_url, headers=headers)
                await raw.read_head()
                assert raw.status == 200
                subscribed.set()
                last_id = await take(raw.next_event, quota, got) or last_id
                raw.reset()  # events already received but not read are dropped with it
                continue
            if last_id and how == "query":
                params = {**params, "last_event_id": last_id}
            async with open_stream(
                client,
                path,
                params=params,
                last_event_id=last_id if how == "header" else None,
            ) as stream:
                subscribed.set()
                last_id = await take(stream.next_event, quota, got) or last_id
            # Leaving the block mid-stream closes the connection.
    return got, connections


async def steady_publisher(
    server: ServerProcess, topics: list[str], subscribed: asyncio.Event, rng: random.Random
) -> list[str]:
    """Publishes 0..EVENT_COUNT-1 (as data) at a steady pace; returns each one's topic."""
    assignment = [rng.choice(topics) for _ in range(EVENT_COUNT)]
    await asyncio.wait_for(subscribed.wait(), 10)
    async with client_for(server) as client:
        for seq, name in enumerate(assignment):
            await publish(client, name, str(seq))
            if seq % 10 == 9:
                await asyncio.sleep(0.002)  # pacing, so that the reader also sees live events
    return assignment


async def test_1000_events_exactly_once_through_random_disconnects(
    mode_server: ServerProcess, topic: str
) -> None:
    rng = random.Random(2)
    subscribed = asyncio.Event()
    async with asyncio.timeout(60):
        publisher = asyncio.create_task(steady_publisher(mode_server, [topic], subscribed, rng))
        got, connections = await chaos_reader(
            mode_server, lambda: (f"/topics/{topic}", {}), subscribed, random.Random(1)
        )
        await publisher

    assert [int(e.data) for e in got] == list(range(EVENT_COUNT))  # no loss, no duplicate
    assert all(e.event == "message" for e in got)  # never a reset
    offsets = [Position.parse(e.id).offset for e in got]
    assert offsets == list(range(1, EVENT_COUNT + 1))
    assert connections >= 20
    async with client_for(mode_server) as client:
        await wait_for(lambda: _no_streams(client), timeout=5)


async def _no_streams(client: httpx.AsyncClient) -> bool:
    return await open_streams(client) == 0


async def test_1000_events_exactly_once_on_a_two_topic_stream(
    mode_server: ServerProcess, topic: str
) -> None:
    topics = [f"{topic}.b", f"{topic}.a"]
    rng = random.Random(3)
    subscribed = asyncio.Event()

    def target() -> tuple[str, dict[str, Any]]:
        return "/events", {"topic": topics}

    async with asyncio.timeout(60):
        publisher = asyncio.create_task(steady_publisher(mode_server, topics, subscribed, rng))
        got, connections = await chaos_reader(mode_server, target, subscribed, random.Random(4))
        assignment = await publisher

    seqs = [int(e.data) for e in got]
    assert sorted(seqs) == list(range(EVENT_COUNT))  # each exactly once
    assert all(e.event == "message" for e in got)
    # Within each topic, publish order; the cursor's position for that topic counts up by one
    # per event and the other position never goes back.
    for index, name in enumerate(sorted(topics)):
        mine = [s for s in seqs if assignment[s] == name]
        assert mine == sorted(mine)
        positions = [Position.parse(e.id.split(",")[index]).offset for e in got]
        assert positions == sorted(positions)
        own = [
            Position.parse(e.id.split(",")[index]).offset
            for e in got
            if assignment[int(e.data)] == name
        ]
        assert own == list(range(1, len(own) + 1))
    assert connections >= 20
    async with client_for(mode_server) as client:
        await wait_for(lambda: _no_streams(client), timeout=5)


# -- slow clients --------------------------------------------------------------------------


async def stuck_subscriber(port: int, path: str) -> socket.socket:
    """A subscriber that sends its GET and never reads a byte (tiny receive window)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (HOST, port))
    request = f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nAccept: text/event-stream\r\n\r\n"
    await loop.sock_sendall(sock, request.encode())
    return sock


async def test_slow_client_is_cut_off_without_hurting_others(
    start_server, mode: str, topic: str
) -> None:
    event_size = 512 * 1024
    count = 200  # 100 MiB in all
    server: ServerProcess = start_server(
        env={
            **MODES[mode],
            "SLUICEWAY_BUFFER_BYTES": str(4 * event_size),
            "SLUICEWAY_BUFFER_EVENTS": "8",
            "SLUICEWAY_WRITE_TIMEOUT": "2",
            "SLUICEWAY_HISTORY_BYTES": str(4 * 1024 * 1024),
        }
    )
    slow = await stuck_subscriber(server.port, f"/topics/{topic}")
    try:
        async with client_for(server) as client, open_stream(client, f"/topics/{topic}") as fast:
            await wait_for(lambda: _stream_count_is(client, 2), timeout=5)
            for n in range(3):  # warm up: allocations that stay whatever the volume
                await publish(client, topic, f"warm-up {n} " + "w" * event_size)
                await fast.next_event()
            rss_before = server.ps.memory_info().rss
            rss_peak = rss_before
            slowest_publish = 0.0
            payload = "x" * event_size
            for n in range(count):
                started = time.monotonic()
                await publish(client, topic, f"{n} {payload}")
                slowest_publish = max(slowest_publish, time.monotonic() - started)
                event = await fast.next_event(timeout=10)  # in step with the normal client
                assert event.data.partition(" ")[0] == str(n)
                assert len(event.data) == len(payload) + len(str(n)) + 1
                if n % 10 == 0:
                    rss_peak = max(rss_peak, server.ps.memory_info().rss)

            assert slowest_publish < 2.0  # publishers never wait for subscribers
            assert rss_peak - rss_before < 50 * 1024 * 1024, (rss_before, rss_peak)

            async def slow_one_dropped() -> bool:
                metrics = await get_metrics(client)
                return metrics[OVERFLOW] + metrics[WRITE_TIMEOUT] >= 1

            await wait_for(slow_one_dropped, timeout=10, what="slow subscriber disconnected")
            await wait_for(lambda: _stream_count_is(client, 1), timeout=5, what="its stream ended")
            # And its socket is closed by the server.
            port = slow.getsockname()[1]
            await wait_for(
                lambda: port not in server.connection_ports(),
                timeout=5,
                what="the server closes the slow subscriber's socket",
            )
            # The normal subscriber is still there and live.
            event_id = await publish(client, topic, "after")
            assert (await fast.next_event()).id == event_id
    finally:
        slow.close()


async def _stream_count_is(client: httpx.AsyncClient, count: int) -> bool:
    return await open_streams(client) == count


@pytest.mark.parametrize("stream_mode", ["native", "asgi"])
async def test_stuck_socket_is_dropped_after_write_timeout(
    start_server, stream_mode: str, topic: str
) -> None:
    server: ServerProcess = start_server(
        env={
            **MODES[stream_mode],
            "SLUICEWAY_WRITE_TIMEOUT": "1",
            # Buffers far beyond what is published: only the write timeout can end it.
            "SLUICEWAY_BUFFER_BYTES": str(1 << 30),
            "SLUICEWAY_BUFFER_EVENTS": "100000",
        }
    )
    stuck = await stuck_subscriber(server.port, f"/topics/{topic}")
    port = stuck.getsockname()[1]
    try:
        async with client_for(server) as client:
            await wait_for(lambda: _stream_count_is(client, 1), timeout=5)
            assert port in server.connection_ports()
            payload = "s" * 512 * 1024
            for n in range(overfill_bytes() // len(payload)):  # more than socket buffers hold
                await publish(client, topic, f"{n} {payload}")

            async def timed_out() -> bool:
                return (await get_metrics(client))[WRITE_TIMEOUT] == 1

            await wait_for(timed_out, timeout=5)
            assert (await get_metrics(client))[OVERFLOW] == 0
            await wait_for(lambda: _stream_count_is(client, 0), timeout=3)
            # The server drops the connection itself (the client still reads nothing).
            await wait_for(
                lambda: port not in server.connection_ports(),
                timeout=3,
                what="the server closes the timed-out connection",
            )
    finally:
        stuck.close()


@pytest.mark.timeout(120)
async def test_stalled_subscribers_past_their_buffer_are_dropped_at_once(
    start_server, mode: str, topic: str
) -> None:
    """Every writer gets the same bounds: subscribers that read nothing are dropped for
    overflow as soon as they are past ``buffer_events``, long before the write timeout, on
    the native path as through ASGI."""
    stalled_count, event_bytes, buffer_events = 100, 4096, 1000
    server: ServerProcess = start_server(
        env={**MODES[mode], "SLUICEWAY_BUFFER_EVENTS": str(buffer_events)}
    )
    stalled = [
        await stuck_subscriber(server.port, f"/topics/{topic}") for _ in range(stalled_count)
    ]
    ports = {sock.getsockname()[1] for sock in stalled}
    try:
        async with client_for(server) as client:
            await wait_for(lambda: _stream_count_is(client, stalled_count), timeout=10)
            # What the sockets can absorb, then the whole buffer and more.
            total = overfill_bytes() // event_bytes + 2 * buffer_events
            payload = "x" * (event_bytes - 8)
            numbers = iter(range(total))

            async def publisher() -> None:
                for n in numbers:
                    await publish(client, topic, f"{n:07d} {payload}")

            await asyncio.gather(*(publisher() for _ in range(4)))
            published = time.monotonic()

            async def all_overflowed() -> bool:
                return (await get_metrics(client))[OVERFLOW] == stalled_count

            await wait_for(all_overflowed, timeout=5, what="every stalled subscriber overflowed")
            assert time.monotonic() - published < 5  # not the 30 s write timeout
            metrics = await get_metrics(client)
            assert metrics[WRITE_TIMEOUT] == 0
            assert metrics["sluiceway_open_streams"] == 0
            # The server dropped the sockets itself (the clients still read nothing).
            await wait_for(
                lambda: not ports & server.connection_ports(),
                timeout=5,
                what="the server closes the stalled connections",
            )
            # And it goes on serving.
            async with open_stream(client, f"/topics/{topic}") as live:
                event_id = await publish(client, topic, "after")
                assert (await live.next_event()).id == event_id
    finally:
        for sock in stalled:
            sock.close()


# -- keep-latest ---------------------------------------------------------------------------


async def test_keep_latest_topic_skips_ahead_instead_of_disconnecting(
    start_server, mode: str, topic: str
) -> None:
    ticker = f"ticker.{topic}"
    server: ServerProcess = start_server(
        "--keep-latest",
        "ticker.*",
        env={**MODES[mode], "SLUICEWAY_BUFFER_EVENTS": "5", "SLUICEWAY_BUFFER_BYTES": "262144"},
    )
    async with client_for(server) as client:
        lagging = await RawHTTPStream.connect(
            server.port, f"/topics/{ticker}", rcvbuf=4096, limit=16 * 1024
        )
        try:
            await lagging.read_head()
            assert lagging.status == 200
            await publish(client, ticker, "0")
            assert (await lagging.next_event()).data == "0"

            # Stop reading while more is published than the socket buffers hold, far beyond
            # the 5-event / 256 KiB allowance.
            pad = "p" * 60_000
            last = overfill_bytes() // len(pad)
            for n in range(1, last + 1):
                await publish(client, ticker, f"{n} {pad}")
            metrics = await get_metrics(client)
            assert metrics["sluiceway_open_streams"] == 1
            assert metrics[OVERFLOW] == metrics[WRITE_TIMEOUT] == 0

            # Read again: what was in flight, then the newest event, on the same connection.
            seqs: list[int] = []
            offsets: list[int] = []
            async with asyncio.timeout(15):
                while not seqs or seqs[-1] != last:
                    event = await lagging.next_event(timeout=10)
                    seqs.append(int(event.data.partition(" ")[0]))
                    offsets.append(Position.parse(event.id).offset)
            assert seqs == sorted(set(seqs))
            assert offsets == [s + 1 for s in seqs]  # ids are real positions: the gap shows
            assert len(seqs) < last  # it skipped ...
            assert any(b - a > 1 for a, b in itertools.pairwise(offsets))  # ... ahead

            # Still connected and live.
            event_id = await publish(client, ticker, f"{last + 1}")
            assert (await lagging.next_event()).id == event_id
            metrics = await get_metrics(client)
            assert metrics["sluiceway_skipped_to_latest_total"] >= 1
            assert metrics[OVERFLOW] == metrics[WRITE_TIMEOUT] == 0
        finally:
            lagging.reset()


# -- shutdown ------------------------------------------------------------------------------


async def test_sigterm_flushes_and_ends_every_stream_cleanly(
    start_server, mode: str, topic: str
) -> None:
    server: ServerProcess = start_server(env=MODES[mode])
    one, two = f"{topic}.1", f"{topic}.2"
    async with (
        client_for(server) as client,
        open_stream(client, f"/topics/{one}") as single,
        open_stream(client, "/events", params={"topic": [one, two]}) as multi,
    ):
        raw = await RawHTTPStream.connect(server.port, f"/topics/{two}")
        await raw.read_head()
        await wait_for(lambda: _stream_count_is(client, 3), timeout=5)
        published: dict[str, list[str]] = {one: [], two: []}
        for n in range(60):
            name = one if n % 3 else two
            await publish(client, name, f"{n} " + "d" * 2000)
            published[name].append(str(n))
        # Nothing has been read yet: everything is in flight when the signal arrives.
        signalled = time.monotonic()
        server.signal(signal.SIGTERM)

        single_events = await single.until_end(timeout=5)  # raises if the body is cut short
        multi_events = await multi.until_end(timeout=5)
        raw_events: list[Event] = []
        with pytest.raises(EOFError):
            async with asyncio.timeout(5):
                while True:
                    raw_events.append(await raw.next_event())
        await raw.close()

    assert single.ended and multi.ended
    assert raw.complete  # the terminating zero-length chunk arrived
    assert [e.data.split()[0] for e in single_events] == published[one]
    assert [e.data.split()[0] for e in raw_events] == published[two]
    assert sorted(int(e.data.split()[0]) for e in multi_events) == list(range(60))
    exit_code = server.wait(timeout=5)
    assert time.monotonic() - signalled < 3.0
    assert exit_code == 0


async def test_sigterm_exit_status_is_zero(start_server, topic: str) -> None:
    server: ServerProcess = start_server()
    async with client_for(server) as client, open_stream(client, f"/topics/{topic}") as stream:
        await publish(client, topic, "x")
        server.signal(signal.SIGTERM)
        assert [e.data for e in await stream.until_end(timeout=5)] == ["x"]
    assert server.wait(timeout=5) == 0


async def test_shutdown_is_bounded_by_shutdown_timeout_with_a_stuck_client(
    start_server, mode: str, topic: str
) -> None:
    server: ServerProcess = start_server(env={**MODES[mode], "SLUICEWAY_SHUTDOWN_TIMEOUT": "1"})
    stuck = await stuck_subscriber(server.port, f"/topics/{topic}")
    try:
        async with client_for(server) as client, open_stream(client, f"/topics/{topic}") as ok:
            await wait_for(lambda: _stream_count_is(client, 2), timeout=5)
            payload = "s" * 512 * 1024
            for n in range(overfill_bytes() // len(payload)):  # the stuck socket is full
                await publish(client, topic, f"{n} {payload}")
                assert (await ok.next_event()).data.startswith(f"{n} ")
            await publish(client, topic, "last")
            signalled = time.monotonic()
            server.signal(signal.SIGTERM)
            assert [e.data for e in await ok.until_end(timeout=5)] == ["last"]
        try:
            server.wait(timeout=3.0)  # shutdown_timeout (1 s) + slack
        except subprocess.TimeoutExpired:
            elapsed = time.monotonic() - signalled
            raise AssertionError(f"still running {elapsed:.1f} s after SIGTERM") from None
    finally:
        stuck.close()
