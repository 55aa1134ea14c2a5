"""Centrifugo's client protocol at ``/connection/websocket``, frame by frame, against a real
``sluiceway serve``: replies, error codes, close codes, limits, tokens, recovery and history."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from conftest import StartServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from serverproc import ServerProcess
from websockets.exceptions import ConnectionClosed
from wsclient import RawClient, SilentClient, raw_client

SECRET = "test-secret-that-is-long-enough-for-hs256"
HISTORY_SIZE = 50
SERVER_ENV = {
    "SLUICEWAY_WS_PUBLISH_CHANNELS": '["chat:*", "pub.*"]',
    "SLUICEWAY_TOKEN_HMAC_SECRET": SECRET,
    "SLUICEWAY_TOKEN_LEEWAY": "0",
    "SLUICEWAY_WS_MAX_FRAME_BYTES": "4096",
    "SLUICEWAY_WS_MAX_CHANNELS": "4",
    "SLUICEWAY_WS_COMMAND_RATE": "20",
    "SLUICEWAY_WS_COMMAND_BURST": "20",
    "SLUICEWAY_WS_PING_INTERVAL": "1",
    "SLUICEWAY_WS_PONG_TIMEOUT": "1",
    "SLUICEWAY_WS_CONNECT_TIMEOUT": "1",
    "SLUICEWAY_HISTORY_SIZE": str(HISTORY_SIZE),
}


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    process = ServerProcess(env=SERVER_ENV).start()
    yield process
    process.stop()


def token(secret: str = SECRET, algorithm: str = "HS256", **claims: Any) -> str:
    """A token; it expires in an hour unless ``exp`` says otherwise (the server refuses
    tokens that never expire)."""
    claims.setdefault("exp", int(time.time()) + 3600)
    return jwt.encode(claims, secret, algorithm=algorithm)


async def publish_http(server: ServerProcess, channel: str, data: Any, **extra: Any) -> str:
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.post(f"/topics/{channel}", json={"data": data, **extra})
        assert response.status_code == 200, response.text
        return str(response.json()["id"])


async def answer_pings(client: RawClient, seconds: float) -> None:
    """Read for ``seconds``, answering every ping as an SDK would."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            objects = await client.messages(timeout=left)
        except TimeoutError:
            return
        if {} in objects:
            await client.send_frame("{}")


async def closed_while_answering_pings(client: RawClient) -> int:
    """Behave as a live SDK until the server closes (within 8 s); its close code."""
    async with asyncio.timeout(8):
        while True:
            try:
                if {} in await client.messages():
                    await client.send_frame("{}")
            except ConnectionClosed as closed:
                assert closed.rcvd is not None
                return closed.rcvd.code


# -- connecting ------------------------------------------------------------------------------


async def test_connect_result(server: ServerProcess) -> None:
    async with raw_client(server.url) as client:
        result = await client.connect(name="test")
        assert result["ping"] == 1 and result["pong"] is True
        assert result["client"] and result["version"]
        assert "expires" not in result


async def test_a_command_before_connect_closes_with_3501(server: ServerProcess) -> None:
    async with raw_client(server.url) as client:
        await client.send_frame(json.dumps({"id": 1, "subscribe": {"channel": "x"}}))
        assert await client.closed() == (3501, "bad request")


async def test_no_connect_in_time_closes_as_stale(server: ServerProcess) -> None:
    async with raw_client(server.url) as client:
        assert await client.closed(timeout=5) == (3502, "stale")


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        "[1, 2]",
        '{"id": "one", "ping": {}}',
        '{"id": -1, "ping": {}}',
        '{"id": 2, "subscribe": "chat:x"}',
        '{"ping": {}}',  # a command that needs a reply but has no id
        '{"id": 3, "connect": {}}',  # connect twice
    ],
)
async def test_malformed_frames_close_with_3501(server: ServerProcess, frame: str) -> None:
    async with raw_client(server.url) as client:
        await client.connect()
        await client.send_frame(frame)
        assert await client.closed() == (3501, "bad request")


