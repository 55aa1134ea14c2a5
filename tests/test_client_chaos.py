"""Chaos: connections cut at random points, mid-event included, while 2,000 events flow; the
client must receive every event exactly once, in order."""

from __future__ import annotations

import asyncio
import random

import httpx
import pytest
from conftest import StartServer
from sse_servers import ChaosProxy, Connection, ScriptedServer, chunk
from test_client import MODES, take

from sluiceway.client import EventSource, RetryInfo

EVENTS = 2000


def encoded(number: int) -> bytes:
    extra = b"data: second line\n" if number % 7 == 0 else b""
    return b"id: %d\ndata: event %d\n%s\n" % (number, number, extra)


def expected_data(number: int) -> str:
    return f"event {number}" + ("\nsecond line" if number % 7 == 0 else "")


class CuttingServer:
    """Serves events after the client's Last-Event-ID, cutting most connections after a random
    number of bytes (in the middle of a line, an event or a chunk's framing), by FIN or RST."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.cuts = 0

    async def __call__(self, connection: Connection) -> None:
        after = int(connection.request.headers.get("last-event-id", "0"))
        body = b"".join(encoded(n) for n in range(after + 1, EVENTS + 1))
        await connection.send_head()
        wire = bytearray()
        position = 0
        while position < len(body):  # chunks of random sizes: events split anywhere
            size = self.random.randint(1, 300)
            wire += chunk(body[position : position + size])
            position += size
        # Always cut until the end is near, then sometimes let the rest through.
        cut = self.random.randint(0, 1200)
        if len(wire) < 1200 and self.random.random() < 0.5:
            cut = len(wire)
        if cut < len(wire):
            self.cuts += 1
            await connection.send_raw(bytes(wire[:cut]))
            if self.random.random() < 0.5:
                connection.writer.transport.abort()
            return
        await connection.send_raw(bytes(wire))
        await connection.hold()  # every event sent: wait for the client to leave


@pytest.mark.parametrize("mode", MODES)
def test_every_event_exactly_once_in_order_through_random_cuts(mode: str) -> None:
    cutter = CuttingServer(seed=20261123 + len(mode))
    with ScriptedServer(cutter) as server:
        source = EventSource(server.url + "/chaos", retry_delay=0.001, max_backoff=0.01)
        events = take(source, mode, count=EVENTS)
    assert [e.id for e in events] == [str(n) for n in range(1, EVENTS + 1)]
    assert [e.data for e in events] == [expected_data(n) for n in range(1, EVENTS + 1)]
    assert cutter.cuts >= 50, cutter.cuts  # the test really did break connections, often
    resumed_from = [int(r.headers.get("last-event-id", "0")) for r in server.requests]
    assert resumed_from == sorted(resumed_from)  # never asked to go back


async def test_a_real_server_through_a_proxy_that_cuts_connections(
    start_server: StartServer,
) -> None:
    server = start_server("--history-size", "5000")
    topic = "chaos"
    retries: list[RetryInfo] = []
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        start = (await http.post(f"/topics/{topic}", json={"data": "start"})).json()["id"]

        async def publish_all() -> None:
            for number in range(1, EVENTS + 1):
                response = await http.post(f"/topics/{topic}", json={"data": expected_data(number)})
                response.raise_for_status()

        with ChaosProxy(server.port, seed=7, min_bytes=100, max_bytes=4000) as proxy:
            source = EventSource(
                f"{proxy.url}/topics/{topic}",
                last_event_id=start,
                retry_delay=0.001,
                max_backoff=0.01,
                on_retry=retries.append,
            )
            publisher = asyncio.create_task(publish_all())
            received: list[str] = []
            async with asyncio.timeout(60), source:
                async for event in source:
                    received.append(event.data or "")
                    if len(received) == EVENTS:
                        break
            await publisher
            cuts = proxy.cuts
    assert received == [expected_data(n) for n in range(1, EVENTS + 1)]
    assert cuts >= 20, cuts
    assert len(retries) >= cuts
