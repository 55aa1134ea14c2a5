"""Centrifugo's client protocol, in process, against its sans-I/O core
(:class:`sluiceway.centrifugo.protocol.CentrifugoProtocol`): frames in, frames and requests
out, time given as ``now``. What the end-to-end tests (test_centrifugo_protocol.py) check
against a real server, command by command, and what only the core can show: the order of
commands that wait for I/O, and what the core does with answers it did not ask for."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sluiceway.auth import TokenVerifier
from sluiceway.centrifugo import CentrifugoOptions, Hooks, codes, frames
from sluiceway.centrifugo.codes import Disconnect, ReplyError
from sluiceway.centrifugo.options import Client
from sluiceway.centrifugo.protocol import (
    CHANNEL_NAME,
    HANDLERS,
    CentrifugoProtocol,
    ConnectHook,
    Follow,
    GetHistory,
    GetPresence,
    History,
    Publish,
    PublishHook,
    Request,
    Subscribe,
    Subscribed,
    SubscribeHook,
    Unsubscribe,
)
from sluiceway.ids import InvalidEventId, Position

SECRET = "test-secret-that-is-long-enough-for-hs256"
HUB_URL = "http://testserver/.well-known/mercure"
DETAIL = "https://mercure.rocks/authorization-detail"
EPOCH = "e1"


def options(**overrides: Any) -> CentrifugoOptions:
    """The end-to-end server's settings (test_centrifugo_protocol.SERVER_ENV)."""
    settings: dict[str, Any] = {
        "tokens": TokenVerifier(hmac_secret=SECRET),
        "publish_channels": ["chat:*", "pub.*"],
        "max_frame_bytes": 4096,
        "max_channels": 4,
        "command_rate": 20,
        "command_burst": 20,
        "ping_interval": 1,
        "pong_timeout": 1,
        "connect_timeout": 1,
        "hub_url": HUB_URL,
    }
    settings.update(overrides)
    return CentrifugoOptions(**settings)


def token(secret: str = SECRET, algorithm: str = "HS256", **claims: Any) -> str:
    claims.setdefault("exp", int(time.time()) + 3600)
    return jwt.encode(claims, secret, algorithm=algorithm)


def grants_token(subscribe: list[str], **claims: Any) -> str:
    details = [
        {"type": DETAIL, "actions": ["subscribe"], "topics": [{"match": t} for t in subscribe]}
    ]
    return token(authorization_details=details, **claims)


@dataclass
class Log:
    """A channel's history as the fake hub keeps it."""

    epoch: str = EPOCH
    base: int = 1  # the oldest offset held
    data: list[Any] = field(default_factory=list)  # offsets base, base + 1, ...

    @property
    def head(self) -> int:
        return self.base + len(self.data) - 1

    def publication(self, offset: int) -> bytes:
        return frames.publication(offset, orjson.dumps(self.data[offset - self.base]), None)