async def test_error_replies_keep_the_connection_open(server: ServerProcess, topic: str) -> None:
    async with raw_client(server.url) as client:
        await client.connect()

        async def error_of(method: str, params: dict[str, Any]) -> int:
            reply = await client.request(method, params)
            assert "error" in reply, reply
            return int(reply["error"]["code"])

        assert await error_of("frobnicate", {}) == 104
        assert await error_of("rpc", {"method": "x"}) == 104
        assert await error_of("subscribe", {}) == 107
        assert await error_of("subscribe", {"channel": 5}) == 107
        assert await error_of("subscribe", {"channel": "has space"}) == 102
        assert await error_of("subscribe", {"channel": "x" * 201}) == 102
        assert await error_of("subscribe", {"channel": "y", "offset": -1, "recover": True}) == 107
        await client.subscribe(topic)
        assert await error_of("subscribe", {"channel": topic}) == 105
        for index in range(3):
            await client.subscribe(f"{topic}.{index}")
        assert await error_of("subscribe", {"channel": f"{topic}.more"}) == 106  # max 4
        assert await error_of("publish", {"channel": topic, "data": 1}) == 103
        assert await error_of("publish", {"channel": "chat:x"}) == 107
        assert await error_of("history", {"channel": "chat:unsubscribed", "limit": 1}) == 103
        assert await error_of("presence", {"channel": "chat:unsubscribed"}) == 103
        assert await error_of("history", {"channel": topic, "limit": "ten"}) == 107
        assert "ping" in await client.request("ping")  # still open and answering


async def test_frames_over_the_limit_close_the_connection(server: ServerProcess) -> None:
    async with raw_client(server.url) as client:
        await client.connect()
        await client.send_frame(json.dumps({"id": 2, "ping": {}, "pad": "x" * 5000}))
        assert await client.closed() == (3501, "bad request: frame too large")
    async with raw_client(server.url, max_size=None) as client:
        await client.connect()
        # Far beyond: refused by the WebSocket layer before it is buffered whole.
        await client.send_frame("x" * 20_000)
        code, _ = await client.closed()
        assert code == 1009


async def test_command_flood_gets_111_then_3013(server: ServerProcess) -> None:
    async with raw_client(server.url) as client:
        await client.connect()
        burst = "\n".join(json.dumps({"id": 100 + i, "ping": {}}) for i in range(30))
        await client.send_frame(burst)
        replies: dict[int, dict[str, Any]] = {}
        async with asyncio.timeout(5):
            while len(replies) < 30:
                for message in await client.messages():
                    if message.get("id", 0) >= 100:
                        replies[message["id"]] = message
        refused = [m for m in replies.values() if m.get("error", {}).get("code") == 111]
        assert 5 <= len(refused) < 30  # the burst (20, minus connect) passes, the rest is refused
        assert all(m["error"]["temporary"] is True for m in refused)
        flood = "\n".join(json.dumps({"id": 200 + i, "ping": {}}) for i in range(60))
        await client.send_frame(flood)
        assert await client.closed() == (3013, "too many requests")


# -- ping / pong -----------------------------------------------------------------------------


async def test_no_pong_closes_with_3012(server: ServerProcess) -> None:
    async with raw_client(server.url) as client:
        await client.connect()
        assert await client.closed(timeout=6) == (3012, "no pong")
        assert client.pings >= 1


async def test_pongs_keep_the_connection(server: ServerProcess) -> None:
    async with raw_client(server.url) as client:
        await client.connect()
        await answer_pings(client, 3.5)
        assert client.pings >= 2
        assert "ping" in await client.request("ping")


# -- tokens ----------------------------------------------------------------------------------


