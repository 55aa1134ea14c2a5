"""Fossil deltas over WebSocket: the encoder against the SDK's own decoder (property-tested), then
the official Python SDK, unchanged, subscribed with ``delta="fossil"`` in both formats to a
dashboard that republishes a 4 KiB state with small changes: every payload it rebuilds equals
the published one byte for byte, through connections cut mid-frame and through a reset."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from centrifuge.client import DeltaType
from centrifuge.fossil import apply_delta
from conftest import StartServer
from hypothesis import given
from hypothesis import strategies as st
from serverproc import ServerProcess
from sse_servers import ChaosProxy
from test_centrifugo_sdk import Recorder, sdk_client
from wsclient import raw_client, ws_url

from sluiceway import fossil


@given(st.binary(max_size=400), st.binary(max_size=400))
def test_any_delta_applies_with_the_sdks_decoder(origin: bytes, target: bytes) -> None:
    delta = fossil.create(origin, target)
    assert fossil.apply(origin, delta) == target
    assert bytes(apply_delta(origin, delta)) == target


@given(st.binary(min_size=20, max_size=400), st.data())
def test_small_changes_make_small_deltas(origin: bytes, data: st.DataObject) -> None:
    position = data.draw(st.integers(0, len(origin) - 1))
    target = origin[:position] + b"X" + origin[position + 1 :]
    delta = fossil.create(origin, target)
    assert fossil.apply(origin, delta) == target
    if len(origin) >= 200:
        assert len(delta) < len(target) // 4


def test_bad_deltas_are_refused() -> None:
    good = fossil.create(b"0123456789abcdefghijklmnopqrstuvwxyz", b"0123456789abcdefXhijklmnopq")
    for bad in (b"", b"zz", good[:-3], good.replace(b"@", b"!"), b"5\n3@100,0;"):
        with pytest.raises(fossil.DeltaError):
            fossil.apply(b"0123456789abcdefghijklmnopqrstuvwxyz", bad)


def dashboard(n: int, sensors: int = 90) -> dict[str, Any]:
    """A state of ``sensors`` readings (90: ~4 KiB), a few values changed at each step."""
    rng = random.Random(n)
    state = {
        f"sensor-{i:03d}": {"value": round(i * 1.5, 1), "unit": "°C", "ok": True}
        for i in range(sensors)
    }
    for _ in range(3):
        state[f"sensor-{rng.randrange(sensors):03d}"]["value"] = round(rng.uniform(0, 100), 1)
    state["seq"] = n  # type: ignore[assignment]
    return state


async def publish(http: httpx.AsyncClient, channel: str, n: int, sensors: int = 90) -> None:
    response = await http.post(f"/topics/{channel}", json={"data": dashboard(n, sensors)})
    assert response.status_code == 200, response.text


def rebuilt(data: Any) -> Any:
    """What the SDK gave, as JSON (Protobuf: the bytes of the published text)."""
    return json.loads(data) if isinstance(data, bytes) else data


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    process = ServerProcess(env={"SLUICEWAY_HISTORY_SIZE": "1000"}).start()
    yield process
    process.stop()


@pytest.mark.parametrize("use_protobuf", [False, True], ids=["json", "protobuf"])
async def test_the_sdk_rebuilds_every_publication_through_cuts(
    server: ServerProcess, use_protobuf: bool
) -> None:
    """Each connection is cut after 4-12 KB, mid-frame too: the SDK reconnects, recovers
    (whole publications) and goes on with deltas. (A small state, paced, so that what a
    client misses while it reconnects fits in the next connection's budget.)"""
    channel = f"dash.{time.time_ns()}"
    seen = Recorder()
    total = 200
    with ChaosProxy(server.port, seed=5, min_bytes=4000, max_bytes=12000) as proxy:
        url = f"ws://127.0.0.1:{proxy.port}/connection/websocket"
        async with (
            sdk_client(url, use_protobuf=use_protobuf) as client,
            httpx.AsyncClient(base_url=server.url) as http,
        ):
            subscription = client.new_subscription(channel, seen, delta=DeltaType.FOSSIL)
            await client.connect()
            await subscription.subscribe()
            await subscription.ready(10)
            for n in range(total):
                await publish(http, channel, n, sensors=10)
                await asyncio.sleep(0.01)
            await seen.until(lambda: len(seen.data) >= total, timeout=60)
            history = (await http.get(f"/topics/{channel}/history?limit=1000")).json()
        cuts = proxy.cuts
    published = [event["data"] for event in history["events"]]
    assert len(published) == total
    if use_protobuf:  # byte for byte: the stored text
        assert [bytes(d) for d in seen.data] == [p.encode() for p in published]
    else:
        assert [rebuilt(d) for d in seen.data] == [json.loads(p) for p in published]
    assert seen.offsets == list(range(1, total + 1))
    assert cuts >= 3


async def test_a_reset_sends_the_next_publication_whole(start_server: StartServer) -> None:
    """History too short to recover: the SDK is told (recovered false) and the next
    publication it gets is whole, so what it rebuilds is right."""
    server = start_server(env={"SLUICEWAY_HISTORY_SIZE": "3"})
    channel = f"dash.{time.time_ns()}"
    seen = Recorder()
    async with (
        sdk_client(ws_url(server.url)) as client,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        subscription = client.new_subscription(channel, seen, delta=DeltaType.FOSSIL)
        await client.connect()
        await subscription.subscribe()
        await subscription.ready(5)
        for n in range(3):
            await publish(http, channel, n)
        await seen.until(lambda: len(seen.data) == 3)
        await client.disconnect()
        for n in range(3, 10):  # more than history holds
            await publish(http, channel, n)
        await client.connect()
        await seen.until(lambda: len(seen.subscribed) == 2)
        assert seen.subscribed[1].recovered is False
        for n in range(10, 13):
            await publish(http, channel, n)
        await seen.until(lambda: len(seen.data) == 6)
    assert [rebuilt(d)["seq"] for d in seen.data] == [0, 1, 2, 10, 11, 12]
    assert [rebuilt(d) for d in seen.data][3:] == [dashboard(n) for n in (10, 11, 12)]


async def test_deltas_are_small_and_only_where_asked(start_server: StartServer) -> None:
    server: ServerProcess = start_server(env={"SLUICEWAY_DELTA_TOPICS": '["dash.*"]'})
    async with raw_client(server.url) as client, httpx.AsyncClient(base_url=server.url) as http:
        await client.connect()
        refused = await client.request("subscribe", {"channel": "dash.a", "delta": "xdelta"})
        assert refused["error"]["code"] == 107
        allowed = await client.subscribe("dash.b", delta="fossil")
        assert allowed.get("delta") is True
        elsewhere = await client.subscribe("room.c", delta="fossil")
        assert "delta" not in elsewhere  # not allowed there: whole publications
        for n in range(3):
            await publish(http, "dash.b", n)
            await publish(http, "room.c", n)
        pubs = await client.publications("dash.b", 3)
        plain = await client.publications("room.c", 3)
    whole = json.dumps(dashboard(0), separators=(",", ":"))
    assert pubs[0].get("delta") is None and json.loads(pubs[0]["data"]) == json.loads(whole)
    assert all(p["delta"] is True and len(p["data"]) < len(whole) // 10 for p in pubs[1:])
    assert [p["data"] for p in plain] == [dashboard(n) for n in range(3)]
