"""The official Python SDK (PyPI ``centrifuge-python``), unchanged, against a real server:
both directions, recovery through random forced disconnects, recovery that says it failed,
token refresh; then the library API (hooks) and the Redis backend across processes."""

# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import jwt
import pytest
from centrifuge import (
    Client,
    ClientEventHandler,
    ConnectedContext,
    PublicationContext,
    SubscribedContext,
    SubscriptionEventHandler,
)
from centrifuge.exceptions import ReplyError as SDKReplyError
from conftest import StartServer
from redisproc import RedisCluster, RedisProcess
from serverproc import ServerProcess
from sse_servers import ChaosProxy, UvicornThread
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from wsclient import SilentClient, raw_client, ws_url

from sluiceway.centrifugo import CentrifugoEndpoint, CentrifugoOptions, Hooks, ReplyError
from sluiceway.centrifugo import Client as WSClient
from sluiceway.client import EventSource
from sluiceway.hub import Hub, HubConfig

SECRET = "sdk-test-secret-long-enough-for-hs256!"


class Recorder(SubscriptionEventHandler):
    """Collects what a subscription sees."""

    def __init__(self) -> None:
        self.data: list[Any] = []
        self.offsets: list[int] = []
        self.subscribed: list[SubscribedContext] = []
        self.changed = asyncio.Event()

    async def on_publication(self, ctx: PublicationContext) -> None:
        self.data.append(ctx.pub.data)
        self.offsets.append(ctx.pub.offset)
        self.changed.set()

    async def on_subscribed(self, ctx: SubscribedContext) -> None:
        self.subscribed.append(ctx)
        self.changed.set()

    async def until(self, condition: Any, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                self.changed.clear()
                await self.changed.wait()


class Connections(ClientEventHandler):
    def __init__(self) -> None:
        self.connected = 0

    async def on_connected(self, ctx: ConnectedContext) -> None:
        self.connected += 1


@asynccontextmanager
async def sdk_client(url: str, **options: Any) -> AsyncIterator[Client]:
    options.setdefault("min_reconnect_delay", 0.02)
    options.setdefault("max_reconnect_delay", 0.2)
    client = Client(url, proxy=None, **options)
    try:
        yield client
    finally:
        await client.disconnect()


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    process = ServerProcess(
        env={
            "SLUICEWAY_WS_PUBLISH_CHANNELS": '["chat:*"]',
            "SLUICEWAY_TOKEN_HMAC_SECRET": SECRET,
            "SLUICEWAY_TOKEN_LEEWAY": "0",
            "SLUICEWAY_HISTORY_SIZE": "1000",
        }
    ).start()
    yield process
    process.stop()


async def post(http: httpx.AsyncClient, channel: str, data: Any) -> None:
    response = await http.post(f"/topics/{channel}", json={"data": data})
    assert response.status_code == 200, response.text


async def test_publications_flow_both_ways(server: ServerProcess) -> None:
    channel = f"chat:{time.time_ns()}"
    seen = Recorder()
    sse_events: list[Any] = []

    async def read_sse() -> None:
        async with EventSource(f"{server.url}/topics/{channel}") as source:
            async for event in source:
                sse_events.append(json.loads(event.data))
                if len(sse_events) == 4:
                    return

    async with (
        sdk_client(ws_url(server.url)) as client,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        subscription = client.new_subscription(channel, seen)
        await client.connect()
        await subscription.subscribe()
        await subscription.ready(5)
        sse = asyncio.create_task(read_sse())
        await asyncio.sleep(0.2)  # the SSE stream is open before publishing
        await post(http, channel, {"from": "http", "n": 0})
        await subscription.publish({"from": "sdk", "n": 1})
        await post(http, channel, {"from": "http", "n": 2})
        await subscription.publish("a string")
        await seen.until(lambda: len(seen.data) == 4)
        await asyncio.wait_for(sse, 10)
    expected = [{"from": "http", "n": 0}, {"from": "sdk", "n": 1}, {"from": "http", "n": 2}]
    assert seen.data == [*expected, "a string"]
    assert sse_events == [*expected, "a string"]
    assert seen.offsets == [1, 2, 3, 4]


async def test_publishing_where_not_allowed_raises_the_sdk_error(server: ServerProcess) -> None:
    async with sdk_client(ws_url(server.url)) as client:
        subscription = client.new_subscription(f"news.{time.time_ns()}", Recorder())
        await client.connect()
        await subscription.subscribe()
        await subscription.ready(5)
        with pytest.raises(SDKReplyError) as refused:
            await subscription.publish({"x": 1})
        assert refused.value.code == 103


@pytest.mark.slow
async def test_a_thousand_publications_through_random_disconnects(server: ServerProcess) -> None:
    """Every connection is cut (FIN or RST) after a random number of bytes, mid-frame too; the
    SDK reconnects and recovers: every publication arrives once, in order. (Publishing is paced
    so that what a client misses while it reconnects fits in the next connection's budget;
    otherwise every recovery reply would be cut too, and nothing could ever arrive.)"""
    channel = f"chaos.{time.time_ns()}"
    total = 1000
    seen = Recorder()
    connections = Connections()
    with ChaosProxy(server.port, seed=11, min_bytes=2500, max_bytes=6000) as proxy:
        url = f"ws://127.0.0.1:{proxy.port}/connection/websocket"
        async with (
            sdk_client(url, events=connections) as client,
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
    assert seen.data == list(range(total))
    assert seen.offsets == list(range(1, total + 1))
    assert cuts >= 10 and connections.connected >= 10
    recoveries = [ctx for ctx in seen.subscribed if ctx.was_recovering]
    assert recoveries and all(ctx.recovered for ctx in recoveries)


@pytest.mark.parametrize("use_protobuf", [False, True], ids=["json", "protobuf"])
async def test_recovery_that_fails_says_so(start_server: StartServer, use_protobuf: bool) -> None:
    server = start_server(env={"SLUICEWAY_HISTORY_SIZE": "5"})
    channel = f"gone.{time.time_ns()}"
    seen = Recorder()
    # In Protobuf, data is the published text's bytes (HTTP publishes a string as its text).
    before, after = (b"before", b"after") if use_protobuf else ("before", "after")
    async with (
        sdk_client(ws_url(server.url), use_protobuf=use_protobuf) as client,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        subscription = client.new_subscription(channel, seen)
        await client.connect()
        await subscription.subscribe()
        await post(http, channel, "before")
        await seen.until(lambda: len(seen.data) == 1)
        await client.disconnect()
        for n in range(10):  # more than history holds
            await post(http, channel, n)
        await client.connect()
        await seen.until(lambda: len(seen.subscribed) == 2)
        resubscribed = seen.subscribed[1]
        assert resubscribed.was_recovering is True and resubscribed.recovered is False
        assert seen.data == [before]  # no partial replay pretending to be whole
        await post(http, channel, "after")
        await seen.until(lambda: len(seen.data) == 2)
    assert seen.data == [before, after]


async def test_tokens_are_fetched_and_refreshed(server: ServerProcess) -> None:
    issued: list[float] = []

    async def get_token() -> str:
        issued.append(time.time())
        return jwt.encode({"sub": "alice", "exp": int(time.time()) + 3}, SECRET, "HS256")

    expired = jwt.encode({"sub": "alice", "exp": int(time.time()) - 10}, SECRET, "HS256")
    connections = Connections()
    async with sdk_client(
        ws_url(server.url), token=expired, get_token=get_token, events=connections
    ) as client:
        subscription = client.new_subscription(f"tokens.{time.time_ns()}", Recorder())
        await client.connect()
        await client.ready(5)  # 109 for the expired token: the SDK fetched a fresh one
        await subscription.subscribe()
        await subscription.ready(5)
        await asyncio.sleep(5)  # past the first token's expiry: the SDK refreshed in time
        await subscription.history(limit=0)  # still connected and answering
        assert connections.connected == 1  # the same connection throughout
        assert len(issued) >= 2


# -- the library API: hooks in an application's own app -----------------------------------


async def test_hooks_authorize_validate_and_rewrite() -> None:
    seen: dict[str, list[Any]] = {"connect": [], "disconnect": []}
    disconnected = threading.Event()  # the hooks run in the server's thread

    async def on_connect(client: WSClient, data: Any) -> Any:
        if client.headers.get("x-banned"):
            raise ReplyError(4403, "banned")
        seen["connect"].append(client.id)
        return {"welcome": True}

    async def on_subscribe(client: WSClient, channel: str, data: Any) -> None:
        if channel.startswith("staff."):
            raise ReplyError(103, "permission denied")

    async def on_publish(client: WSClient, channel: str, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("text"), str):
            raise ReplyError(4000, "a chat message is {'text': str}")
        return {"text": data["text"].replace("<", "&lt;")[:200], "by": client.id}

    async def on_disconnect(client: WSClient, code: int, reason: str) -> None:
        seen["disconnect"].append((client.id, code))
        disconnected.set()

    hooks = Hooks(on_connect, on_subscribe, on_publish, on_disconnect)
    endpoint = CentrifugoEndpoint(Hub(), CentrifugoOptions(hooks=hooks))
    app = Starlette(routes=[WebSocketRoute("/connection/websocket", endpoint)])
    with UvicornThread(app) as server:
        async with raw_client(server.url, additional_headers={"x-banned": "1"}) as banned:
            reply = await banned.request("connect")
            assert reply["error"] == {"code": 4403, "message": "banned"}
        async with raw_client(server.url) as client:
            result = await client.connect()
            assert result["data"] == {"welcome": True}
            refused = await client.request("subscribe", {"channel": "staff.room"})
            assert refused["error"]["code"] == 103
            await client.subscribe("room")
            invalid = await client.request("publish", {"channel": "room", "data": 5})
            assert invalid["error"]["code"] == 4000
            await client.request("publish", {"channel": "room", "data": {"text": "<b>hi"}})
            (pub,) = await client.publications("room", 1)
            assert pub["data"] == {"text": "&lt;b>hi", "by": result["client"]}
        assert await asyncio.to_thread(disconnected.wait, 5)
    assert seen["connect"] == [result["client"]]
    assert seen["disconnect"] == [(result["client"], 3000)]


async def test_slow_client_under_plain_asgi() -> None:
    """In an app under plain uvicorn (frames go through ASGI ``send``, not the direct writer),
    a client that stops reading is cut off with 3008 just the same."""
    hub = Hub(HubConfig(buffer_bytes=256 * 1024, write_timeout=2))
    endpoint = CentrifugoEndpoint(hub)
    app = Starlette(routes=[WebSocketRoute("/connection/websocket", endpoint)])
    count = 300
    with UvicornThread(app) as server:
        slow = SilentClient(server.port)
        slow.send(json.dumps({"id": 1, "connect": {}}))
        slow.send(json.dumps({"id": 2, "subscribe": {"channel": "big"}}))
        async with raw_client(server.url) as fast:
            await fast.connect()
            await fast.subscribe("big")
            reader = asyncio.create_task(fast.publications("big", count, timeout=60))
            await asyncio.sleep(0.2)  # the slow client has subscribed
            for n in range(count):
                await asyncio.wrap_future(
                    asyncio.run_coroutine_threadsafe(
                        hub.publish("big", f"{n}:{'x' * 32_000}"), server.loop
                    )
                )
            pubs = await reader
        assert [int(p["data"].split(":")[0]) for p in pubs] == list(range(count))
        assert endpoint.stats.disconnects[3008] == 1
        slow.close()


# -- many processes ----------------------------------------------------------------------


async def test_redis_carries_publications_and_presence_across_processes(
    start_server: StartServer, shared_redis: RedisProcess | RedisCluster
) -> None:
    env = {"SLUICEWAY_WS_PUBLISH_CHANNELS": '["chat:*"]', "SLUICEWAY_WS_PRESENCE_TTL": "2"}
    first = start_server("--backend", shared_redis.url, env=env)
    second = start_server("--backend", shared_redis.url, env=env)
    channel = f"chat:{time.time_ns()}"
    async with raw_client(first.url) as on_first, raw_client(second.url) as on_second:
        await on_first.connect()
        await on_second.connect()
        first_sub = await on_first.subscribe(channel)
        second_sub = await on_second.subscribe(channel)
        assert first_sub["epoch"] == second_sub["epoch"]
        async with httpx.AsyncClient(base_url=second.url) as http:
            await post(http, channel, {"via": "http on second"})
        await on_first.request("publish", {"channel": channel, "data": {"via": "ws on first"}})
        for client in (on_first, on_second):
            pubs = await client.publications(channel, 2)
            assert pubs == [
                {"data": {"via": "http on second"}, "offset": 1},
                {"data": {"via": "ws on first"}, "offset": 2},
            ]
        presence = (await on_first.request("presence", {"channel": channel}))["presence"]
        assert len(presence["presence"]) == 2
        # The second process dies without a goodbye: its entry expires with its deadline.
        second.signal(signal.SIGKILL)
        second.wait(5)
        async with asyncio.timeout(10):
            while True:
                reply = await on_first.request("presence", {"channel": channel})
                if len(reply["presence"]["presence"]) == 1:
                    break
                await asyncio.sleep(0.2)