async def test_connection_token_sets_the_user(server: ServerProcess, topic: str) -> None:
    async with raw_client(server.url) as client:
        await client.connect(token=token(sub="alice", info={"name": "Alice"}))
        await client.subscribe(topic)
        reply = await client.request("presence", {"channel": topic})
        (entry,) = reply["presence"]["presence"].values()
        assert entry["user"] == "alice" and entry["conn_info"] == {"name": "Alice"}
        stats = await client.request("presence_stats", {"channel": topic})
        assert stats["presence_stats"] == {"num_clients": 1, "num_users": 1}


async def test_expired_token_is_error_109(server: ServerProcess) -> None:
    async with raw_client(server.url) as client:
        reply = await client.request("connect", {"token": token(sub="a", exp=time.time() - 5)})
        assert reply["error"]["code"] == 109
        await client.connect(token=token(sub="a"))  # a fresh token: connected


@pytest.mark.parametrize(
    "bad_token",
    [
        token(secret="another-secret-that-is-long-enough-too", sub="a"),
        jwt.encode({"sub": "a"}, None, algorithm="none"),
        "not.a.token",
        token(sub=42),
    ],
    ids=["wrong-signature", "alg-none", "garbage", "non-string-sub"],
)
async def test_invalid_tokens_close_with_3500(server: ServerProcess, bad_token: str) -> None:
    async with raw_client(server.url) as client:
        await client.send_frame(json.dumps({"id": 1, "connect": {"token": bad_token}}))
        assert await client.closed() == (3500, "invalid token")


async def test_connection_expires_without_refresh(server: ServerProcess) -> None:
    async with raw_client(server.url) as client:
        result = await client.connect(token=token(sub="a", exp=int(time.time()) + 2))
        assert result["expires"] is True and 0 <= result["ttl"] <= 2
        assert await closed_while_answering_pings(client) == 3005


async def test_refresh_extends_the_connection(server: ServerProcess) -> None:
    async with raw_client(server.url) as client:
        await client.connect(token=token(sub="a", exp=int(time.time()) + 2))
        reply = await client.request("refresh", {"token": token(sub="a", exp=time.time() + 60)})
        assert reply["refresh"]["expires"] is True and reply["refresh"]["ttl"] >= 58
        await answer_pings(client, 3.5)
        assert "ping" in await client.request("ping")
        # A token for someone else closes the connection.
        await client.send_frame(json.dumps({"id": 99, "refresh": {"token": token(sub="mallory")}}))
        assert await client.closed() == (3500, "invalid token")


async def test_subscription_tokens_expire_unless_refreshed(server: ServerProcess) -> None:
    async with raw_client(server.url) as client:
        await client.connect(token=token(sub="alice"))
        soon = int(time.time()) + 2
        kept = await client.subscribe("$kept", token=token(sub="alice", channel="$kept", exp=soon))
        assert kept["expires"] is True and 0 <= kept["ttl"] <= 2
        await client.subscribe("$lapsing", token=token(sub="alice", channel="$lapsing", exp=soon))
        later = token(sub="alice", channel="$kept", exp=int(time.time()) + 60)
        refreshed = await client.request("sub_refresh", {"channel": "$kept", "token": later})
        assert refreshed["sub_refresh"]["expires"] is True and refreshed["sub_refresh"]["ttl"] > 50
        wrong = token(sub="alice", channel="$other", exp=int(time.time()) + 60)
        refused = await client.request("sub_refresh", {"channel": "$lapsing", "token": wrong})
        assert refused["error"]["code"] == 103
        # "$lapsing" was not refreshed.
        assert await closed_while_answering_pings(client) == 3006


