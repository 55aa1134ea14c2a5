"""Centrifugo's client protocol for one connection, sans I/O: text in, frames and requests out.

:class:`CentrifugoProtocol` holds everything the protocol decides for a connection: the
commands of each frame in order, their replies and errors, the command rate limit, tokens and
their expiry, pings and the pong deadline, the channels it is subscribed to and when it must be
closed (and with which code). It does no I/O, imports neither asyncio nor the hub, and reads no
clock but the ``now`` it is given (loop time) and ``time.time()`` for tokens' ``exp``::

    protocol = CentrifugoProtocol(options, now)
    protocol.receive_text('{"id":1,"connect":{}}', now)
    protocol.data_to_send()          # [b'{"id":1,"connect":{"client":...}}']
    protocol.tick(now)               # pings, pong/connect/token deadlines
    protocol.disconnect              # Disconnect(3012, "no pong") once it must close

What needs I/O is asked for, one :class:`Request` at a time: :meth:`~CentrifugoProtocol.
next_request` returns it (a :class:`Subscribe` to the hub, a :class:`Publish`, an application
hook to call...), and the caller answers with :meth:`~CentrifugoProtocol.resolve` (its result)
or :meth:`~CentrifugoProtocol.fail` (a :class:`~sluiceway.centrifugo.codes.ReplyError` or
:class:`~sluiceway.centrifugo.codes.Disconnect`, or any exception: error 100). Commands after
the one waiting are held until it is answered, so they run in the order they were sent.

The asyncio side (:mod:`sluiceway.centrifugo.connection`) owns the socket and the hub's
subscriptions, executes the requests and writes :meth:`~CentrifugoProtocol.data_to_send`
ahead of the publications it reads from the hub.
"""

from __future__ import annotations

import logging
import math
import re
import time
import uuid
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any, Generic, TypeVar, cast

import orjson

from sluiceway.auth import AuthError, Grants, TokenError
from sluiceway.auth.resources import is_internal_topic
from sluiceway.centrifugo import codes, filters, frames
from sluiceway.centrifugo.codec import JSON, Codec
from sluiceway.centrifugo.codes import Disconnect, ReplyError
from sluiceway.centrifugo.filters import Filter
from sluiceway.centrifugo.options import CentrifugoOptions, Client
from sluiceway.centrifugo.protobuf_frames import RawData
from sluiceway.centrifugo.stats import EndpointStats
from sluiceway.ids import Position

logger = logging.getLogger("sluiceway.centrifugo")

#: What connect replies name as the server's version (Centrifugo's field).
SERVER_VERSION = version("sluiceway")

#: A channel name: the hub's topic names (``sluiceway.hub.core.TOPIC_NAME``, the same pattern;
#: a test keeps them equal), checked here so that a bad name is answered without the hub.
CHANNEL_NAME = re.compile(r"[A-Za-z0-9_.:@~+=$#!,-]{1,200}")

ClientInfo = dict[str, Any]
T = TypeVar("T")


# -- requests: what the protocol needs done, answered with resolve() or fail() -----------------


class Request(Generic[T]):
    """Something that needs I/O; ``T`` is the type of the result it is resolved with."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class ConnectHook(Request[Any]):
    """Call ``hooks.on_connect(client, data)``; resolve with what it returns."""

    client: Client
    data: Any


@dataclass(frozen=True, slots=True)
class SubscribeHook(Request[None]):
    """Call ``hooks.on_subscribe(client, channel, data)``."""

    client: Client
    channel: str
    data: Any


@dataclass(frozen=True, slots=True)
class PublishHook(Request[Any]):
    """Call ``hooks.on_publish(client, channel, data)``; resolve with the data to publish."""

    client: Client
    channel: str
    data: Any


@dataclass(frozen=True, slots=True)
class RpcHook(Request[Any]):
    """Call ``hooks.on_rpc(client, method, data)``; resolve with the result's data."""

    client: Client
    method: str
    data: Any


