"""Our own Redis connections (``sluiceway.hub.redis_wire``) against a real redis-server: replies
in order, error replies as redis-py's exceptions, credentials and the database from the URL,
notifications in order however many arrive in one read, and a lost or garbled connection
failing every waiter instead of hanging."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Iterator

import pytest
import redis as redis_py
from redis.exceptions import NoScriptError, ResponseError
from redisproc import HOST, REDIS_SERVER, RedisProcess

from sluiceway.hub import Hub, HubConfig
from sluiceway.hub.redis_backend import RedisBackend
from sluiceway.hub.redis_wire import (
    Address,
    CommandConnection,
    ConnectionLost,
    PubSubConnection,
    pack,
)


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisProcess]:
    """A private server: these tests change its users and flush its scripts."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed: the Redis connections are NOT tested")
    process = RedisProcess().start()
    yield process
    process.close()


def test_addresses_are_read_as_redis_py_reads_urls() -> None:
    address = Address.from_url("redis://ann:s3cret@10.0.0.5:7000/3")
    assert (address.host, address.port, address.db) == ("10.0.0.5", 7000, 3)
    assert (address.username, address.password, address.tls) == ("ann", "s3cret", None)
    unix = Address.from_url("unix:///run/redis.sock?password=pw")
    assert (unix.path, unix.password) == ("/run/redis.sock", "pw")
    tls = Address.from_url("rediss://h:6380/0?ssl_cert_reqs=none").tls
    assert tls is not None and tls.verify_mode == ssl.CERT_NONE
    node = address.node("10.0.0.6", 7001)  # a cluster's other node: same user, database 0
    assert (node.host, node.port, node.db, node.username) == ("10.0.0.6", 7001, 0, "ann")


async def test_a_batch_gets_its_replies_in_order_and_errors_as_redis_py_raises_them(
    redis: RedisProcess,
) -> None:
    connection = await CommandConnection.open(Address(HOST, redis.port))
    try:
        futures = connection.send(
            pack("SET", "wire:a", "1")
            + pack("INCRBY", "wire:a", 41)
            + pack("EVALSHA", "0" * 40, 0)
            + pack("LPUSH", "wire:a", "x")
            + pack("GET", "wire:a"),
            5,
        )
        results = await asyncio.gather(*futures, return_exceptions=True)
    finally:
        connection.close()
    assert results[:2] == [b"OK", 42]
    assert isinstance(results[2], NoScriptError)
    assert isinstance(results[3], ResponseError) and "WRONGTYPE" in str(results[3])
    assert results[4] == b"42"  # an error reply does not disturb the ones after it


async def test_credentials_and_the_database_come_from_the_url(redis: RedisProcess) -> None:
    admin = redis.client()
    admin.execute_command("ACL", "SETUSER", "wire-user", "on", ">pw1", "~*", "+@all", "&*")
    try:
        address = Address.from_url(f"redis://wire-user:pw1@{HOST}:{redis.port}/5")
        connection = await CommandConnection.open(address)
        try:
            (reply,) = connection.send(pack("SET", "wire:db", "five"), 1)
            assert await reply == b"OK"
        finally:
            connection.close()
        assert admin.get("wire:db") is None  # not in database 0
        with redis_py.Redis(host=HOST, port=redis.port, db=5) as five:
            assert five.get("wire:db") == b"five"

        wrong = Address.from_url(f"redis://wire-user:nope@{HOST}:{redis.port}/0")
        with pytest.raises(ConnectionLost, match="refused AUTH"):
            await CommandConnection.open(wrong)
    finally:
        admin.execute_command("ACL", "DELUSER", "wire-user")


async def test_notifications_arrive_in_order_however_many_come_in_one_read(
    redis: RedisProcess,
) -> None:
    received: list[tuple[str, str]] = []
    all_in = asyncio.Event()

    def on_message(channel: str, data: str) -> None:
        received.append((channel, data))
        if len(received) == 2000:
            all_in.set()

    connection = await PubSubConnection.open(Address(HOST, redis.port), on_message)
    try:
        await connection.subscribe(["wire:n1", "wire:n2"], sharded=False)
        publisher = redis.client()
        with publisher.pipeline(transaction=False) as pipe:  # one burst: many per read
            for n in range(2000):
                pipe.publish("wire:n1" if n % 2 else "wire:n2", f"{n} é")
            pipe.execute()
        await asyncio.wait_for(all_in.wait(), 10)
        assert [data for _, data in received] == [f"{n} é" for n in range(2000)]
        assert {channel for channel, _ in received} == {"wire:n1", "wire:n2"}

        heard = connection.heard
        await asyncio.sleep(0.01)
        connection.ping()  # answered by a pong, which only proves the server is there
        async with asyncio.timeout(5):
            while connection.heard == heard:  # noqa: ASYNC110 - a timestamp, no event to wait on
                await asyncio.sleep(0.01)

        publisher.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        async with asyncio.timeout(5):
            assert "connection" in await connection.lost
        with pytest.raises(ConnectionLost):
            connection.ping()
    finally:
        connection.close()


@contextlib.asynccontextmanager
async def garbling_server(answer: bytes) -> AsyncIterator[int]:
    """A server that answers anything with ``answer`` (not RESP)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.write(answer)
        await writer.drain()
        await reader.read()  # until the client goes

    server = await asyncio.start_server(handle, HOST, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def test_a_garbled_stream_fails_every_waiter_at_once() -> None:
    async with garbling_server(b"!not resp\r\n") as port:
        connection = await CommandConnection.open(Address(HOST, port))
        futures = connection.send(pack("GET", "a") + pack("GET", "b"), 2)
        async with asyncio.timeout(5):
            results = await asyncio.gather(*futures, return_exceptions=True)
            assert "protocol error" in await connection.lost
        assert all(isinstance(r, ConnectionLost) for r in results)

        pubsub = await PubSubConnection.open(Address(HOST, port), lambda c, d: None)
        async with asyncio.timeout(5):
            with pytest.raises(ConnectionLost, match="protocol error"):
                await pubsub.subscribe(["a"], sharded=False)


async def test_publishes_go_on_in_order_after_the_scripts_are_flushed(
    redis: RedisProcess,
) -> None:
    backend = RedisBackend(redis.url, history_size=100, history_ttl=60)
    hub = Hub(HubConfig(history_size=100), backend)
    await hub.start()
    try:
        await hub.publish("wire-flush", "0")
        redis.client().script_flush()  # NOSCRIPT from now on: redis-py's path loads them
        ids = await asyncio.gather(*(hub.publish("wire-flush", str(n)) for n in range(1, 50)))
        assert [int(i.rsplit("-", 1)[1]) for i in ids] == list(range(2, 51))
        page = await hub.history("wire-flush", limit=100)
        assert [e.data for e in page.events] == [str(n) for n in range(50)]
    finally:
        await hub.aclose(1.0)