async def test_server_side_subscriptions_from_the_token(server: ServerProcess, topic: str) -> None:
    connect_token = token(sub="alice", channels=[topic])
    async with raw_client(server.url) as client:
        result = await client.connect(token=connect_token)
        sub = result["subs"][topic]
        assert sub["recoverable"] is True and sub["offset"] == 0
        await publish_http(server, topic, "first")
        (pub,) = await client.publications(topic, 1)
        assert pub == {"data": "first", "offset": 1}
    await publish_http(server, topic, "missed")
    async with raw_client(server.url) as client:
        position = {"recover": True, "epoch": sub["epoch"], "offset": 1}
        result = await client.connect(token=connect_token, subs={topic: position})
        recovered = result["subs"][topic]
        assert recovered["recovered"] is True
        assert [p["data"] for p in recovered["publications"]] == ["missed"]


async def test_private_channels_need_a_subscription_token(server: ServerProcess) -> None:
    async with raw_client(server.url) as client:
        await client.connect(token=token(sub="alice"))
        refused = await client.request("subscribe", {"channel": "$room"})
        assert refused["error"]["code"] == 103
        other = token(sub="alice", channel="$other")
        refused = await client.request("subscribe", {"channel": "$room", "token": other})
        assert refused["error"]["code"] == 103
        someone_else = token(sub="bob", channel="$room")
        refused = await client.request("subscribe", {"channel": "$room", "token": someone_else})
        assert refused["error"]["code"] == 103
        result = await client.subscribe("$room", token=token(sub="alice", channel="$room"))
        assert result["recoverable"] is True


async def test_user_limited_channels(server: ServerProcess) -> None:
    async with raw_client(server.url) as carol:
        await carol.connect(token=token(sub="carol"))
        refused = await carol.request("subscribe", {"channel": "dm#alice,bob"})
        assert refused["error"]["code"] == 103
    async with raw_client(server.url) as bob:
        await bob.connect(token=token(sub="bob"))
        await bob.subscribe("dm#alice,bob")


async def test_anonymous_refused_and_rs256_accepted(start_server: StartServer) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    server = start_server(
        env={"SLUICEWAY_WS_ALLOW_ANONYMOUS": "false", "SLUICEWAY_TOKEN_PUBLIC_KEY": public_pem}
    )
    async with raw_client(server.url) as client:
        await client.send_frame(json.dumps({"id": 1, "connect": {}}))
        assert await client.closed() == (3500, "invalid token")
    async with raw_client(server.url) as client:
        claims = {"sub": "alice", "exp": int(time.time()) + 600}
        await client.connect(token=jwt.encode(claims, key, algorithm="RS256"))
    # Algorithm confusion: the public key used as an HMAC secret is refused.
    forged = jwt.encode({"sub": "alice"}, "x" * 32, algorithm="HS256")
    async with raw_client(server.url) as client:
        await client.send_frame(json.dumps({"id": 1, "connect": {"token": forged}}))
        assert await client.closed() == (3500, "invalid token")


# -- one set of channels ---------------------------------------------------------------------


async def test_http_publications_reach_websockets_with_the_same_positions(
    server: ServerProcess, topic: str
) -> None:
    async with raw_client(server.url) as client:
        await client.connect()
        result = await client.subscribe(topic)
        assert result["offset"] == 0 and result["positioned"] is True
        ids = [await publish_http(server, topic, {"n": n}) for n in range(3)]
        ids.append(await publish_http(server, topic, "plain text", event="note"))
        pubs = await client.publications(topic, 4)
    assert [f"{result['epoch']}-{pub['offset']}" for pub in pubs] == ids
    assert [pub["data"] for pub in pubs] == [{"n": 0}, {"n": 1}, {"n": 2}, "plain text"]
    assert pubs[3]["tags"] == {"event": "note"}