class Peer:
    """Drives a core as the connection would, with a hub made of lists: every request is
    recorded, executed and answered at once (unless ``hold`` says to keep it)."""

    def __init__(self, opts: CentrifugoOptions | None = None, now: float = 100.0) -> None:
        self.now = now
        self.protocol = CentrifugoProtocol(opts or options(), now)
        self.logs: dict[str, Log] = {}
        self.presence: dict[str, dict[str, dict[str, Any]]] = {}
        self.requests: list[Request[Any]] = []
        self.failures: dict[type[Request[Any]], Exception] = {}  # what a request raises
        self.hold = False
        self.hook_results: dict[type[Request[Any]], Any] = {}

    # -- input -----------------------------------------------------------------------------

    def send(self, *commands: dict[str, Any] | str) -> list[dict[str, Any]]:
        """One frame of ``commands``; what the core sends back."""
        frame = "\n".join(c if isinstance(c, str) else json.dumps(c) for c in commands)
        self.protocol.receive_text(frame, self.now)
        self.serve()
        return self.read()

    def request(self, command_id: int, method: str, params: dict[str, Any] | None = None) -> Any:
        """One command; its reply (the result, or the error object)."""
        replies = [
            r
            for r in self.send({"id": command_id, method: params or {}})
            if r.get("id") == command_id
        ]
        (reply,) = replies
        return reply.get(method, reply)

    def connect(self, **params: Any) -> dict[str, Any]:
        result = self.request(1, "connect", params)
        assert "error" not in result, result
        assert self.protocol.connected
        return dict(result)

    def subscribe(self, command_id: int, channel: str, **params: Any) -> dict[str, Any]:
        result = self.request(command_id, "subscribe", {"channel": channel, **params})
        assert "error" not in result, result
        return dict(result)

    def tick(self, seconds: float) -> list[dict[str, Any]]:
        self.now += seconds
        self.protocol.tick(self.now)
        return self.read()

    def read(self) -> list[dict[str, Any]]:
        return [
            orjson.loads(line)
            for frame in self.protocol.data_to_send()
            for line in frame.split(b"\n")
        ]

    @property
    def closed(self) -> tuple[int, str] | None:
        disconnect = self.protocol.disconnect
        return None if disconnect is None else (disconnect.code, disconnect.reason)

    # -- the fake I/O ----------------------------------------------------------------------

    def serve(self) -> None:
        while not self.hold and (request := self.protocol.next_request()) is not None:
            self.requests.append(request)
            try:
                result = self.execute(request)
            except Exception as error:
                self.protocol.fail(request, error)
            else:
                self.protocol.resolve(request, result)

    def execute(self, request: Request[Any]) -> Any:
        failure = self.failures.get(type(request))
        if failure is not None:
            raise failure
        if type(request) in self.hook_results:
            return self.hook_results[type(request)]
        match request:
            case Subscribe():
                log = self.logs.setdefault(request.channel, Log())
                after, lost = log.head, False
                if request.cursor is not None:
                    try:
                        position = Position.parse(request.cursor)
                    except InvalidEventId:
                        position = None
                    if (
                        position is None
                        or position.epoch != log.epoch
                        or position.offset < log.base - 1
                    ):
                        lost = True
                    else:
                        after = min(position.offset, log.head)
                if request.rewind:
                    after = log.base - 1
                publications = []
                if request.replay:
                    publications = [log.publication(o) for o in range(after + 1, log.head + 1)]
                    after = log.head
                return Subscribed(log.epoch, after, log.base, lost, publications)
            case Follow():
                self.presence.setdefault(request.channel, {})[self.protocol.client.id] = (
                    request.info
                )
                return None
            case Unsubscribe():
                self.presence.get(request.channel, {}).pop(self.protocol.client.id, None)
                return None
            case Publish():
                self.logs.setdefault(request.channel, Log()).data.append(orjson.loads(request.data))
                return None
            case GetPresence():
                return dict(self.presence.get(request.channel, {}))
            case GetHistory():
                log = self.logs[request.channel]
                offsets: list[int] = []
                if request.fetch:
                    first = log.base
                    if request.after is not None:
                        position = Position.parse(request.after)
                        if position.epoch != log.epoch:
                            raise codes.unrecoverable_position()
                        first = position.offset + 1
                    offsets = list(range(max(first, log.base), log.head + 1))
                return History(log.epoch, log.head, log.base, offsets, log.publication)
            case ConnectHook() | SubscribeHook() | PublishHook():
                return getattr(request, "data", None)
        raise AssertionError(f"unexpected {request!r}")

    def publish_elsewhere(self, channel: str, *data: Any) -> None:
        """Publications from HTTP or other connections."""
        self.logs.setdefault(channel, Log()).data.extend(data)


def error_code(reply: dict[str, Any]) -> int:
    assert "error" in reply, reply
    return int(reply["error"]["code"])


def requests_of(peer: Peer, kind: type[Request[Any]]) -> list[Any]:
    return [r for r in peer.requests if isinstance(r, kind)]


# -- the module itself -----------------------------------------------------------------------


