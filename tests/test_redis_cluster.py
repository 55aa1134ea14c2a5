"""Many processes on a Redis Cluster: sharded pub/sub, resume across processes, a master
failed over mid-stream, and the URLs that are refused.

A private cluster (three masters, three replicas, ``cluster-node-timeout`` 1 s) per module,
so failing its masters over does not disturb the session's shared one.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import orjson
import pytest
import redis
from conftest import StartServer
from redisproc import REDIS_SERVER, RedisCluster, RedisProcess
from serverproc import HOST, ServerProcess, wait_for

from sluiceway.client import EventSource, Reset
from sluiceway.control import RESET_EVENT
from sluiceway.hub import CloseReason, Hub, HubConfig, TopicFinished
from sluiceway.hub.redis_backend import RedisBackend
from sluiceway.ids import Position
from sluiceway.sse import Event, Parser

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed: the Redis Cluster backend is NOT tested")
    started = RedisCluster().start()
    yield started
    started.close()


def pair(start_server: StartServer, cluster: RedisCluster) -> tuple[ServerProcess, ServerProcess]:
    args = ("--backend", cluster.url, "--retry-ms", "50")
    return start_server(*args), start_server(*args)


def channel(topic: str) -> str:
    return f"sluiceway:live:{{{topic}}}"


def shard_channels(cluster: RedisCluster) -> dict[int, set[str]]:
    """The shard channels each live master has subscribers on."""
    found: dict[int, set[str]] = {}
    for node in cluster.alive():
        client = node.client()
        if client.execute_command("ROLE")[0] in (b"master", "master"):
            names = client.execute_command("PUBSUB", "SHARDCHANNELS")
            found[node.port] = {n.decode() if isinstance(n, bytes) else n for n in names}
    return found


def cluster_counter(cluster: RedisCluster, name: str) -> int:
    return sum(int(cluster.info(node).get(name, 0)) for node in cluster.alive())


async def publish(http: httpx.AsyncClient, topic: str, data: str) -> str:
    answer = await http.post(f"/topics/{topic}", json={"data": data})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["id"])


async def test_publish_on_one_process_read_and_resume_on_another(
    start_server: StartServer, cluster: RedisCluster
) -> None:
    a, b = pair(start_server, cluster)
    topics = [f"resume-{n}" for n in range(6)]  # spread over the three masters
    assert len({cluster.master_for(channel(t)).port for t in topics}) > 1
    async with httpx.AsyncClient(base_url=a.url, timeout=10) as on_a:
        firsts = {t: await publish(on_a, t, f"{t}:0") for t in topics}
        for topic in topics:
            source = EventSource(f"{b.url}/topics/{topic}", last_event_id=firsts[topic])
            async with source:
                events = source.__aiter__()
                later = await publish(on_a, topic, f"{topic}:1")
                event = await asyncio.wait_for(events.__anext__(), 5)
                assert (event.data, event.id) == (f"{topic}:1", later)  # same ids everywhere
            history = await on_a.get(
                f"{b.url}/topics/{topic}/history", params={"after": firsts[topic]}
            )
            resumed = history.json()["events"]
            assert [e["data"] for e in resumed] == [f"{topic}:1"]
        assert (await on_a.get(f"{b.url}/healthz")).json()["backend"] == "redis"


async def test_a_process_subscribes_only_to_the_shards_its_clients_follow(
    start_server: StartServer, cluster: RedisCluster
) -> None:
    a, b = pair(start_server, cluster)
    followed, other = "sharded-followed", "sharded-other"
    broadcast_before = cluster_counter(cluster, "cluster_stats_messages_publish_received")
    async with httpx.AsyncClient(base_url=a.url, timeout=10) as on_a:
        source = EventSource(f"{b.url}/topics/{followed}")
        async with source:
            first = asyncio.ensure_future(source.__aiter__().__anext__())  # connects
            await wait_for(
                lambda: any(channel(followed) in c for c in shard_channels(cluster).values()),
                5,
                "b subscribes to the followed topic's shard channel",
            )
            for n in range(20):
                await publish(on_a, other, str(n))
            await publish(on_a, followed, "one")
            assert (await asyncio.wait_for(first, 5)).data == "one"
            subscribed = shard_channels(cluster)
    owner = cluster.master_for(channel(followed)).port
    # Only on the owner of the followed topic's slot, and nobody follows the other topic.
    assert channel(followed) in subscribed[owner]
    assert all(channel(followed) not in c for port, c in subscribed.items() if port != owner)
    assert all(channel(other) not in c for c in subscribed.values())
    # SPUBLISH: no publish was broadcast over the cluster bus to every node.
    after = cluster_counter(cluster, "cluster_stats_messages_publish_received")
    assert after == broadcast_before


async def test_a_master_failed_over_mid_stream_loses_and_repeats_nothing(
    start_server: StartServer, cluster: RedisCluster
) -> None:
    a, b = pair(start_server, cluster)
    topic = "failover-feed"
    total = 300
    async with httpx.AsyncClient(base_url=a.url, timeout=10) as on_a:
        start = await publish(on_a, topic, "start")
        servers = (a, b, b)
        resets: list[list[Reset]] = [[] for _ in servers]
        received: list[list[str]] = [[] for _ in servers]
        readers = [
            EventSource(
                f"{server.url}/topics/{topic}",
                last_event_id=start,
                retry_delay=0.05,
                max_backoff=0.3,
                on_reset=found.append,
            )
            for server, found in zip(servers, resets, strict=True)
        ]
        published: list[str] = []
        retried = 0
        faults: list[asyncio.Task[None]] = []
        victims: list[int] = []

        async def publisher() -> None:
            nonlocal retried
            for n in range(total):
                deadline = time.monotonic() + 30
                while True:  # 503 while the slot has no master: try again
                    answer = await on_a.post(f"/topics/{topic}", json={"data": str(n)})
                    if answer.status_code == 200:
                        break
                    assert answer.status_code == 503, answer.text
                    assert time.monotonic() < deadline, "publishing never came back"
                    retried += 1
                    await asyncio.sleep(0.05)
                published.append(str(n))
                if n == 100:  # publishing goes on meanwhile
                    faults.append(asyncio.create_task(fail_over()))
                await asyncio.sleep(0.005)

        async def fail_over() -> None:
            victim = cluster.master_for(channel(topic))
            victims.append(victim.port)
            await asyncio.to_thread(cluster.fail_master, victim)
            await asyncio.to_thread(cluster.restart, victim)  # back, as a replica

        async def read(index: int) -> None:
            async with readers[index] as source:
                async for event in source:
                    received[index].append(event.data or "")
                    if event.data == str(total - 1):
                        return

        async with asyncio.timeout(90):
            await asyncio.gather(publisher(), *(read(i) for i in range(len(readers))))
            await asyncio.gather(*faults)
    # The fault was real: the topic's slot has another master now. (Publishes made during
    # the failover wait in the cluster client, or fail with 503 and are retried.)
    assert cluster.master_for(channel(topic)).port != victims[0]
    for got, found in zip(received, resets, strict=True):
        if found:  # the failover lost writes: said so explicitly, then continued in order
            numbers = [int(d) for d in got]
            assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
        else:
            assert got == [str(n) for n in range(total)]  # exactly once, in order
    # Every process re-subscribed on the promoted master by itself.
    owner = cluster.master_for(channel(topic)).port
    await wait_for(
        lambda: channel(topic) in shard_channels(cluster).get(owner, set()),
        10,
        "re-subscribed on the new master",
    )
    async with httpx.AsyncClient(timeout=10) as http:
        for server in (a, b):
            assert (await http.get(f"{server.url}/healthz")).status_code == 200


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("redis+cluster://127.0.0.1:notaport", "not host:port"),
        ("redis+cluster://127.0.0.1:70000", "not host:port"),
        ("redis+cluster://", "not host:port"),
    ],
)
def test_a_bad_cluster_url_is_refused_with_a_clear_message(url: str, said: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sluiceway.cli", "serve", "--port", "0", "--backend", url],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0
    assert said in done.stderr and "Traceback" not in done.stderr


def test_a_cluster_node_given_as_one_redis_is_refused_with_the_url_to_use(
    cluster: RedisCluster,
) -> None:
    node = cluster.nodes[0]
    plain = f"redis://{HOST}:{node.port}/0"
    server = ServerProcess(args=("--backend", plain))
    with pytest.raises(Exception, match="redis\\+cluster://") as refused:
        server.start()
    assert "Traceback" not in str(refused.value)
    server.stop()


def test_an_unreachable_cluster_fails_fast() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sluiceway.cli",
            "serve",
            "--port",
            "0",
            "--backend",
            f"redis+cluster://{HOST}:1,{HOST}:2",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0
    assert "cannot reach Redis at redis+cluster://" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("noticed_by", ["continuity check", "a rewritten offset"])
async def test_a_store_that_lost_acknowledged_writes_gets_a_new_epoch_and_clients_a_reset(
    shared_redis: RedisProcess | RedisCluster, noticed_by: str
) -> None:
    """What a failover that lost writes looks like to a process (the promoted replica lacks
    the last events the old master acknowledged), made by hand: the head goes back."""
    await store_goes_back(shared_redis, noticed_by)


async def test_a_store_that_replaced_events_is_noticed_after_a_reconnect(
    redis_server: RedisProcess,
) -> None:
    """The same head, other events at the last offsets (a frozen master's acknowledged
    writes lost, their offsets given to others): found when the pub/sub connection comes back.
    (On one Redis: there the test can drop the subscriber's connection reliably.)"""
    await store_goes_back(redis_server, "the tail after a reconnect")


async def store_goes_back(shared_redis: RedisProcess | RedisCluster, noticed_by: str) -> None:
    topic = f"rollback-{noticed_by.replace(' ', '-')}"
    hub = Hub(HubConfig(), RedisBackend(shared_redis.url, history_size=100, history_ttl=60))
    await hub.start()
    try:
        ids = [await hub.publish(topic, str(n)) for n in range(5)]
        subscription = await hub.subscribe([topic], ids[0])
        parser = Parser()
        seen: list[Event] = []

        async def read_until(count: int) -> None:
            async with asyncio.timeout(10):
                while len(seen) < count:
                    seen.extend(parser.feed(await subscription.__anext__()))

        await read_until(4)
        lost_writes = redis_client(shared_redis)
        meta, log = f"sluiceway:{{{topic}}}:meta", f"sluiceway:{{{topic}}}:log"
        lost_writes.hset(meta, "seq", 3)  # the replica had only three of the five
        lost_writes.xdel(log, "4-0", "5-0")
        lost_writes.execute_command("XSETID", log, "3-0")
        if noticed_by == "a rewritten offset":
            await hub.publish(topic, "another 4")  # offset 4 again, other content
        elif noticed_by == "the tail after a reconnect":
            # Other events at 4 and 5 (the head is as the mirror has it); then the pub/sub
            # connections drop, as in a failover, and the mirror looks again.
            lost_writes.hset(meta, "seq", 5)
            for offset in (4, 5):
                lost_writes.xadd(log, {"e": "", "d": f"other {offset}", "t": 0}, id=f"{offset}-0")
            kill_pubsub_connections(shared_redis)
        # The stream ends (resumably) rather than go on as if nothing happened ...
        async with asyncio.timeout(10):
            async for _ in subscription:
                pass
        assert subscription.close_reason is CloseReason.RESYNC
        epoch = lost_writes.hget(meta, "epoch")
        assert epoch is not None and epoch.decode() != Position.parse(ids[0]).epoch
        # ... and a client resuming from what it had gets an explicit reset, never a gap.
        again = await hub.subscribe([topic], ids[-1])
        first = Parser().feed(await asyncio.wait_for(again.__anext__(), 5))[0]
        assert first.event == RESET_EVENT
        assert orjson.loads(first.data)["topics"][0]["reason"] == "unknown_epoch"
    finally:
        await hub.aclose(0.5)


def kill_pubsub_connections(server: RedisProcess | RedisCluster) -> None:
    nodes = server.alive() if isinstance(server, RedisCluster) else [server]
    for node in nodes:
        client = node.client()
        client.client_kill_filter(_type="pubsub")
        # Clients with only shard subscriptions (SSUBSCRIBE) are not of type pubsub in Redis 7.
        for found in client.client_list():
            if "ssub=0" not in found.get("flags", "") and int(found.get("ssub", 0)) > 0:
                client.client_kill_filter(_id=found["id"])


async def test_publishes_at_once_on_every_backend_all_land_in_order(
    shared_redis: RedisProcess | RedisCluster,
) -> None:
    """Many publishes in flight together (one batch): each answered, offsets contiguous,
    per topic in the order they were made."""
    hub = Hub(HubConfig(), RedisBackend(shared_redis.url, history_size=1000, history_ttl=60))
    await hub.start()
    topics = [f"at-once-{time.monotonic_ns()}-{n}" for n in range(5)]
    try:
        ids = await asyncio.gather(
            *(hub.publish(topic, str(n)) for n in range(40) for topic in topics)
        )
        for index, topic in enumerate(topics):
            mine = ids[index :: len(topics)]
            assert [Position.parse(i).offset for i in mine] == list(range(1, 41))
            page = await hub.history(topic, None, 100)
            assert [e.data for e in page.events] == [str(n) for n in range(40)]
    finally:
        await hub.aclose(0.5)


def redis_client(server: RedisProcess | RedisCluster) -> redis.Redis | redis.RedisCluster:
    if isinstance(server, RedisCluster):
        node = server.alive()[0]
        return redis.RedisCluster(host=HOST, port=node.port)
    return server.client()


async def test_a_topic_finished_in_one_process_is_finished_in_every_process(
    shared_redis: RedisProcess | RedisCluster,
) -> None:
    def new_hub() -> Hub:
        return Hub(HubConfig(), RedisBackend(shared_redis.url, history_size=100, history_ttl=60))

    a, b = new_hub(), new_hub()
    await a.start()
    await b.start()
    topic = f"finish-{time.monotonic_ns()}"
    try:
        first = await a.publish(topic, "one")
        live_on_b = await b.subscribe([topic], first)
        await a.publish(topic, "two")
        await a.finish(topic)
        async with asyncio.timeout(10):
            received = Parser().feed(b"".join([chunk async for chunk in live_on_b]))
        assert [e.data for e in received] == ["two"]
        assert live_on_b.close_reason is CloseReason.COMPLETE
        # A later subscriber on B replays and ends; B refuses to publish to it.
        late = await b.subscribe([topic], from_start=True)
        async with asyncio.timeout(10):
            replayed = Parser().feed(b"".join([chunk async for chunk in late]))
        assert [e.data for e in replayed if e.event == "message"] == ["one", "two"]
        with pytest.raises(TopicFinished):
            await b.publish(topic, "three")
    finally:
        await a.aclose(0.5)
        await b.aclose(0.5)