async def test_websocket_publications_reach_http_readers(server: ServerProcess) -> None:
    channel = f"chat:{time.time_ns()}"
    async with raw_client(server.url) as client:
        await client.connect()
        result = await client.subscribe(channel)
        for data in [{"text": "hi"}, "123", [1, 2]]:
            reply = await client.request("publish", {"channel": channel, "data": data})
            assert reply["publish"] == {}
        pubs = await client.publications(channel, 3)
    assert [pub["data"] for pub in pubs] == [{"text": "hi"}, "123", [1, 2]]
    async with httpx.AsyncClient(base_url=server.url) as http:
        history = (await http.get(f"/topics/{channel}/history")).json()
    assert [event["id"] for event in history["events"]] == [
        f"{result['epoch']}-{pub['offset']}" for pub in pubs
    ]
    assert [json.loads(event["data"]) for event in history["events"]] == [
        {"text": "hi"},
        "123",
        [1, 2],
    ]


async def test_pushes_queued_together_leave_in_one_frame(server: ServerProcess) -> None:
    channel = f"chat:{time.time_ns()}"
    async with raw_client(server.url) as reader, raw_client(server.url) as writer:
        await reader.connect()
        await reader.subscribe(channel)
        await writer.connect()
        # 15 publishes in one frame are published in one go; the reader's writer finds them
        # all waiting and sends them together.
        batch = "\n".join(
            json.dumps({"id": 10 + n, "publish": {"channel": channel, "data": n}})
            for n in range(15)
        )
        await writer.send_frame(batch)
        pubs = await reader.publications(channel, 15)
        assert [pub["data"] for pub in pubs] == list(range(15))
        assert reader.frames - 2 <= 2  # connect and subscribe replies, then 1 or 2 frames


# -- recovery and history --------------------------------------------------------------------


async def test_recovery_returns_exactly_the_missed_publications(
    server: ServerProcess, topic: str
) -> None:
    async with raw_client(server.url) as client:
        await client.connect()
        first = await client.subscribe(topic)
        await publish_http(server, topic, 0)
        (seen,) = await client.publications(topic, 1)
    for n in range(1, 6):
        await publish_http(server, topic, n)
    async with raw_client(server.url) as client:
        await client.connect()
        result = await client.subscribe(
            topic, recover=True, epoch=first["epoch"], offset=seen["offset"]
        )
        assert result["recovered"] is True and result["was_recovering"] is True
        assert [pub["data"] for pub in result["publications"]] == [1, 2, 3, 4, 5]
        assert result["offset"] == 6
        await publish_http(server, topic, 6)
        (live,) = await client.publications(topic, 1)
        assert live == {"data": 6, "offset": 7}


async def test_recovery_says_false_when_history_is_gone(server: ServerProcess, topic: str) -> None:
    async with raw_client(server.url) as client:
        await client.connect()
        first = await client.subscribe(topic)
    for n in range(HISTORY_SIZE + 10):
        await publish_http(server, topic, n)
    async with raw_client(server.url) as client:
        await client.connect()
        result = await client.subscribe(topic, recover=True, epoch=first["epoch"], offset=0)
        assert result["recovered"] is False and "publications" not in result
        assert result["offset"] == HISTORY_SIZE + 10  # continues live from the top
        unknown = await client.subscribe(f"{topic}.b", recover=True, epoch="feedbeef", offset=3)
        assert unknown["recovered"] is False
        garbage = await client.subscribe(f"{topic}.c", recover=True, epoch="NOT AN EPOCH", offset=1)
        assert garbage["recovered"] is False


async def test_since_offset_zero_replays_what_history_holds(
    server: ServerProcess, topic: str
) -> None:
    for n in range(3):
        await publish_http(server, topic, n)
    async with raw_client(server.url) as client:
        await client.connect()
        result = await client.subscribe(topic, recover=True, offset=0, epoch="")
        assert result["recovered"] is True
        assert [pub["data"] for pub in result["publications"]] == [0, 1, 2]
    for n in range(3, HISTORY_SIZE + 5):
        await publish_http(server, topic, n)
    async with raw_client(server.url) as client:
        await client.connect()
        result = await client.subscribe(topic, recover=True, offset=0, epoch="")
        # What history holds, but not claimed whole: the first events were trimmed.
        assert result["recovered"] is False
        assert [pub["data"] for pub in result["publications"]] == list(range(5, HISTORY_SIZE + 5))