@dataclass(frozen=True, slots=True)
class Subscribe(Request["Subscribed"]):
    """Subscribe to ``channel`` in the hub, after ``cursor`` (an event id) when there is one;
    with ``rewind``, from the oldest event history holds; with ``replay``, take what is
    pending now as the subscribe result's publications. Hold the subscription without
    reading it until :class:`Follow`; release it if the command ends without one."""

    channel: str
    cursor: str | None
    rewind: bool
    replay: bool
    #: The subscription gets fossil deltas (the replay encoded as such a subscription's).
    delta: bool = False
    #: Only the publications whose tags match (the replay too).
    tags_filter: Filter | None = None


@dataclass(frozen=True, slots=True)
class Subscribed:
    """The result of :class:`Subscribe`."""

    epoch: str
    offset: int  # the offset of the last event taken (after the replay)
    base: int  # the oldest offset history holds
    lost: bool  # the cursor could not be resumed (an unknown epoch, trimmed history)
    publications: list[bytes] = field(default_factory=list)  # Publication objects (replay)


@dataclass(frozen=True, slots=True)
class Follow(Request[None]):
    """Start sending the channel's publications (the reply is queued already), record the
    client's presence in it (``info``) and announce its join; with ``join_leave``, send the
    channel's joins and leaves too."""

    channel: str
    info: ClientInfo
    join_leave: bool = False
    #: Send each publication as a fossil delta against the previous one sent (the first, and
    #: any after a gap, whole).
    delta: bool = False
    #: Send only the publications whose tags match.
    tags_filter: Filter | None = None


@dataclass(frozen=True, slots=True)
class Unsubscribe(Request[None]):
    """Release the channel's subscription and the client's presence in it (``info``, as its
    leave announces it)."""

    channel: str
    info: ClientInfo


@dataclass(frozen=True, slots=True)
class Publish(Request[None]):
    """Publish ``data`` (JSON text) to ``channel``."""

    channel: str
    data: str


@dataclass(frozen=True, slots=True)
class GetPresence(Request[dict[str, ClientInfo]]):
    """Who is in ``channel``: client id to ClientInfo."""

    channel: str


@dataclass(frozen=True, slots=True)
class GetHistory(Request["History"]):
    """The channel's position, and with ``fetch`` the offsets history holds after ``after``
    (an event id; None: from the oldest)."""

    channel: str
    after: str | None
    fetch: bool


@dataclass(frozen=True, slots=True)
class History:
    """The result of :class:`GetHistory`."""

    epoch: str
    head: int  # the offset of the newest event
    base: int  # the oldest offset history still holds
    offsets: list[int]  # empty unless fetched
    publication: Callable[[int], bytes]  # the Publication object of an offset (>= base)


Steps = Generator[Request[Any], Any, None]
Handler = Callable[["CentrifugoProtocol", frames.Command], Steps | None]


def _ask(request: Request[T]) -> Generator[Request[Any], Any, T]:
    """``result = yield from _ask(request)``: wait for the caller to resolve ``request``."""
    result = yield request
    return cast(T, result)


