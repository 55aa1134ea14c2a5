"""Publication tags and server-side tag filters: the filter language (every comparison, bad
filters refused with 107), tags kept by every backend, the official Python SDK's ``Filter``
helpers in both formats against a real server (live and recovered publications filtered, on one
process and across processes through Redis), and a filter evaluated once per publication,
however many subscribers share it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from centrifuge import Filter
from conftest import MakeHub, StartServer
from hypothesis import given
from hypothesis import strategies as st
from redisproc import RedisCluster, RedisProcess
from serverproc import ServerProcess
from sse_servers import UvicornThread
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from test_centrifugo_sdk import Recorder, sdk_client
from wsclient import raw_client, ws_url

from sluiceway.centrifugo import CentrifugoEndpoint, ReplyError, filters
from sluiceway.hub import Hub, HubConfig

TAGS = {"ticker": "AAPL", "price": "187.5", "source": "NASDAQ"}


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        (Filter.eq("ticker", "AAPL"), True),
        (Filter.eq("ticker", "MSFT"), False),
        (Filter.neq("ticker", "MSFT"), True),
        (Filter.neq("missing", "x"), True),
        (Filter.is_in("source", ["NYSE", "NASDAQ"]), True),
        (Filter.is_in("missing", ["x"]), False),
        (Filter.not_in("source", ["NYSE"]), True),
        (Filter.not_in("missing", ["x"]), True),
        (Filter.exists("price"), True),
        (Filter.not_exists("price"), False),
        (Filter.starts_with("ticker", "AA"), True),
        (Filter.ends_with("ticker", "PL"), True),
        (Filter.contains("source", "SDA"), True),
        (Filter.contains("missing", ""), False),
        (Filter.gt("price", "100"), True),
        (Filter.gte("price", "187.5"), True),
        (Filter.lt("price", "187.5"), False),
        (Filter.lte("price", "1e3"), True),
        (Filter.gt("ticker", "1"), False),  # not a number
        (Filter.all(Filter.eq("ticker", "AAPL"), Filter.gt("price", "200")), False),
        (Filter.any(Filter.eq("ticker", "MSFT"), Filter.gt("price", "100")), True),
        (Filter.negate(Filter.eq("ticker", "AAPL")), False),
    ],
)
def test_comparisons(node: Any, expected: bool) -> None:
    assert filters.parse(node.node).matches(TAGS) is expected


@pytest.mark.parametrize(
    "node",
    [
        {},
        {"key": "a", "cmp": "like", "val": "x"},
        {"op": "xor", "nodes": [{"key": "a", "cmp": "ex"}]},
        {"op": "not", "nodes": [{"key": "a", "cmp": "ex"}, {"key": "b", "cmp": "ex"}]},
        {"op": "and", "nodes": []},
        {"key": "a", "cmp": "in", "vals": "x"},
        {"key": "a", "cmp": "eq", "val": 5},
        {"op": "or", "nodes": [{"key": f"k{n}", "cmp": "ex"} for n in range(100)]},
    ],
)
def test_bad_filters_are_refused(node: Any) -> None:
    with pytest.raises(ReplyError) as refused:
        filters.parse(node)
    assert refused.value.code == 107


json_trees = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["op", "key", "cmp", "val", "vals", "nodes"]), inner)
    ),
    max_leaves=12,
)


@given(json_trees)
def test_any_value_parses_or_is_refused(node: Any) -> None:
    try:
        parsed = filters.parse(node)
    except ReplyError as refused:
        assert refused.code == 107
    else:
        assert isinstance(parsed.matches(TAGS), bool)


def test_one_filter_in_either_form_is_one_key() -> None:
    a = filters.parse({"op": "", "key": "k", "cmp": "eq", "val": "v", "vals": [], "nodes": []})
    b = filters.parse({"cmp": "eq", "val": "v", "key": "k"})
    assert a.key == b.key


async def test_every_backend_keeps_tags(make_hub: MakeHub) -> None:
    hub = await make_hub(HubConfig())
    topic = f"tags-{time.time_ns()}"
    subscription = await hub.subscribe([topic], from_start=True)
    await hub.publish(topic, {"p": 1}, tags={"ticker": "AAPL"})
    await hub.publish(topic, {"p": 2})
    async with asyncio.timeout(5):
        async for _ in subscription:
            if subscription.log.head >= 2:
                break
    log = subscription.log
    assert dict(log.tags_at(1)) == {"ticker": "AAPL"} and dict(log.tags_at(2)) == {}
    subscription.release()
    if hub.backend is not None:  # another process's hub loads the topic from the store
        other = await make_hub(HubConfig())
        late = await other.subscribe([topic], from_start=True)
        assert dict(late.log.tags_at(1)) == {"ticker": "AAPL"}
        late.release()
    with pytest.raises(ValueError):
        await hub.publish(topic, "x", tags={"n": 1})  # type: ignore[dict-item]


async def publish(http: httpx.AsyncClient, channel: str, n: int, ticker: str) -> None:
    body = {"data": {"n": n}, "tags": {"ticker": ticker, "n": str(n)}}
    response = await http.post(f"/topics/{channel}", json=body)
    assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    process = ServerProcess(env={"SLUICEWAY_HISTORY_SIZE": "100"}).start()
    yield process
    process.stop()


@pytest.mark.parametrize("use_protobuf", [False, True], ids=["json", "protobuf"])
async def test_the_sdk_gets_only_what_matches(server: ServerProcess, use_protobuf: bool) -> None:
    channel = f"prices.{time.time_ns()}"
    seen = Recorder()
    wanted = Filter.all(Filter.eq("ticker", "AAPL"), Filter.gte("n", "2"))
    async with (
        sdk_client(ws_url(server.url), use_protobuf=use_protobuf) as client,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        subscription = client.new_subscription(channel, seen, tags_filter=wanted)
        await client.connect()
        await subscription.subscribe()
        await subscription.ready(5)
        for n, ticker in enumerate(["AAPL", "MSFT", "AAPL", "AAPL", "MSFT"]):
            await publish(http, channel, n, ticker)
        await seen.until(lambda: len(seen.offsets) == 2)
        await client.disconnect()  # what it missed is recovered through the filter too
        for n, ticker in enumerate(["MSFT", "AAPL"], start=5):
            await publish(http, channel, n, ticker)
        await client.connect()
        await seen.until(lambda: len(seen.offsets) == 3)
        await asyncio.sleep(0.3)  # room for what must not come
        bad = await http.post(f"/topics/{channel}", json={"data": 1, "tags": {"a": 1}})
    assert seen.offsets == [3, 4, 7]  # AAPL with n >= 2
    assert seen.subscribed[1].recovered is True
    assert bad.status_code == 422 and bad.json()["error"] == "invalid_tags"


async def test_tags_and_filters_cross_processes(
    start_server: StartServer, shared_redis: RedisProcess | RedisCluster
) -> None:
    first = start_server("--backend", shared_redis.url)
    second = start_server("--backend", shared_redis.url)
    channel = f"prices.{time.time_ns()}"
    async with (
        raw_client(second.url) as client,
        httpx.AsyncClient(base_url=first.url) as http,
    ):
        await client.connect()
        await client.subscribe(channel, tf=Filter.eq("ticker", "AAPL").node)
        for n, ticker in enumerate(["MSFT", "AAPL", "MSFT", "AAPL"]):
            await publish(http, channel, n, ticker)
        pubs = await client.publications(channel, 2)
        await asyncio.sleep(0.3)
        pubs += [p for p in client.pushes[2:] if "pub" in p]
    assert [p["data"] for p in pubs] == [{"n": 1}, {"n": 3}]
    assert pubs[0]["tags"] == {"ticker": "AAPL", "n": "1"}


async def test_a_filter_is_evaluated_once_per_publication() -> None:
    """100 subscribers, 10 distinct filters: 10 evaluations per publication, not 100."""
    endpoint = CentrifugoEndpoint(Hub())
    app = Starlette(routes=[WebSocketRoute("/connection/websocket", endpoint)])
    events = 5
    with UvicornThread(app) as server:
        async with contextlib.AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(raw_client(server.url)) for _ in range(100)]
            for n, client in enumerate(clients):
                await client.connect()
                await client.subscribe(
                    "ticks", tf={"key": "symbol", "cmp": "eq", "val": f"s{n % 10}"}
                )
            before = endpoint.stats.filter_evaluations
            for n in range(events):
                publishing = endpoint.hub.publish("ticks", {"n": n}, tags={"symbol": f"s{n}"})
                asyncio.run_coroutine_threadsafe(publishing, server.loop).result(5)
            for n, client in enumerate(clients):
                if n % 10 < events:  # the subscribers of s0..s4 get one publication each
                    (pub,) = await client.publications("ticks", 1)
                    assert pub["data"] == {"n": n % 10}
            evaluations = endpoint.stats.filter_evaluations - before
    assert evaluations == 10 * events
