"""Join and leave pushes with the official Python SDK, unchanged, against real servers: a
subscriber that asks (``join_leave=True``) hears the others join, leave and disconnect, in
either format; across processes through one Redis and a Redis Cluster; nothing is announced on
channels outside ``ws_join_leave_channels``, and a subscriber that did not ask hears nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from centrifuge import JoinContext, LeaveContext
from conftest import StartServer
from redisproc import RedisCluster, RedisProcess
from serverproc import ServerProcess
from test_centrifugo_sdk import Recorder, sdk_client
from wsclient import ws_url

SECRET = "join-leave-test-secret-long-enough-for-hs256!"


class Watcher(Recorder):
    """A subscription's publications, joins and leaves."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, str, str]] = []  # (kind, user, client)

    async def on_join(self, ctx: JoinContext) -> None:
        self.events.append(("join", ctx.info.user, ctx.info.client))
        self.changed.set()

    async def on_leave(self, ctx: LeaveContext) -> None:
        self.events.append(("leave", ctx.info.user, ctx.info.client))
        self.changed.set()


def token(user: str) -> str:
    return jwt.encode({"sub": user, "exp": int(time.time()) + 600}, SECRET, "HS256")


async def watch(
    watcher_url: str,
    other_url: str,
    channel: str,
    *,
    use_protobuf: bool = False,
    join_leave: bool = True,
    expect: int = 5,
) -> tuple[Watcher, list[str]]:
    """``ann`` watches ``channel``; ``bob`` subscribes, unsubscribes, subscribes again and
    disconnects.  What ann heard, and bob's client ids."""
    heard = Watcher()
    ids: list[str] = []
    async with sdk_client(watcher_url, token=token("ann"), use_protobuf=use_protobuf) as ann:
        subscription = ann.new_subscription(channel, heard, join_leave=join_leave)
        await ann.connect()
        await subscription.subscribe()
        await subscription.ready(5)
        bob = await _bob(other_url, channel)
        try:
            bob_sub = bob.get_subscription(channel)
            assert bob_sub is not None
            ids.append(await _id_of(subscription, "bob"))
            await bob_sub.unsubscribe()
            await bob_sub.subscribe()
            await bob_sub.ready(5)
        finally:
            await bob.disconnect()
        if expect:
            await heard.until(lambda: len(heard.events) >= expect, timeout=10)
        else:
            await asyncio.sleep(1.0)  # room for pushes that must not come
        await asyncio.sleep(0.2)  # room for extras
    return heard, ids


async def _bob(url: str, channel: str) -> Any:
    from centrifuge import Client

    bob = Client(url, proxy=None, token=token("bob"))
    subscription = bob.new_subscription(channel, Recorder())
    await bob.connect()
    await subscription.subscribe()
    await subscription.ready(5)
    return bob


async def _id_of(subscription: Any, user: str) -> str:
    """``user``'s client id in the channel's presence (recorded just after its subscribe
    reply, on whichever process it is)."""
    async with asyncio.timeout(5):
        while True:
            presence = await subscription.presence()
            found = [client for client, info in presence.clients.items() if info.user == user]
            if found:
                return str(found[0])
            await asyncio.sleep(0.05)


def expected(ann_events: list[tuple[str, str, str]], bob: str) -> None:
    """ann's own join, then bob: join, leave (unsubscribe), join, leave (disconnect)."""
    own, *rest = ann_events
    assert own[:2] == ("join", "ann")
    assert [(kind, user) for kind, user, _ in rest] == [
        ("join", "bob"),
        ("leave", "bob"),
        ("join", "bob"),
        ("leave", "bob"),
    ]
    assert rest[0][2] == bob  # the client id presence shows


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    """Joins and leaves announced on ``room.*`` only."""
    process = ServerProcess(
        env={
            "SLUICEWAY_TOKEN_HMAC_SECRET": SECRET,
            "SLUICEWAY_WS_JOIN_LEAVE_CHANNELS": '["room.*"]',
        }
    ).start()
    yield process
    process.stop()


@pytest.mark.parametrize("use_protobuf", [False, True], ids=["json", "protobuf"])
async def test_joins_and_leaves_on_one_process(server: ServerProcess, use_protobuf: bool) -> None:
    url = ws_url(server.url)
    heard, (bob,) = await watch(
        url, url, f"room.{time.time_ns()}", use_protobuf=use_protobuf, join_leave=True
    )
    expected(heard.events, bob)


async def test_nothing_is_heard_without_asking_or_outside_the_channels(
    server: ServerProcess,
) -> None:
    url = ws_url(server.url)
    quiet, _ = await watch(url, url, f"room.{time.time_ns()}", join_leave=False, expect=0)
    assert quiet.events == []
    outside, _ = await watch(url, url, f"lobby.{time.time_ns()}", expect=0)
    assert outside.events == []


@pytest.mark.slow
async def test_joins_and_leaves_cross_processes(
    start_server: StartServer, shared_redis: RedisProcess | RedisCluster
) -> None:
    env = {"SLUICEWAY_TOKEN_HMAC_SECRET": SECRET}
    first = start_server("--backend", shared_redis.url, env=env)
    second = start_server("--backend", shared_redis.url, env=env)
    heard, (bob,) = await watch(
        ws_url(first.url),
        ws_url(second.url),
        f"room.{time.time_ns()}",
        use_protobuf=False,
        join_leave=True,
    )
    expected(heard.events, bob)