class CentrifugoProtocol:
    """One connection's side of the protocol (see the module doc)."""

    __slots__ = (
        "_command",
        "_commands",
        "_granted",
        "_infos",
        "_now",
        "_out",
        "_refused_in_row",
        "_request",
        "_task",
        "_tokens",
        "_tokens_at",
        "channels",
        "client",
        "codec",
        "connected",
        "disconnect",
        "expires_at",
        "next_ping",
        "opened_at",
        "options",
        "pong_deadline",
        "stats",
    )

    def __init__(
        self,
        options: CentrifugoOptions,
        now: float,
        *,
        headers: list[tuple[bytes, bytes]] | None = None,
        stats: EndpointStats | None = None,
        codec: Codec = JSON,
    ) -> None:
        self.options = options
        #: The format of this connection's frames (JSON text, or Protobuf binary).
        self.codec = codec
        self.stats = stats if stats is not None else EndpointStats()
        self.client = Client(
            id=str(uuid.uuid4()),
            user="",
            claims={},
            info=None,
            raw_headers=headers if headers is not None else [],
            grants=options.anonymous_grants,
        )
        self.connected = False
        #: Subscribed channels, each with the loop time its subscription token ends (inf: none).
        self.channels: dict[str, float] = {}
        self._infos: dict[str, Any] | None = None  # chan_info of subscription tokens
        #: Channels subscribed on the strength of the connection token's grants alone (made
        #: when first needed: most connections never have one), re-checked on refresh.
        self._granted: set[str] | None = None
        self.disconnect: Disconnect | None = None
        self.opened_at = now
        self.expires_at: float | None = None
        self.next_ping = 0.0
        self.pong_deadline: float | None = None
        self._now = now  # when the commands being run arrived
        self._tokens = float(options.command_burst)
        self._tokens_at = now
        self._refused_in_row = 0
        self._out: list[bytes] = []
        #: Commands waiting for the running one (None when there are none: an idle connection
        #: keeps no list).
        self._commands: list[frames.Command] | None = None
        self._command: frames.Command | None = None  # the running one
        self._task: Steps | None = None  # its handler, waiting for _request
        self._request: Request[Any] | None = None

    # -- input ---------------------------------------------------------------------------------

    def receive_text(self, frame: str, now: float) -> None:
        """A text frame from the client (one or more commands, in JSON)."""
        if self.disconnect is not None:
            return  # closing: what the client still sends is moot
        if len(frame) > self.options.max_frame_bytes:
            self.close(codes.MESSAGE_TOO_LARGE)
            return
        if self.codec.binary:
            self.close(codes.BAD_REQUEST)  # Protobuf comes in binary frames only
            return
        try:
            commands = frames.parse_frame(frame)
        except Disconnect as disconnect:
            self.close(disconnect)
            return
        self._received(commands, now)

    def receive_bytes(self, frame: bytes, now: float) -> None:
        """A binary frame: Protobuf commands, or the JSON format's text in UTF-8."""
        if self.disconnect is not None:
            return
        if len(frame) > self.options.max_frame_bytes:
            self.close(codes.MESSAGE_TOO_LARGE)
            return
        try:
            commands = self.codec.parse_frame(frame)
        except Disconnect as disconnect:
            self.close(disconnect)
            return
        self._received(commands, now)

    def _received(self, commands: list[frames.Command], now: float) -> None:
        if not commands:
            return
        self._now = now
        if self._commands is None:
            self._commands = commands
        else:
            self._commands.extend(commands)
        self._run()

    def next_request(self) -> Request[Any] | None:
        """What the protocol waits for (the same request until it is answered); None when
        it waits for nothing."""
        return self._request

    def resolve(self, request: Request[Any], result: Any = None) -> None:
        """``request`` was done; ``result`` is what its type says."""
        self._answered(request)
        self._step(result, None)
        self._run()

    def fail(self, request: Request[Any], error: Exception) -> None:
        """``request`` failed: a ReplyError answers the command, a Disconnect closes the
        connection, anything else is error 100 (and logged)."""
        self._answered(request)
        self._step(None, error)
        self._run()

    def _answered(self, request: Request[Any]) -> None:
        if request is not self._request or self._request is None:
            raise ValueError(f"{request!r} is not the request the protocol waits for")
        self._request = None

    def tick(self, now: float) -> None:
        """Deadlines and pings (call it about once a second)."""
        if self.disconnect is not None:
            return
        options = self.options
        if not self.connected:
            if now - self.opened_at > options.connect_timeout:
                self.close(codes.STALE)
        elif self.pong_deadline is not None and now > self.pong_deadline:
            self.close(codes.NO_PONG)
        elif self.expires_at is not None and now > self.expires_at:
            self.close(codes.EXPIRED)
        elif any(now > deadline for deadline in self.channels.values()):
            self.close(codes.SUB_EXPIRED)
        elif now >= self.next_ping:
            self.next_ping = now + options.ping_interval
            self._out.append(self.codec.ping)
            if self.pong_deadline is None:
                self.pong_deadline = now + options.pong_timeout

    def close(self, disconnect: Disconnect) -> None:
        """Close with ``disconnect`` (the first reason wins); nothing more is read."""
        if self.disconnect is None:
            self.disconnect = disconnect
            self.stats.count_disconnect(disconnect.code)
            self._commands = None

    def connection_lost(self) -> None:
        """The socket is gone: closed with 3000 unless a reason was decided before."""
        self.close(Disconnect(3000, "connection closed"))

    def channel_finished(self, channel: str) -> None:
        """Every event of ``channel`` was sent and its topic is finished: forget it and tell
        the client (unsubscribe push 2000)."""
        if self.channels.pop(channel, None) is None:
            return
        self._forget(channel)
        body = {"code": codes.UNSUBSCRIBE_SERVER, "reason": "finished"}
        self._out.append(self.codec.push(channel, "unsubscribe", body))

    # -- output --------------------------------------------------------------------------------

    def data_to_send(self) -> list[bytes]:
        """Replies, pushes and pings to send, in order (each a JSON object; a frame may join
        several with ``\\n``); the caller owns the list."""
        out = self._out
        self._out = []
        return out

    @property
    def wants_write(self) -> bool:
        return bool(self._out)

    def presence_info(self, channel: str) -> ClientInfo:
        """This client as presence shows it in ``channel``."""
        client = self.client
        info: ClientInfo = {"user": client.user, "client": client.id}
        if client.info is not None:
            info["conn_info"] = client.info
        if self._infos is not None and channel in self._infos:
            info["chan_info"] = self._infos[channel]
        return info

    def presence_entries(self) -> list[tuple[str, str, ClientInfo]]:
        """(channel, client id, info) of every subscribed channel, to renew presence."""
        return [(channel, self.client.id, self.presence_info(channel)) for channel in self.channels]

    # -- running commands ----------------------------------------------------------------------

    def _run(self) -> None:
        """Run the waiting commands in order until one waits for a request."""
        commands = self._commands
        if commands is None:
            return
        while self._request is None and commands and self.disconnect is None:
            self._dispatch(commands.pop(0))
        if not commands or self.disconnect is not None:
            self._commands = None

    def _dispatch(self, command: frames.Command) -> None:
        method = command.method
        if method == "":
            self.pong_deadline = None  # the pong to our ping
            return
        if not self.connected and method != "connect":
            self.close(codes.BAD_REQUEST)  # the protocol starts with connect
            return
        if method == "send":
            return  # an asynchronous message: no reply, and no handler for it here
        if command.id == 0:
            self.close(codes.BAD_REQUEST)  # every other command expects a reply
            return
        commands = self.stats.commands
        commands[method] = commands.get(method, 0) + 1
        if not self._take_token():
            self._refused_in_row += 1
            if self._refused_in_row > self.options.command_burst:
                self.close(codes.TOO_MANY_REQUESTS)
            else:
                self._out.append(self.codec.error_reply(command.id, codes.too_many_requests()))
            return
        self._refused_in_row = 0
        self._command = command
        try:
            steps = HANDLERS.get(method, CentrifugoProtocol._not_found)(self, command)
        except Exception as error:
            self._failed(error)
            return
        if steps is not None:
            self._task = steps
            self._step(None, None)

    def _step(self, value: Any, error: Exception | None) -> None:
        """Resume the running handler with a result (or an error) until its next request."""
        task = self._task
        assert task is not None
        try:
            self._request = task.send(value) if error is None else task.throw(error)
        except StopIteration:
            self._task = None
        except Exception as failure:
            self._task = None
            self._failed(failure)

    def _failed(self, error: Exception) -> None:
        command = self._command
        assert command is not None
        if isinstance(error, ReplyError):
            self._out.append(self.codec.error_reply(command.id, error))
        elif isinstance(error, Disconnect):
            self.close(error)
        else:
            logger.error("centrifugo %s command failed", command.method, exc_info=error)
            self._out.append(self.codec.error_reply(command.id, codes.internal()))

    def _take_token(self) -> bool:
        now = self._now
        options = self.options
        self._tokens = min(
            float(options.command_burst),
            self._tokens + (now - self._tokens_at) * options.command_rate,
        )
        self._tokens_at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def _reply(self, command: frames.Command, result: dict[str, Any] | None = None) -> None:
        self._out.append(self.codec.reply(command.id, command.method, result))

    # -- commands ------------------------------------------------------------------------------

    def _not_found(self, command: frames.Command) -> None:
        raise codes.method_not_found()

    def _connect(self, command: frames.Command) -> Steps:
        if self.connected:
            raise codes.BAD_REQUEST
        params = command.params
        options = self.options
        client = self.client
        token = params.get("token") or ""
        claims: dict[str, Any] = {}
        if token:
            claims = self._verify(token)
            user = claims.get("sub", "")
            if not isinstance(user, str):
                raise codes.INVALID_TOKEN
            client.user = user
            client.claims = claims
            client.info = claims.get("info")
            client.grants = self._grants(claims)
        elif not options.allow_anonymous:
            raise codes.INVALID_TOKEN  # terminal: retrying without a token cannot help
        # The token's "channels": server-side subscriptions, recovered from the positions the
        # client sends in "subs".
        channels = claims.get("channels") or []
        if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
            raise codes.INVALID_TOKEN
        channels = list(dict.fromkeys(channels))
        for channel in channels:
            self._check_channel(channel)  # a signed token names no internal topic either
        if len(channels) > options.max_channels:
            raise codes.limit_exceeded()
        data = None
        if options.hooks.on_connect is not None:
            data = yield from _ask(ConnectHook(client, _hook_data(params.get("data"))))
        subs_param = params.get("subs")
        positions: dict[str, Any] = subs_param if isinstance(subs_param, dict) else {}
        subs: dict[str, Any] = {}
        for channel in channels:
            found = positions.get(channel)
            wanted: dict[str, Any] = found if isinstance(found, dict) else {}
            subs[channel] = yield from self._open(channel, wanted)
        # Connected once everything it asked for is there: a refused connect may be retried.
        self.connected = True
        self.stats.connects += 1
        now = self._now
        self.next_ping = now + options.ping_interval
        result: dict[str, Any] = {
            "client": client.id,
            "version": SERVER_VERSION,
            "ping": round(options.ping_interval),
            "pong": True,
        }
        expires = self._expiry(claims)
        if expires is not None:
            self.expires_at = now + expires
            result.update(expires=True, ttl=int(expires))
        if data is not None:
            result["data"] = data
        if subs:
            result["subs"] = subs
        self._reply(command, result)
        for channel in channels:
            yield from self._follow(channel, math.inf, delta=subs[channel].get("delta", False))

    def _verify(self, token: Any) -> dict[str, Any]:
        if not isinstance(token, str):
            raise codes.bad_request("token must be a string")
        try:
            return self.options.tokens.verify(token)
        except TokenError as error:
            if error.expired:
                raise codes.token_expired() from None  # the client fetches a new one
            raise codes.INVALID_TOKEN from None

    def _grants(self, claims: dict[str, Any]) -> Grants:
        try:
            return self.options.grants_of(claims)
        except AuthError:
            raise codes.INVALID_TOKEN from None

    @staticmethod
    def _expiry(claims: dict[str, Any]) -> float | None:
        """Seconds until a token's ``exp`` (None when it has none)."""
        exp = claims.get("exp")
        if not isinstance(exp, int | float):
            return None
        return max(0.0, exp - time.time())

    def _subscribe(self, command: frames.Command) -> Steps:
        params = command.params
        channel = self._channel(params)
        if channel in self.channels:
            raise codes.already_subscribed()
        if len(self.channels) >= self.options.max_channels:
            raise codes.limit_exceeded()
        expires, info = yield from self._authorize(channel, params)
        tags_filter = self._tags_filter(params)
        result = yield from self._open(channel, params, tags_filter)
        deadline = math.inf
        if expires is not None:
            deadline = self._now + expires
            result.update(expires=True, ttl=int(expires))
        self._reply(command, result)
        if info is not _NO_INFO:
            if self._infos is None:
                self._infos = {}
            self._infos[channel] = info
        if not params.get("token") and self.client.grants is not self.options.anonymous_grants:
            if self._granted is None:
                self._granted = set()
            self._granted.add(channel)
        join_leave = params.get("join_leave") is True
        yield from self._follow(
            channel, deadline, join_leave, result.get("delta", False), tags_filter
        )

    def _open(
        self, channel: str, params: dict[str, Any], tags_filter: Filter | None = None
    ) -> Generator[Request[Any], Any, dict[str, Any]]:
        """Subscribe in the hub; the subscribe result (with the missed publications when
        recovering, those ``tags_filter`` lets through)."""
        recover = params.get("recover") is True
        epoch = params.get("epoch") or ""
        offset = params.get("offset") or 0
        if not isinstance(epoch, str) or not isinstance(offset, int) or offset < 0:
            raise codes.bad_request("epoch must be a string and offset a non-negative integer")
        cursor = str(Position(epoch, offset)) if recover and epoch else None
        rewind = recover and not epoch and offset == 0
        delta = self._delta(channel, params.get("delta"))
        opened: Subscribed = yield from _ask(
            Subscribe(channel, cursor, rewind, recover, delta, tags_filter)
        )
        result: dict[str, Any] = {"recoverable": True, "positioned": True, "epoch": opened.epoch}
        if delta:
            result["delta"] = True
        if recover:
            # "since offset 0" (no epoch): whatever history holds, whole only if nothing was
            # trimmed.
            recovered = (offset == 0 and opened.base == 1) if not epoch else not opened.lost
            result.update(was_recovering=True, recovered=recovered)
            if opened.publications:
                result["publications"] = [self.codec.encoded(p) for p in opened.publications]
        result["offset"] = opened.offset
        return result

    def _delta(self, channel: str, asked: Any) -> bool:
        """Whether the subscription gets deltas: it asked for ``fossil`` (the one type there
        is) on a channel that allows them."""
        if asked is None or asked == "":
            return False
        if asked != "fossil":
            raise codes.bad_request("the only delta type is fossil")
        return self.options.allows_delta(channel)

    def _follow(
        self,
        channel: str,
        deadline: float,
        join_leave: bool = False,
        delta: bool = False,
        tags_filter: Filter | None = None,
    ) -> Steps:
        self.channels[channel] = deadline
        info = self.presence_info(channel)
        yield from _ask(Follow(channel, info, join_leave, delta, tags_filter))

    @staticmethod
    def _tags_filter(params: dict[str, Any]) -> Filter | None:
        """The subscription's tags filter (``tf``), parsed; 107 for a bad one, or one asked
        for with deltas (a subscriber missing publications cannot rebuild the next)."""
        node = params.get("tf")
        if not node:
            return None
        if params.get("delta"):
            raise codes.bad_request("a tags filter and deltas cannot go together")
        return filters.parse(node)

    def _authorize(
        self, channel: str, params: dict[str, Any]
    ) -> Generator[Request[Any], Any, tuple[float | None, Any]]:
        """Raise unless this client may subscribe; the subscription token's lifetime (None
        without one) and its ``info`` (``_NO_INFO`` without one)."""
        token = params.get("token")
        expires = None
        info: Any = _NO_INFO
        if token:
            claims = self._verify(token)
            if claims.get("channel") != channel or claims.get("sub", "") != self.client.user:
                raise codes.permission_denied()
            expires = self._expiry(claims)
            info = claims.get("info", _NO_INFO)
        elif not self.options.may_subscribe(self.client, channel):
            # The rules of every path (sluiceway.auth.resources.may_read_topic): "$name"
            # needs a grant on it, "name#users" one of its users or a grant naming it.
            raise codes.permission_denied()
        if self.options.hooks.on_subscribe is not None:
            yield from _ask(SubscribeHook(self.client, channel, _hook_data(params.get("data"))))
        return expires, info

    def _channel(self, params: dict[str, Any]) -> str:
        channel = params.get("channel")
        if not isinstance(channel, str) or not channel:
            raise codes.bad_request("channel is required")
        return self._check_channel(channel)

    @staticmethod
    def _check_channel(channel: str) -> str:
        if not CHANNEL_NAME.fullmatch(channel):
            raise codes.unknown_channel()
        if is_internal_topic(channel):
            # The server's own topics (the Mercure log, generations, jobs): no channel.
            raise codes.permission_denied()
        return channel

    def _subscribed(self, params: dict[str, Any]) -> str:
        channel = self._channel(params)
        if channel not in self.channels:
            raise codes.permission_denied()  # history and presence are for subscribers
        return channel

    def _unsubscribe(self, command: frames.Command) -> Steps:
        channel = self._channel(command.params)
        yield from self._drop(channel)
        self._reply(command)

    def _drop(self, channel: str) -> Steps:
        if channel in self.channels:
            info = self.presence_info(channel)  # chan_info included: before forgetting it
            del self.channels[channel]
            self._forget(channel)
            yield from _ask(Unsubscribe(channel, info))

    def _forget(self, channel: str) -> None:
        if self._infos is not None:
            self._infos.pop(channel, None)
        if self._granted is not None:
            self._granted.discard(channel)

    def _publish(self, command: frames.Command) -> Steps:
        params = command.params
        channel = self._channel(params)
        if "data" not in params:
            raise codes.bad_request("data is required")
        if not self.options.may_publish(self.client, channel):
            raise codes.permission_denied()
        data = _hook_data(params["data"])
        if self.options.hooks.on_publish is not None:
            data = yield from _ask(PublishHook(self.client, channel, data))
        yield from _ask(Publish(channel, _stored_text(data)))
        self._reply(command)

    def _presence(self, command: frames.Command) -> Steps:
        channel = self._subscribed(command.params)
        presence = yield from _ask(GetPresence(channel))
        self._reply(command, {"presence": presence})

    def _presence_stats(self, command: frames.Command) -> Steps:
        channel = self._subscribed(command.params)
        presence = yield from _ask(GetPresence(channel))
        users = {info.get("user", "") for info in presence.values()}
        self._reply(command, {"num_clients": len(presence), "num_users": len(users)})

    def _history(self, command: frames.Command) -> Steps:
        params = command.params
        channel = self._subscribed(params)
        limit = params.get("limit", 0)
        reverse = params.get("reverse") is True
        since = params.get("since")
        if not isinstance(limit, int) or (since is not None and not isinstance(since, dict)):
            raise codes.bad_request("limit must be an integer and since an object")
        after = None
        if since is not None:
            epoch, offset = since.get("epoch", ""), since.get("offset", 0)
            if not isinstance(epoch, str) or not isinstance(offset, int) or offset < 0:
                raise codes.bad_request("since needs an epoch and an offset")
            after = str(Position(epoch, offset))
        page: History = yield from _ask(
            GetHistory(channel, None if reverse else after, fetch=limit != 0)
        )
        publications: list[Any] = []
        if limit != 0:
            offsets = page.offsets
            if reverse:
                if since is not None:
                    if since.get("epoch") != page.epoch:
                        raise codes.unrecoverable_position()
                    offsets = [o for o in offsets if o < since["offset"]]
                offsets = offsets[::-1]
            if limit > 0:
                offsets = offsets[:limit]
            publications = [
                self.codec.encoded(page.publication(offset))
                for offset in offsets
                if offset >= page.base  # trimmed meanwhile
            ]
        result = {"publications": publications, "epoch": page.epoch, "offset": page.head}
        self._reply(command, result)

    def _ping(self, command: frames.Command) -> None:
        self._reply(command)

    def _rpc(self, command: frames.Command) -> Steps:
        if self.options.hooks.on_rpc is None:
            raise codes.method_not_found()
        method = command.params.get("method", "")
        if not isinstance(method, str):
            raise codes.bad_request("method must be a string")
        data = _hook_data(command.params.get("data"))
        result = yield from _ask(RpcHook(self.client, method, data))
        self._reply(command, None if result is None else {"data": result})

    def _refresh(self, command: frames.Command) -> Steps:
        claims = self._verify(command.params.get("token") or "")
        client = self.client
        if claims.get("sub", "") != client.user:
            raise codes.INVALID_TOKEN
        client.grants = self._grants(claims)
        expires = self._expiry(claims)
        self.expires_at = None if expires is None else self._now + expires
        result: dict[str, Any] = {"client": client.id, "version": SERVER_VERSION}
        if expires is not None:
            result.update(expires=True, ttl=int(expires))
        self._reply(command, result)
        # The new token may grant less: leave the channels it no longer allows.
        for channel in sorted(self._granted or ()):
            if channel in self.channels and not self.options.may_subscribe(client, channel):
                yield from self._drop(channel)
                body = {"code": codes.UNSUBSCRIBE_SERVER, "reason": "permission revoked"}
                self._out.append(self.codec.push(channel, "unsubscribe", body))

    def _sub_refresh(self, command: frames.Command) -> None:
        channel = self._subscribed(command.params)
        claims = self._verify(command.params.get("token") or "")
        if claims.get("channel") != channel or claims.get("sub", "") != self.client.user:
            raise codes.permission_denied()
        expires = self._expiry(claims)
        result: dict[str, Any] = {}
        if expires is None:
            self.channels[channel] = math.inf
        else:
            self.channels[channel] = self._now + expires
            result.update(expires=True, ttl=int(expires))
        self._reply(command, result)


