"""The Protobuf format end to end: the official Python SDK with ``use_protobuf=True``, unchanged,
against a real server (both directions, JSON and SSE subscribers of the same channel, recovery
through a proxy that cuts connections, history and presence; failed recovery is
``test_centrifugo_sdk``'s, in both formats), and bad binary
input from a frame-level client: each refused with the protocol's code, the server unharmed."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from centrifuge.exceptions import ReplyError as SDKReplyError
from google.protobuf.json_format import ParseDict
from serverproc import ServerProcess
from sse_servers import ChaosProxy
from test_centrifugo_protobuf_frames import delimited, replies
from test_centrifugo_sdk import Connections, Recorder, post, sdk_client, server
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from wsclient import ws_url

from sluiceway.centrifugo.wire import client_pb2 as pb
from sluiceway.client import EventSource

__all__ = ["server"]  # the SDK tests' server (module-scoped here too)


async def test_publications_flow_both_ways_between_formats(server: ServerProcess) -> None:
    """A Protobuf client, a JSON client and an SSE stream on one channel see the same
    publications: Protobuf data is the published text's bytes."""
    channel = f"chat:{time.time_ns()}"
    binary, text = Recorder(), Recorder()
    sse_events: list[Any] = []

    async def read_sse() -> None:
        async with EventSource(f"{server.url}/topics/{channel}") as source:
            async for event in source:
                sse_events.append(json.loads(event.data))
                if len(sse_events) == 3:
                    return

    async with (
        sdk_client(ws_url(server.url), use_protobuf=True) as protobuf_client,
        sdk_client(ws_url(server.url)) as json_client,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        subscription = protobuf_client.new_subscription(channel, binary)
        other = json_client.new_subscription(channel, text)
        for client, sub in ((protobuf_client, subscription), (json_client, other)):
            await client.connect()
            await sub.subscribe()
            await sub.ready(5)
        sse = asyncio.create_task(read_sse())
        await asyncio.sleep(0.2)  # the SSE stream is open before publishing
        await post(http, channel, {"from": "http", "n": 0})
        await subscription.publish(b'{"from":"protobuf","n":1}')
        await other.publish({"from": "json", "n": 2})
        await binary.until(lambda: len(binary.data) == 3)
        await text.until(lambda: len(text.data) == 3)
        await asyncio.wait_for(sse, 10)
    expected = [{"from": "http", "n": 0}, {"from": "protobuf", "n": 1}, {"from": "json", "n": 2}]
    assert [json.loads(data) for data in binary.data] == expected
    assert all(isinstance(data, bytes) for data in binary.data)
    assert text.data == expected
    assert sse_events == expected
    assert binary.offsets == text.offsets == [1, 2, 3]


async def test_history_presence_and_refusals(server: ServerProcess) -> None:
    channel = f"feed.{time.time_ns()}"
    async with (
        sdk_client(ws_url(server.url), use_protobuf=True) as client,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        subscription = client.new_subscription(channel, Recorder())
        await client.connect()
        await subscription.subscribe()
        await subscription.ready(5)
        for n in range(5):
            await post(http, channel, {"n": n})
        history = await subscription.history(limit=-1)
        assert [json.loads(p.data) for p in history.publications] == [{"n": n} for n in range(5)]
        assert [p.offset for p in history.publications] == [1, 2, 3, 4, 5]
        assert history.offset == 5 and history.epoch
        last_two = await subscription.history(limit=2, reverse=True)
        assert [p.offset for p in last_two.publications] == [5, 4]
        presence = await subscription.presence()
        ((client_id, info),) = presence.clients.items()
        assert info.client == client_id
        stats = await subscription.presence_stats()
        assert (stats.num_clients, stats.num_users) == (1, 1)
        with pytest.raises(SDKReplyError) as refused:
            await subscription.publish(b'{"x":1}')  # feed.* is not publish-allowed
        assert refused.value.code == 103


@pytest.mark.slow
async def test_recovery_through_a_proxy_that_cuts_connections(server: ServerProcess) -> None:
    """Every connection is cut (FIN or RST) after a random number of bytes, mid-frame too; the
    SDK reconnects and recovers in Protobuf: every publication once, in order."""
    channel = f"chaos.{time.time_ns()}"
    total = 400
    seen = Recorder()
    connections = Connections()
    with ChaosProxy(server.port, seed=7, min_bytes=1500, max_bytes=4000) as proxy:
        url = f"ws://127.0.0.1:{proxy.port}/connection/websocket"
        async with (
            sdk_client(url, events=connections, use_protobuf=True) as client,
            httpx.AsyncClient(base_url=server.url) as http,
        ):
            subscription = client.new_subscription(channel, seen)
            await client.connect()
            await subscription.subscribe()
            await subscription.ready(10)
            for n in range(total):
                await post(http, channel, n)
                await asyncio.sleep(0.003)
            await seen.until(lambda: len(seen.data) >= total, timeout=90)
            await asyncio.sleep(0.3)  # a duplicate would arrive now
        cuts = proxy.cuts
    assert [int(data) for data in seen.data] == list(range(total))
    assert seen.offsets == list(range(1, total + 1))
    assert cuts >= 5 and connections.connected >= 5
    recoveries = [ctx for ctx in seen.subscribed if ctx.was_recovering]
    assert recoveries and all(ctx.recovered for ctx in recoveries)


# -- bad input, frame by frame ---------------------------------------------------------------


@asynccontextmanager
async def binary_client(http_url: str) -> AsyncIterator[ClientConnection]:
    async with connect(
        ws_url(http_url),
        subprotocols=["centrifuge-protobuf"],
        open_timeout=5,  # type: ignore[list-item]
    ) as ws:
        assert ws.subprotocol == "centrifuge-protobuf"
        yield ws


def command(**fields: object) -> bytes:
    return ParseDict(fields, pb.Command()).SerializeToString()


async def next_replies(ws: ClientConnection) -> list[pb.Reply]:
    frame = await asyncio.wait_for(ws.recv(), 5)
    assert isinstance(frame, bytes), "the Protobuf format uses binary frames"
    return replies(frame)


async def close_code(ws: ClientConnection) -> int | None:
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(5):
            while True:
                await ws.recv()
    return ws.close_code


@pytest.mark.parametrize(
    "frame",
    [b"\xff\xff\xff\xff\xff\xff", b"\x05\x08\x01", b"\x03\xff\xff\xff", b"not protobuf at all"],
)
async def test_malformed_frames_close_with_bad_request(server: ServerProcess, frame: bytes) -> None:
    async with binary_client(server.url) as ws:
        await ws.send(frame)
        assert await close_code(ws) == 3501
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{server.url}/healthz")).status_code == 200


async def test_text_and_oversized_frames_are_refused(server: ServerProcess) -> None:
    async with binary_client(server.url) as ws:
        await ws.send('{"id":1,"connect":{}}')  # JSON on a Protobuf connection
        assert await close_code(ws) == 3501
    async with binary_client(server.url) as ws:
        payload = b"x" * (1 << 20)
        await ws.send(delimited(command(id=1, publish={"channel": "chat:a", "data": payload})))
        code = await close_code(ws)
        assert code in (3501, 1009)  # refused by us, or by the WebSocket layer's own limit


async def test_commands_answer_in_protobuf_and_bad_data_is_refused(server: ServerProcess) -> None:
    channel = f"chat:{time.time_ns()}"
    async with binary_client(server.url) as ws:
        await ws.send(delimited(command(id=1, connect={})))
        (connected,) = await next_replies(ws)
        assert connected.id == 1 and connected.connect.client and connected.connect.pong
        await ws.send(delimited(command(id=2, subscribe={"channel": channel})))
        (subscribed,) = await next_replies(ws)
        assert subscribed.subscribe.recoverable and subscribed.subscribe.epoch
        # Not UTF-8: the hub stores text, so it is refused (107) and nothing is published.
        await ws.send(delimited(command(id=3, publish={"channel": channel, "data": "/w=="})))
        (refused,) = await next_replies(ws)
        assert (refused.id, refused.error.code) == (3, 107)
        await ws.send(delimited(command(id=4), command(id=5, ping={})))  # unknown, then ping
        answers = await next_replies(ws)
        while len(answers) < 2:
            answers += await next_replies(ws)
        assert [(a.id, a.error.code) for a in answers] == [(4, 104), (5, 0)]
        await ws.send(delimited(command(id=6, publish={"channel": channel, "data": "eyJ9"})))
        published = await next_replies(ws)
        while len(published) < 2:  # the reply and our own publication, in either frame
            published += await next_replies(ws)
        pushes = [r.push.pub for r in published if r.push.channel == channel]
        assert [(p.offset, p.data) for p in pushes] == [(1, b'{"}')]
    async with httpx.AsyncClient() as http:
        history = (await http.get(f"{server.url}/topics/{channel}/history")).json()["events"]
    assert [event["data"] for event in history] == ['{"}']