async def test_history_command(server: ServerProcess, topic: str) -> None:
    for n in range(10):
        await publish_http(server, topic, n)
    async with raw_client(server.url) as client:
        await client.connect()
        sub = await client.subscribe(topic)
        epoch = sub["epoch"]

        async def history(**params: Any) -> dict[str, Any]:
            reply = await client.request("history", {"channel": topic, **params})
            return reply.get("history", reply)

        position_only = await history()
        assert position_only["offset"] == 10 and position_only["epoch"] == epoch
        assert not position_only.get("publications")
        assert [p["data"] for p in (await history(limit=-1))["publications"]] == list(range(10))
        assert [p["data"] for p in (await history(limit=3))["publications"]] == [0, 1, 2]
        since = {"offset": 4, "epoch": epoch}
        assert [p["data"] for p in (await history(limit=2, since=since))["publications"]] == [4, 5]
        reverse = await history(limit=3, reverse=True)
        assert [p["offset"] for p in reverse["publications"]] == [10, 9, 8]
        reverse_since = await history(limit=2, reverse=True, since=since)
        assert [p["offset"] for p in reverse_since["publications"]] == [3, 2]  # exclusive
        gone = await history(limit=5, since={"offset": 2, "epoch": "feedbeef"})
        assert gone["error"]["code"] == 112


# -- slow clients and shutdown ---------------------------------------------------------------


async def test_a_client_that_stops_reading_gets_3008_and_others_are_unaffected(
    start_server: StartServer, topic: str
) -> None:
    server = start_server(
        env={"SLUICEWAY_BUFFER_BYTES": str(256 * 1024), "SLUICEWAY_WRITE_TIMEOUT": "20"}
    )
    payload = "x" * 32_000
    count = 300  # ~10 MB: more than kernel buffers and the subscriber buffer together
    slow = SilentClient(server.port)
    slow.send(json.dumps({"id": 1, "connect": {}}))
    slow.send(json.dumps({"id": 2, "subscribe": {"channel": topic}}))
    rss_before = server.ps.memory_info().rss
    async with raw_client(server.url) as fast:
        await fast.connect()
        await fast.subscribe(topic)
        reader = asyncio.create_task(fast.publications(topic, count, timeout=60))
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            for n in range(count):
                response = await http.post(f"/topics/{topic}", json={"data": f"{n}:{payload}"})
                assert response.status_code == 200
        pubs = await reader
        assert [int(p["data"].split(":")[0]) for p in pubs] == list(range(count))
    # The slow client now reads: what was in flight, then the close frame.
    texts, code, reason = await asyncio.to_thread(slow.read_to_close, 30)
    slow.close()
    assert (code, reason) == (3008, "slow")
    received = [json.loads(line) for text in texts for line in text.split("\n")]
    offsets = [m["push"]["pub"]["offset"] for m in received if "push" in m]
    assert offsets == list(range(1, len(offsets) + 1))  # in order, no gap, then cut off
    assert len(offsets) < count
    assert server.metrics()['sluiceway_ws_disconnects_total{code="3008"}'] == 1
    # Memory: history (~10 MB here) plus bounded buffers, not a queue per slow client.
    assert server.ps.memory_info().rss - rss_before < 64 * 1024 * 1024


async def test_shutdown_closes_with_3001(start_server: StartServer, topic: str) -> None:
    server = start_server()
    async with raw_client(server.url) as client:
        await client.connect()
        await client.subscribe(topic)
        await client.subscribe(f"{topic}.b")
        server.signal(signal.SIGTERM)
        assert await client.closed() == (3001, "shutdown")
    assert server.wait(10) == 0


async def test_a_plain_get_is_told_to_upgrade(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.get("/connection/websocket")
    assert response.status_code == 426
    assert response.json()["error"]["code"] == "upgrade_required"