_NO_INFO: Any = object()  # a subscription token without "info"


def _hook_data(value: Any) -> Any:
    """A command's ``data`` as hooks see it: a JSON value (JSON format) or bytes (Protobuf)."""
    return value.data if isinstance(value, RawData) else value


def _stored_text(data: Any) -> str:
    """Publication data as the hub stores it: Protobuf bytes as their UTF-8 text, anything
    else as JSON, strings included (so that JSON subscribers get back exactly what was sent)."""
    if isinstance(data, bytes):
        return RawData(data).text()
    try:
        return orjson.dumps(data).decode()
    except orjson.JSONEncodeError:  # nested deeper than JSON may be written back
        raise codes.bad_request("data cannot be published as JSON") from None


#: The handler of each command, by the protocol's method name.
HANDLERS: dict[str, Handler] = {
    "connect": CentrifugoProtocol._connect,
    "subscribe": CentrifugoProtocol._subscribe,
    "unsubscribe": CentrifugoProtocol._unsubscribe,
    "publish": CentrifugoProtocol._publish,
    "presence": CentrifugoProtocol._presence,
    "presence_stats": CentrifugoProtocol._presence_stats,
    "history": CentrifugoProtocol._history,
    "ping": CentrifugoProtocol._ping,
    "rpc": CentrifugoProtocol._rpc,
    "refresh": CentrifugoProtocol._refresh,
    "sub_refresh": CentrifugoProtocol._sub_refresh,
}