def test_the_core_imports_no_asyncio_and_no_hub() -> None:
    code = (
        "import sys; import sluiceway.centrifugo.protocol; "
        "bad = [m for m in sys.modules if m == 'asyncio' or m.startswith(('asyncio.', "
        "'sluiceway.hub', 'sluiceway.centrifugo.connection', 'sluiceway.centrifugo.endpoint', "
        "'redis'))]; print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_channel_names_are_the_hubs_topic_names() -> None:
    from sluiceway.hub.core import TOPIC_NAME

    assert CHANNEL_NAME.pattern == TOPIC_NAME.pattern


def test_every_method_with_a_reply_has_a_handler() -> None:
    assert set(HANDLERS) == set(frames.METHODS) - {"send"}
    assert all(callable(handler) for handler in HANDLERS.values())


# -- connecting ------------------------------------------------------------------------------


def test_connect_result() -> None:
    peer = Peer()
    result = peer.connect(name="test")
    assert result["ping"] == 1 and result["pong"] is True
    assert result["client"] == peer.protocol.client.id and result["version"]
    assert "expires" not in result
    assert peer.requests == []  # nothing to ask of the hub


def test_a_command_before_connect_closes_with_3501() -> None:
    peer = Peer()
    assert peer.send({"id": 1, "subscribe": {"channel": "x"}}) == []
    assert peer.closed == (3501, "bad request")
    assert peer.requests == []


def test_no_connect_in_time_closes_as_stale() -> None:
    peer = Peer()
    peer.tick(1.0)
    assert peer.closed is None
    peer.tick(0.5)
    assert peer.closed == (3502, "stale")


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
def test_malformed_frames_close_with_3501(frame: str) -> None:
    peer = Peer()
    peer.connect()
    assert peer.send(frame) == []
    assert peer.closed == (3501, "bad request")
    assert peer.protocol.stats.disconnects[3501] == 1


def test_error_replies_keep_the_connection_open() -> None:
    peer = Peer()
    peer.connect()
    topic = "news"

    def error_of(method: str, params: dict[str, Any]) -> int:
        peer.now += 0.1  # a client that waits for each reply: within the command rate
        return error_code(peer.request(7, method, params))

    assert error_of("frobnicate", {}) == 104
    assert error_of("rpc", {"method": "x"}) == 104
    assert error_of("subscribe", {}) == 107
    assert error_of("subscribe", {"channel": 5}) == 107
    assert error_of("subscribe", {"channel": "has space"}) == 102
    assert error_of("subscribe", {"channel": "x" * 201}) == 102
    assert error_of("subscribe", {"channel": "sluiceway.jobs"}) == 103  # internal topic
    assert error_of("subscribe", {"channel": "y", "offset": -1, "recover": True}) == 107
    assert error_of("subscribe", {"channel": "y", "epoch": 5, "recover": True}) == 107
    peer.subscribe(2, topic)
    assert error_of("subscribe", {"channel": topic}) == 105
    for index in range(3):
        peer.subscribe(3 + index, f"{topic}.{index}")
    assert error_of("subscribe", {"channel": f"{topic}.more"}) == 106  # max 4
    assert error_of("publish", {"channel": topic, "data": 1}) == 103
    assert error_of("publish", {"channel": "chat:x"}) == 107
    assert error_of("history", {"channel": "chat:unsubscribed", "limit": 1}) == 103
    assert error_of("presence", {"channel": "chat:unsubscribed"}) == 103
    assert error_of("presence_stats", {"channel": "chat:unsubscribed"}) == 103
    assert error_of("history", {"channel": topic, "limit": "ten"}) == 107
    assert error_of("history", {"channel": topic, "since": "x"}) == 107
    assert error_of("history", {"channel": topic, "limit": 1, "since": {"offset": -2}}) == 107
    assert peer.request(8, "ping") == {}  # still open and answering
    assert peer.closed is None
    assert len(requests_of(peer, Subscribe)) == 4  # no refused command reached the hub


def test_frames_over_the_limit_close_the_connection() -> None:
    peer = Peer()
    peer.connect()
    assert peer.send(json.dumps({"id": 2, "ping": {}, "pad": "x" * 5000})) == []
    assert peer.closed == (3501, "bad request: frame too large")


def test_binary_frames_are_utf8_text() -> None:
    peer = Peer()
    peer.protocol.receive_bytes(b'{"id":1,"connect":{}}', peer.now)
    (reply,) = peer.read()
    assert reply["id"] == 1 and "connect" in reply
    peer.protocol.receive_bytes(b'{"id":2,"ping":{}}\n\xff\xfe', peer.now)
    assert peer.read() == []  # nothing of a frame that is not UTF-8 is run
    assert peer.closed == (3501, "bad request")


def test_command_flood_gets_111_then_3013() -> None:
    peer = Peer()
    peer.connect()
    replies = peer.send(*({"id": 100 + i, "ping": {}} for i in range(30)))
    assert [r["id"] for r in replies] == list(range(100, 130))
    refused = [r for r in replies if "error" in r]
    assert len(refused) == 11  # the burst of 20, minus connect, passes
    assert all(
        r["error"] == {"code": 111, "message": "too many requests", "temporary": True}
        for r in refused
    )
    peer.now += 0.5  # refills 10
    replies = peer.send(*({"id": 200 + i, "ping": {}} for i in range(10)))
    assert all("ping" in r for r in replies)
    replies = peer.send(*({"id": 300 + i, "ping": {}} for i in range(60)))
    assert len(replies) == 20  # refused one by one, then closed
    assert peer.closed == (3013, "too many requests")


# -- ping / pong -----------------------------------------------------------------------------


def test_no_pong_closes_with_3012() -> None:
    peer = Peer()
    peer.connect()
    assert peer.tick(0.5) == []
    assert peer.tick(0.5) == [{}]  # the ping
    assert peer.tick(0.9) == []
    assert peer.closed is None
    peer.tick(0.2)
    assert peer.closed == (3012, "no pong")
    assert peer.tick(5) == []  # closed: no more pings


def test_pongs_keep_the_connection() -> None:
    peer = Peer()
    peer.connect()
    pings = 0
    for _ in range(35):
        out = peer.tick(0.1)
        if {} in out:
            pings += 1
            peer.send("{}")  # the pong
    assert pings >= 2
    assert peer.closed is None
    assert peer.request(2, "ping") == {}


# -- tokens ----------------------------------------------------------------------------------


def test_connection_token_sets_the_user() -> None:
    peer = Peer()
    peer.connect(token=token(sub="alice", info={"name": "Alice"}))
    peer.subscribe(2, "room")
    (follow,) = requests_of(peer, Follow)
    assert follow.info == {
        "user": "alice",
        "client": peer.protocol.client.id,
        "conn_info": {"name": "Alice"},
    }
    presence = peer.request(3, "presence", {"channel": "room"})
    (entry,) = presence["presence"].values()
    assert entry["user"] == "alice" and entry["conn_info"] == {"name": "Alice"}
    stats = peer.request(4, "presence_stats", {"channel": "room"})
    assert stats == {"num_clients": 1, "num_users": 1}
    assert peer.protocol.presence_entries() == [("room", peer.protocol.client.id, follow.info)]


def test_expired_token_is_error_109() -> None:
    peer = Peer()
    reply = peer.request(1, "connect", {"token": token(sub="a", exp=time.time() - 5)})
    assert error_code(reply) == 109
    assert not peer.protocol.connected
    peer.connect(token=token(sub="a"))  # a fresh token: connected


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
def test_invalid_tokens_close_with_3500(bad_token: str) -> None:
    peer = Peer()
    assert peer.send({"id": 1, "connect": {"token": bad_token}}) == []
    assert peer.closed == (3500, "invalid token")


def test_a_token_that_is_not_a_string_is_107() -> None:
    peer = Peer()
    assert error_code(peer.request(1, "connect", {"token": 42})) == 107
    assert peer.closed is None


def test_connection_expires_without_refresh() -> None:
    peer = Peer()
    result = peer.connect(token=token(sub="a", exp=int(time.time()) + 2))
    assert result["expires"] is True and 0 <= result["ttl"] <= 2
    for _ in range(40):
        if {} in peer.tick(0.1):
            peer.send("{}")
    assert peer.closed == (3005, "connection expired")


def test_refresh_extends_the_connection() -> None:
    peer = Peer()
    peer.connect(token=token(sub="a", exp=int(time.time()) + 2))
    reply = peer.request(2, "refresh", {"token": token(sub="a", exp=time.time() + 60)})
    assert reply["expires"] is True and reply["ttl"] >= 58
    for _ in range(35):
        if {} in peer.tick(0.1):
            peer.send("{}")
    assert peer.closed is None
    assert peer.request(3, "ping") == {}
    # A token for someone else closes the connection.
    assert peer.send({"id": 99, "refresh": {"token": token(sub="mallory")}}) == []
    assert peer.closed == (3500, "invalid token")


def test_refresh_without_a_token_closes_with_3500() -> None:
    peer = Peer()
    peer.connect(token=token(sub="a"))
    peer.send({"id": 2, "refresh": {}})
    assert peer.closed == (3500, "invalid token")


def test_a_refreshed_token_that_grants_less_leaves_those_channels() -> None:
    opts = options(anonymous_subscribe=False)
    peer = Peer(opts)
    both = ["/topics/ws-a", "/topics/ws-c"]  # relative to the hub's URL
    peer.connect(token=grants_token(both, sub="carol"))
    assert error_code(peer.request(2, "subscribe", {"channel": "ws-b"})) == 103
    peer.subscribe(3, "ws-a")
    peer.subscribe(4, "ws-c")
    out = peer.send({"id": 5, "refresh": {"token": grants_token(both[1:], sub="carol")}})
    assert out[0]["id"] == 5 and "refresh" in out[0]
    assert out[1:] == [
        {"push": {"channel": "ws-a", "unsubscribe": {"code": 2000, "reason": "permission revoked"}}}
    ]
    assert [r.channel for r in requests_of(peer, Unsubscribe)] == ["ws-a"]
    assert list(peer.protocol.channels) == ["ws-c"]


def test_subscription_tokens_expire_unless_refreshed() -> None:
    peer = Peer()
    peer.connect(token=token(sub="alice"))
    soon = int(time.time()) + 2
    kept = peer.subscribe(2, "$kept", token=token(sub="alice", channel="$kept", exp=soon))
    assert kept["expires"] is True and 0 <= kept["ttl"] <= 2
    peer.subscribe(
        3, "$lapsing", token=token(sub="alice", channel="$lapsing", exp=soon, info={"r": 1})
    )
    later = token(sub="alice", channel="$kept", exp=int(time.time()) + 60)
    refreshed = peer.request(4, "sub_refresh", {"channel": "$kept", "token": later})
    assert refreshed["expires"] is True and refreshed["ttl"] > 50
    wrong = token(sub="alice", channel="$other", exp=int(time.time()) + 60)
    assert (
        error_code(peer.request(5, "sub_refresh", {"channel": "$lapsing", "token": wrong})) == 103
    )
    assert error_code(peer.request(6, "sub_refresh", {"channel": "$nope", "token": later})) == 103
    follows = {f.channel: f.info for f in requests_of(peer, Follow)}
    assert follows["$lapsing"]["chan_info"] == {"r": 1} and "chan_info" not in follows["$kept"]
    # "$lapsing" was not refreshed.
    for _ in range(40):
        if {} in peer.tick(0.1):
            peer.send("{}")
    assert peer.closed == (3006, "subscription expired")


def test_server_side_subscriptions_from_the_token() -> None:
    peer = Peer()
    connect_token = token(sub="alice", channels=["feed", "feed"])  # named twice: once
    result = peer.connect(token=connect_token)
    sub = result["subs"]["feed"]
    assert sub["recoverable"] is True and sub["offset"] == 0 and sub["epoch"] == EPOCH
    assert [type(r) for r in peer.requests] == [Subscribe, Follow]
    peer.publish_elsewhere("feed", "first", "missed")
    again = Peer()
    again.logs = peer.logs
    position = {"recover": True, "epoch": sub["epoch"], "offset": 1}
    result = again.connect(token=connect_token, subs={"feed": position})
    recovered = result["subs"]["feed"]
    assert recovered["recovered"] is True and recovered["offset"] == 2
    assert [p["data"] for p in recovered["publications"]] == ["missed"]
    (subscribe,) = requests_of(again, Subscribe)
    assert subscribe.cursor == f"{EPOCH}-1" and subscribe.replay and not subscribe.rewind


@pytest.mark.parametrize(
    ("channels", "code"),
    [
        ("feed", 3500),
        ([1], 3500),
        (["sluiceway.jobs"], 103),
        (["bad name"], 102),
        (["a", "b", "c", "d", "e"], 106),
    ],
)
def test_bad_server_side_channels_are_refused(channels: Any, code: int) -> None:
    peer = Peer()
    out = peer.send({"id": 1, "connect": {"token": token(sub="alice", channels=channels)}})
    if code >= 3000:
        assert peer.closed == (code, "invalid token")
    else:
        assert error_code(out[0]) == code
    assert requests_of(peer, Subscribe) == []


def test_a_failing_server_side_channel_follows_none() -> None:
    peer = Peer()
    peer.failures[Subscribe] = codes.unknown_channel()
    out = peer.send({"id": 1, "connect": {"token": token(sub="alice", channels=["a", "b"])}})
    assert error_code(out[0]) == 102
    assert len(requests_of(peer, Subscribe)) == 1 and requests_of(peer, Follow) == []
    assert peer.protocol.channels == {}
    assert not peer.protocol.connected  # it may connect again
    del peer.failures[Subscribe]
    peer.connect(token=token(sub="alice", channels=["a", "b"]))
    assert list(peer.protocol.channels) == ["a", "b"]


def test_private_channels_need_a_subscription_token() -> None:
    peer = Peer()
    peer.connect(token=token(sub="alice"))
    assert error_code(peer.request(2, "subscribe", {"channel": "$room"})) == 103
    other = token(sub="alice", channel="$other")
    assert error_code(peer.request(3, "subscribe", {"channel": "$room", "token": other})) == 103
    someone_else = token(sub="bob", channel="$room")
    assert (
        error_code(peer.request(4, "subscribe", {"channel": "$room", "token": someone_else})) == 103
    )
    result = peer.subscribe(5, "$room", token=token(sub="alice", channel="$room"))
    assert result["recoverable"] is True
    assert [r.channel for r in requests_of(peer, Subscribe)] == ["$room"]


def test_user_limited_channels() -> None:
    carol = Peer()
    carol.connect(token=token(sub="carol"))
    assert error_code(carol.request(2, "subscribe", {"channel": "dm#alice,bob"})) == 103
    bob = Peer()
    bob.connect(token=token(sub="bob"))
    bob.subscribe(2, "dm#alice,bob")


def test_anonymous_refused_and_rs256_accepted() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    opts = options(allow_anonymous=False, tokens=TokenVerifier(public_key_pem=public_pem))
    peer = Peer(opts)
    peer.send({"id": 1, "connect": {}})
    assert peer.closed == (3500, "invalid token")
    peer = Peer(opts)
    claims = {"sub": "alice", "exp": int(time.time()) + 600}
    peer.connect(token=jwt.encode(claims, key, algorithm="RS256"))
    # Algorithm confusion: the public key used as an HMAC secret is refused.
    forged = jwt.encode({"sub": "alice"}, "x" * 32, algorithm="HS256")
    peer = Peer(opts)
    peer.send({"id": 1, "connect": {"token": forged}})
    assert peer.closed == (3500, "invalid token")


# -- publishing ------------------------------------------------------------------------------


def test_websocket_publications_are_published_as_json() -> None:
    peer = Peer()
    peer.connect()
    for n, data in enumerate([{"text": "hi"}, "123", [1, 2]]):
        assert peer.request(2 + n, "publish", {"channel": "chat:x", "data": data}) == {}
    assert [r.data for r in requests_of(peer, Publish)] == ['{"text":"hi"}', '"123"', "[1,2]"]
    assert peer.logs["chat:x"].data == [{"text": "hi"}, "123", [1, 2]]


def test_data_that_cannot_be_json_is_107() -> None:
    peer = Peer(_hooked())
    peer.connect()
    deep: Any = 0
    for _ in range(300):
        deep = [deep]
    # Nested deeper than JSON may be written back (a hook's answer): refused, none published.
    peer.hook_results[PublishHook] = deep
    assert error_code(peer.request(2, "publish", {"channel": "anything", "data": 1})) == 107
    assert requests_of(peer, Publish) == []
    assert peer.closed is None


def test_hub_refusals_are_error_replies() -> None:
    peer = Peer()
    peer.connect()
    peer.failures[Publish] = codes.permission_denied()  # a finished topic
    assert error_code(peer.request(2, "publish", {"channel": "chat:x", "data": 1})) == 103
    peer.failures[Publish] = codes.SHUTDOWN  # the hub is closing
    peer.send({"id": 3, "publish": {"channel": "chat:x", "data": 1}})
    assert peer.closed == (3001, "shutdown")


def test_an_unexpected_failure_is_error_100_and_the_connection_stays(
    caplog: pytest.LogCaptureFixture,
) -> None:
    peer = Peer()
    peer.connect()
    peer.failures[Publish] = RuntimeError("backend on fire")
    reply = peer.request(2, "publish", {"channel": "chat:x", "data": 1})
    assert reply["error"] == {"code": 100, "message": "internal server error", "temporary": True}
    assert "publish command failed" in caplog.text
    del peer.failures[Publish]
    assert peer.request(3, "publish", {"channel": "chat:x", "data": 2}) == {}


# -- hooks -----------------------------------------------------------------------------------


def _hooked() -> CentrifugoOptions:
    async def nothing(*args: Any) -> Any:
        return None

    return options(hooks=Hooks(on_connect=nothing, on_subscribe=nothing, on_publish=nothing))


def test_hooks_are_requests_whose_answers_count() -> None:
    peer = Peer(_hooked())
    peer.hook_results[ConnectHook] = {"welcome": True}
    result = peer.connect(data={"hello": 1})
    assert result["data"] == {"welcome": True}
    (hook,) = requests_of(peer, ConnectHook)
    assert isinstance(hook.client, Client) and hook.data == {"hello": 1}
    peer.hook_results[PublishHook] = {"rewritten": True}
    assert peer.request(2, "publish", {"channel": "any", "data": 1}) == {}  # the hook decides
    assert requests_of(peer, Publish)[0].data == '{"rewritten":true}'
    peer.failures[SubscribeHook] = ReplyError(4001, "not today")
    reply = peer.request(3, "subscribe", {"channel": "room", "data": "x"})
    assert reply["error"] == {"code": 4001, "message": "not today"}
    assert requests_of(peer, Subscribe) == []
    peer.failures[SubscribeHook] = Disconnect(4500, "go away")
    peer.send({"id": 4, "subscribe": {"channel": "room"}})
    assert peer.closed == (4500, "go away")


def test_a_refused_connect_hook_leaves_it_unconnected() -> None:
    peer = Peer(_hooked())
    peer.failures[ConnectHook] = ReplyError(4003, "banned")
    assert peer.request(1, "connect", {})["error"]["code"] == 4003
    assert not peer.protocol.connected
    assert peer.protocol.stats.connects == 0


# -- one command at a time -------------------------------------------------------------------


def test_commands_wait_for_the_one_before() -> None:
    peer = Peer()
    peer.connect()
    peer.hold = True
    out = peer.send(
        {"id": 2, "subscribe": {"channel": "room"}},
        {"id": 3, "subscribe": {"channel": "room"}},
        {"id": 4, "ping": {}},
    )
    assert out == []  # the subscribe waits for the hub; the rest waits for it
    request = peer.protocol.next_request()
    assert isinstance(request, Subscribe) and request.channel == "room"
    assert peer.protocol.next_request() is request  # until answered
    peer.protocol.receive_text('{"id":5,"ping":{}}', peer.now)  # another frame meanwhile
    assert peer.read() == []
    peer.hold = False
    peer.serve()
    replies = peer.read()
    assert [r["id"] for r in replies] == [2, 3, 4, 5]
    assert "subscribe" in replies[0] and replies[1]["error"]["code"] == 105  # in order
    assert [type(r) for r in peer.requests] == [Subscribe, Follow]


def test_answers_to_what_was_not_asked_are_refused() -> None:
    peer = Peer()
    protocol = peer.protocol
    stray = Publish("x", "1")
    with pytest.raises(ValueError, match="not the request"):
        protocol.resolve(stray, None)
    peer.connect()
    peer.hold = True
    peer.send({"id": 2, "publish": {"channel": "chat:x", "data": 1}})
    pending = protocol.next_request()
    assert pending is not None
    with pytest.raises(ValueError, match="not the request"):
        protocol.fail(Publish("chat:x", "1"), RuntimeError())  # equal, but not the one asked
    assert protocol.next_request() is pending and peer.read() == []  # nothing lost
    protocol.resolve(pending, None)
    assert peer.read() == [{"id": 2, "publish": {}}]
    with pytest.raises(ValueError, match="not the request"):
        protocol.resolve(pending, None)  # answered twice


def test_a_close_while_waiting_lets_the_command_finish_and_runs_no_more() -> None:
    peer = Peer()
    peer.connect()
    peer.hold = True
    peer.send({"id": 2, "publish": {"channel": "chat:x", "data": 1}}, {"id": 3, "ping": {}})
    pending = peer.protocol.next_request()
    assert pending is not None
    peer.protocol.close(codes.SHUTDOWN)
    peer.protocol.resolve(pending, None)
    assert peer.read() == [{"id": 2, "publish": {}}]  # its reply, not the ping's
    peer.protocol.receive_text('{"id":4,"ping":{}}', peer.now)
    assert peer.read() == [] and peer.protocol.next_request() is None
    peer.protocol.tick(peer.now + 100)
    assert peer.closed == (3001, "shutdown")  # the first reason stays


def test_connection_lost_is_3000_unless_decided() -> None:
    peer = Peer()
    peer.protocol.connection_lost()
    assert peer.closed == (3000, "connection closed")
    other = Peer()
    other.protocol.close(codes.NO_PONG)
    other.protocol.connection_lost()
    assert other.closed == (3012, "no pong")
    assert other.protocol.stats.disconnects == {3012: 1}


# -- recovery and history --------------------------------------------------------------------


def test_http_publications_keep_their_positions() -> None:
    peer = Peer()
    peer.connect()
    peer.publish_elsewhere("room", 0, 1)
    result = peer.subscribe(2, "room")
    assert result == {"recoverable": True, "positioned": True, "epoch": EPOCH, "offset": 2}
    (subscribe,) = requests_of(peer, Subscribe)
    assert subscribe == Subscribe("room", None, rewind=False, replay=False)


def test_recovery_returns_exactly_the_missed_publications() -> None:
    peer = Peer()
    peer.connect()
    peer.publish_elsewhere("room", *range(6))
    result = peer.subscribe(2, "room", recover=True, epoch=EPOCH, offset=1)
    assert result["recovered"] is True and result["was_recovering"] is True
    assert [pub["data"] for pub in result["publications"]] == [1, 2, 3, 4, 5]
    assert [pub["offset"] for pub in result["publications"]] == [2, 3, 4, 5, 6]
    assert result["offset"] == 6


def test_recovery_says_false_when_history_is_gone() -> None:
    peer = Peer()
    peer.connect()
    peer.logs["room"] = Log(base=11, data=list(range(50)))
    result = peer.subscribe(2, "room", recover=True, epoch=EPOCH, offset=0)
    assert result["recovered"] is False and "publications" not in result
    assert result["offset"] == 60  # continues live from the top
    unknown = peer.subscribe(3, "room.b", recover=True, epoch="feedbeef", offset=3)
    assert unknown["recovered"] is False
    garbage = peer.subscribe(4, "room.c", recover=True, epoch="NOT AN EPOCH", offset=1)
    assert garbage["recovered"] is False


def test_since_offset_zero_replays_what_history_holds() -> None:
    peer = Peer()
    peer.connect()
    peer.publish_elsewhere("room", 0, 1, 2)
    result = peer.subscribe(2, "room", recover=True, offset=0, epoch="")
    assert result["recovered"] is True
    assert [pub["data"] for pub in result["publications"]] == [0, 1, 2]
    assert requests_of(peer, Subscribe)[0] == Subscribe("room", None, rewind=True, replay=True)
    peer.logs["trimmed"] = Log(base=6, data=list(range(5, 55)))
    result = peer.subscribe(3, "trimmed", recover=True, offset=0, epoch="")
    # What history holds, but not claimed whole: the first events were trimmed.
    assert result["recovered"] is False
    assert [pub["data"] for pub in result["publications"]] == list(range(5, 55))


def test_history_command() -> None:
    peer = Peer()
    peer.connect()
    peer.publish_elsewhere("room", *range(10))
    peer.subscribe(2, "room")

    def history(**params: Any) -> dict[str, Any]:
        return dict(peer.request(9, "history", {"channel": "room", **params}))

    position_only = history()
    assert position_only == {"publications": [], "epoch": EPOCH, "offset": 10}
    assert requests_of(peer, GetHistory)[-1].fetch is False
    assert [p["data"] for p in history(limit=-1)["publications"]] == list(range(10))
    assert [p["data"] for p in history(limit=3)["publications"]] == [0, 1, 2]
    since = {"offset": 4, "epoch": EPOCH}
    assert [p["data"] for p in history(limit=2, since=since)["publications"]] == [4, 5]
    assert requests_of(peer, GetHistory)[-1].after == f"{EPOCH}-4"
    reverse = history(limit=3, reverse=True)
    assert [p["offset"] for p in reverse["publications"]] == [10, 9, 8]
    reverse_since = history(limit=2, reverse=True, since=since)
    assert [p["offset"] for p in reverse_since["publications"]] == [3, 2]  # exclusive
    assert requests_of(peer, GetHistory)[-1].after is None
    assert error_code(history(limit=5, since={"offset": 2, "epoch": "feedbeef"})) == 112
    assert (
        error_code(history(limit=5, reverse=True, since={"offset": 2, "epoch": "feedbeef"})) == 112
    )
    assert peer.closed is None


def test_history_skips_what_was_trimmed_meanwhile() -> None:
    peer = Peer()
    peer.connect()
    peer.publish_elsewhere("room", *range(5))
    peer.subscribe(2, "room")
    peer.hold = True
    peer.send({"id": 3, "history": {"channel": "room", "limit": -1}})
    request = peer.protocol.next_request()
    assert isinstance(request, GetHistory)
    log = peer.logs["room"]
    page = History(EPOCH, log.head, 3, [1, 2, 3, 4, 5], log.publication)  # 1 and 2 gone
    peer.protocol.resolve(request, page)
    (reply,) = peer.read()
    assert [p["offset"] for p in reply["history"]["publications"]] == [3, 4, 5]


# -- leaving channels ------------------------------------------------------------------------


def test_unsubscribe() -> None:
    peer = Peer()
    peer.connect()
    peer.subscribe(2, "room")
    assert peer.request(3, "unsubscribe", {"channel": "room"}) == {}
    assert [r.channel for r in requests_of(peer, Unsubscribe)] == ["room"]
    assert peer.request(4, "unsubscribe", {"channel": "room"}) == {}  # not subscribed: nothing
    assert len(requests_of(peer, Unsubscribe)) == 1
    assert error_code(peer.request(5, "unsubscribe", {})) == 107
    peer.subscribe(6, "room")  # again


def test_a_finished_channel_is_left_with_2000() -> None:
    peer = Peer()
    peer.connect()
    peer.subscribe(2, "room")
    peer.protocol.channel_finished("room")
    assert peer.read() == [
        {"push": {"channel": "room", "unsubscribe": {"code": 2000, "reason": "finished"}}}
    ]
    peer.protocol.channel_finished("room")  # twice, or never subscribed: nothing
    assert peer.read() == []
    assert peer.protocol.channels == {}


def test_shutdown_closes_with_3001() -> None:
    peer = Peer()
    peer.connect()
    peer.subscribe(2, "room")
    peer.protocol.close(codes.SHUTDOWN)
    assert peer.closed == (3001, "shutdown")
    assert peer.send({"id": 3, "ping": {}}) == []


def test_a_pong_and_send_need_no_reply() -> None:
    peer = Peer()
    peer.connect()
    assert peer.send("{}", {"send": {"data": 1}}) == []
    assert peer.closed is None
