"""One WebSocket client speaking Centrifugo's protocol: its commands, subscriptions and writer.

Like an SSE stream, a connection keeps no queue of publications: each of its channels is a hub
:class:`~sluiceway.hub.Subscription` (an offset into the topic's log), and its writer reads
what is new when the hub says so. A client that does not keep up falls behind in the log; past
its buffer it is disconnected with 3008 (slow) and recovers on reconnect, so nothing is lost
and the server's memory does not grow with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from sluiceway import __version__
from sluiceway.auth import AuthError, Grants, TokenError
from sluiceway.auth.resources import is_internal_topic
from sluiceway.centrifugo import codes, frames
from sluiceway.centrifugo.codes import Disconnect, ReplyError
from sluiceway.centrifugo.options import Client
from sluiceway.hub import (
    BackendUnavailable,
    CloseReason,
    HistoryGone,
    HubClosed,
    InvalidEventId,
    InvalidTopic,
    StreamState,
    Subscription,
    TooManyTopics,
    TopicFinished,
    check_topic_name,
)
from sluiceway.ids import Position

if TYPE_CHECKING:
    from sluiceway.centrifugo.endpoint import CentrifugoEndpoint

logger = logging.getLogger("sluiceway.centrifugo")

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]

#: The ``scope["extensions"]`` key under which a server offers a :class:`DirectWriter`.
DIRECT_WRITER = "sluiceway.direct_text_writer"


class DirectWriter(Protocol):
    """Writes whole text frames to the socket without a task switch (``sluiceway serve``
    offers one, see :mod:`sluiceway.server.native_ws`); without it, frames go through ASGI."""

    def writable(self) -> bool: ...

    def write_text(self, payload: bytes) -> None: ...

    async def wait_writable(self) -> bool:
        """Wait until the socket takes more; False when it never will (closing)."""
        ...

    def abort(self) -> None: ...


#: The method that handles each command (looked up per command, not stored per connection).
HANDLERS = {
    "connect": "_connect",
    "subscribe": "_subscribe",
    "unsubscribe": "_unsubscribe",
    "publish": "_publish",
    "presence": "_presence",
    "presence_stats": "_presence_stats",
    "history": "_history",
    "ping": "_ping",
    "refresh": "_refresh",
    "sub_refresh": "_sub_refresh",
}
REPLAY_ALL = 1 << 62  # take() limit for a subscribe reply: everything history holds
BATCH = 64  # events read from one channel at a time while filling a frame


class Connection:
    __slots__ = (
        "_close_started",
        "_direct",
        "_loop",
        "_more",
        "_out",
        "_refused_in_row",
        "_send",
        "_tokens",
        "_tokens_at",
        "_wakeup",
        "_writer",
        "channel_info",
        "client",
        "connected",
        "disconnect",
        "done",
        "endpoint",
        "expires_at",
        "granted_channels",
        "hub",
        "next_ping",
        "opened_at",
        "options",
        "paused",
        "pong_deadline",
        "sub_expires_at",
        "subscriptions",
        "writing_since",
    )

    def __init__(
        self,
        endpoint: CentrifugoEndpoint,
        send: Send,
        headers: list[tuple[bytes, bytes]],
        direct: DirectWriter | None = None,
    ) -> None:
        self.endpoint = endpoint
        self._direct = direct
        self.hub = endpoint.hub
        self.options = endpoint.options
        self._send = send
        self.client = Client(
            id=str(uuid.uuid4()),
            user="",
            claims={},
            info=None,
            raw_headers=headers,
            grants=self.options.anonymous_grants,
        )
        self.connected = False
        self.subscriptions: dict[str, Subscription] = {}
        self.channel_info: dict[str, Any] = {}  # chan_info from subscription tokens
        self.sub_expires_at: dict[str, float] = {}  # loop time when a subscription token ends
        #: Channels subscribed on the strength of the connection token's grants alone (made
        #: when first needed: most connections never have one), re-checked on refresh.
        self.granted_channels: set[str] | None = None
        self.disconnect: Disconnect | None = None
        self._out: list[bytes] = []  # replies and control pushes, sent before publications
        self._more = False  # the last frame collected was full
        self._wakeup: asyncio.Future[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._close_started = False  # the close frame is being (or was) sent
        self.writing_since = 0.0  # loop time when the current write began; 0 when not writing
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.opened_at = loop.time()
        self.expires_at: float | None = None
        self.next_ping = 0.0
        self.pong_deadline: float | None = None
        self._tokens = float(self.options.command_burst)
        self._tokens_at = self.opened_at
        self._refused_in_row = 0
        # Sink: the hub calls ready() when a followed topic has news. This writer keeps the
        # connection alive with the protocol's own pings, so the hub's SSE keep-alive is off
        # ("paused"), and "done" once the connection has ended.
        self.paused = True
        self.done = False

    # -- the reading side (the ASGI task) ----------------------------------------------------

    async def run(self, receive: Receive) -> None:
        if self._direct is None:
            self._writer = self._loop.create_task(self._write_loop())
        try:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    break
                if self.disconnect is not None:
                    continue  # closing: what the client still sends is moot
                frame = message.get("text")
                if frame is None:
                    try:
                        frame = (message.get("bytes") or b"").decode()
                    except UnicodeDecodeError:
                        self.close(codes.BAD_REQUEST)
                        continue
                await self._handle_frame(frame)
        finally:
            await self._end()

    async def _handle_frame(self, frame: str) -> None:
        if len(frame) > self.options.max_frame_bytes:
            self.close(codes.MESSAGE_TOO_LARGE)
            return
        try:
            commands = frames.parse_frame(frame)
        except Disconnect as disconnect:
            self.close(disconnect)
            return
        for command in commands:
            if self.disconnect is not None:
                return
            await self._dispatch(command)

    async def _dispatch(self, command: frames.Command) -> None:
        stats = self.endpoint.stats
        if command.method == "":
            self.pong_deadline = None  # the pong to our ping
            return
        if not self.connected and command.method != "connect":
            self.close(codes.BAD_REQUEST)  # the protocol starts with connect
            return
        if command.method == "send":
            return  # an asynchronous message: no reply, and no handler for it here
        if command.id == 0:
            self.close(codes.BAD_REQUEST)  # every other command expects a reply
            return
        stats.commands[command.method] = stats.commands.get(command.method, 0) + 1
        if not self._take_token():
            self._refused_in_row += 1
            if self._refused_in_row > self.options.command_burst:
                self.close(codes.TOO_MANY_REQUESTS)
            else:
                self._queue(frames.error_reply(command.id, codes.too_many_requests()))
            return
        self._refused_in_row = 0
        handler = HANDLERS.get(command.method)
        try:
            if handler is None:
                raise codes.method_not_found()
            await getattr(self, handler)(command)
        except ReplyError as error:
            self._queue(frames.error_reply(command.id, error))
        except Disconnect as disconnect:
            self.close(disconnect)
        except Exception:
            logger.exception("centrifugo %s command failed", command.method)
            self._queue(frames.error_reply(command.id, codes.internal()))

    def _take_token(self) -> bool:
        now = self._loop.time()
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

    # -- commands ----------------------------------------------------------------------------

    async def _connect(self, command: frames.Command) -> None:
        if self.connected:
            raise codes.BAD_REQUEST
        params = command.params
        token = params.get("token") or ""
        claims: dict[str, Any] = {}
        if token:
            claims = self._verify(token)
            user = claims.get("sub", "")
            if not isinstance(user, str):
                raise codes.INVALID_TOKEN
            self.client.user = user
            self.client.claims = claims
            self.client.info = claims.get("info")
            self.client.grants = self._grants(claims)
        elif not self.options.allow_anonymous:
            raise codes.INVALID_TOKEN  # terminal: retrying without a token cannot help
        data = None
        if self.options.hooks.on_connect is not None:
            data = await self.options.hooks.on_connect(self.client, params.get("data"))
        self.connected = True
        self.endpoint.stats.connects += 1
        now = self._loop.time()
        self.next_ping = now + self.options.ping_interval
        result: dict[str, Any] = {
            "client": self.client.id,
            "version": __version__,
            "ping": round(self.options.ping_interval),
            "pong": True,
        }
        expires = self._expiry(claims)
        if expires is not None:
            self.expires_at = now + expires
            result.update(expires=True, ttl=int(expires))
        if data is not None:
            result["data"] = data
        # The token's "channels": server-side subscriptions, recovered from the positions the
        # client sends in "subs".
        channels = claims.get("channels") or []
        if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
            raise codes.INVALID_TOKEN
        for channel in channels:
            self._check_channel(channel)  # a signed token names no internal topic either
        subs_param = params.get("subs")
        positions: dict[str, Any] = subs_param if isinstance(subs_param, dict) else {}
        subscribed: list[tuple[str, Subscription]] = []
        try:
            subs: dict[str, Any] = {}
            for channel in channels:
                found = positions.get(channel)
                wanted: dict[str, Any] = found if isinstance(found, dict) else {}
                subscription, subs[channel] = await self._open(channel, wanted, server_side=True)
                subscribed.append((channel, subscription))
        except BaseException:
            for _, subscription in subscribed:
                subscription.release()
            raise
        if subs:
            result["subs"] = subs
        self._queue(frames.reply(command.id, "connect", result))
        for channel, subscription in subscribed:
            await self._follow(channel, subscription)

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

    def _expiry(self, claims: dict[str, Any]) -> float | None:
        """Seconds until a token's ``exp`` (None when it has none)."""
        exp = claims.get("exp")
        if not isinstance(exp, int | float):
            return None
        return max(0.0, exp - time.time())

    async def _subscribe(self, command: frames.Command) -> None:
        channel = self._channel(command.params)
        subscription, result = await self._open(channel, command.params)
        self._queue(frames.reply(command.id, "subscribe", result))
        await self._follow(channel, subscription)

    async def _open(
        self, channel: str, params: dict[str, Any], *, server_side: bool = False
    ) -> tuple[Subscription, dict[str, Any]]:
        """Subscribe to ``channel`` in the hub and build the subscribe result, with the missed
        publications when recovering. The caller queues the result, then :meth:`_follow`s: so
        the result always reaches the client before the channel's next publications."""
        if channel in self.subscriptions:
            raise codes.already_subscribed()
        if len(self.subscriptions) >= self.options.max_channels:
            raise codes.limit_exceeded()
        expires = None
        if not server_side:
            expires = await self._authorize_subscribe(channel, params)
        recover = params.get("recover") is True
        epoch = params.get("epoch") or ""
        offset = params.get("offset") or 0
        if not isinstance(epoch, str) or not isinstance(offset, int) or offset < 0:
            raise codes.bad_request("epoch must be a string and offset a non-negative integer")
        cursor = str(Position(epoch, offset)) if recover and epoch else None
        lost = False
        try:
            try:
                subscription = await self.hub.subscribe([channel], last_event_id=cursor)
            except InvalidEventId:  # an epoch that was never one of ours
                subscription = await self.hub.subscribe([channel])
                lost = True
        except InvalidTopic:
            raise codes.unknown_channel() from None
        except TooManyTopics:
            raise codes.limit_exceeded() from None
        except BackendUnavailable:
            raise codes.internal() from None
        except HubClosed:
            raise codes.SHUTDOWN from None
        topic = subscription.log
        result: dict[str, Any] = {
            "recoverable": True,
            "positioned": True,
            "epoch": topic.epoch,
        }
        if recover:
            if not epoch:
                # "since offset 0": whatever history holds, whole only if nothing was trimmed.
                recovered = offset == 0 and topic.base == 1
                if offset == 0:
                    subscription.rewind()
            else:
                recovered = not (lost or subscription.lost)
            publications = self._replay(channel, subscription)
            result.update(was_recovering=True, recovered=recovered)
            if publications:
                result["publications"] = publications
        result["offset"] = subscription.offset
        if expires is not None:
            self.sub_expires_at[channel] = self._loop.time() + expires
            result.update(expires=True, ttl=int(expires))
        return subscription, result

    def _replay(self, channel: str, subscription: Subscription) -> list[orjson.Fragment]:
        taken = subscription.take(REPLAY_ALL)
        if taken is None:
            return []
        topic = subscription.log
        return [
            orjson.Fragment(self.endpoint.publication_for(topic, offset))
            for offset in range(taken[0] + 1, taken[1] + 1)
        ]

    async def _follow(self, channel: str, subscription: Subscription) -> None:
        if self.disconnect is not None or self.done:
            subscription.release()
            return
        self.subscriptions[channel] = subscription
        subscription.attach(self)
        info = {"user": self.client.user, "client": self.client.id}
        if self.client.info is not None:
            info["conn_info"] = self.client.info
        if channel in self.channel_info:
            info["chan_info"] = self.channel_info[channel]
        try:
            await self.endpoint.presence.add(channel, self.client.id, info)
        except Exception:  # presence is advisory, and the sweeper renews it
            logger.warning("could not record presence in %r", channel, exc_info=True)

    async def _authorize_subscribe(self, channel: str, params: dict[str, Any]) -> float | None:
        """Raise unless this client may subscribe; the subscription token's lifetime, if any."""
        token = params.get("token")
        expires = None
        claims = None
        if token:
            claims = self._verify(token)
            if claims.get("channel") != channel or claims.get("sub", "") != self.client.user:
                raise codes.permission_denied()
            expires = self._expiry(claims)
            if "info" in claims:
                self.channel_info[channel] = claims["info"]
        elif not self.options.may_subscribe(self.client, channel):
            # The rules of every path (sluiceway.auth.resources.may_read_topic): "$name"
            # needs a grant on it, "name#users" one of its users or a grant naming it.
            raise codes.permission_denied()
        elif self.client.grants is not self.options.anonymous_grants:
            if self.granted_channels is None:
                self.granted_channels = set()
            self.granted_channels.add(channel)
        if self.options.hooks.on_subscribe is not None:
            await self.options.hooks.on_subscribe(self.client, channel, params.get("data"))
        return expires

    def _channel(self, params: dict[str, Any]) -> str:
        channel = params.get("channel")
        if not isinstance(channel, str) or not channel:
            raise codes.bad_request("channel is required")
        return self._check_channel(channel)

    @staticmethod
    def _check_channel(channel: str) -> str:
        try:
            check_topic_name(channel)
        except InvalidTopic:
            raise codes.unknown_channel() from None
        if is_internal_topic(channel):
            # The server's own topics (the Mercure log, generations, jobs): no channel.
            raise codes.permission_denied()
        return channel

    async def _unsubscribe(self, command: frames.Command) -> None:
        channel = self._channel(command.params)
        await self._drop(channel)
        self._queue(frames.reply(command.id, "unsubscribe"))

    async def _drop(self, channel: str) -> None:
        subscription = self.subscriptions.pop(channel, None)
        self.sub_expires_at.pop(channel, None)
        self.channel_info.pop(channel, None)
        if self.granted_channels is not None:
            self.granted_channels.discard(channel)
        if subscription is not None:
            subscription.release()
            await self.endpoint.presence.remove(channel, self.client.id)

    async def _publish(self, command: frames.Command) -> None:
        channel = self._channel(command.params)
        if "data" not in command.params:
            raise codes.bad_request("data is required")
        if not self.options.may_publish(self.client, channel):
            raise codes.permission_denied()
        data = command.params["data"]
        if self.options.hooks.on_publish is not None:
            data = await self.options.hooks.on_publish(self.client, channel, data)
        try:
            # Always JSON, strings included, so that subscribers get back exactly what was sent.
            text = orjson.dumps(data).decode()
        except orjson.JSONEncodeError:  # nested deeper than JSON may be written back
            raise codes.bad_request("data cannot be published as JSON") from None
        try:
            await self.hub.publish(channel, text)
        except TopicFinished:
            raise codes.permission_denied() from None
        except BackendUnavailable:
            raise codes.internal() from None
        except HubClosed:
            raise codes.SHUTDOWN from None
        except TooManyTopics:
            raise codes.limit_exceeded() from None
        self._queue(frames.reply(command.id, "publish"))

    def _subscribed(self, params: dict[str, Any]) -> str:
        channel = self._channel(params)
        if channel not in self.subscriptions:
            raise codes.permission_denied()  # history and presence are for subscribers
        return channel

    async def _presence(self, command: frames.Command) -> None:
        channel = self._subscribed(command.params)
        presence = await self.endpoint.presence.get(channel)
        self._queue(frames.reply(command.id, "presence", {"presence": presence}))

    async def _presence_stats(self, command: frames.Command) -> None:
        channel = self._subscribed(command.params)
        presence = await self.endpoint.presence.get(channel)
        users = {info.get("user", "") for info in presence.values()}
        result = {"num_clients": len(presence), "num_users": len(users)}
        self._queue(frames.reply(command.id, "presence_stats", result))

    async def _history(self, command: frames.Command) -> None:
        params = command.params
        channel = self._subscribed(params)
        limit = params.get("limit", 0)
        reverse = params.get("reverse") is True
        since = params.get("since")
        if not isinstance(limit, int) or (since is not None and not isinstance(since, dict)):
            raise codes.bad_request("limit must be an integer and since an object")
        topic = self.subscriptions[channel].log
        after = None
        if since is not None:
            epoch, offset = since.get("epoch", ""), since.get("offset", 0)
            if not isinstance(epoch, str) or not isinstance(offset, int) or offset < 0:
                raise codes.bad_request("since needs an epoch and an offset")
            after = str(Position(epoch, offset))
        publications: list[orjson.Fragment] = []
        if limit != 0:
            try:
                page = await self.hub.history(
                    channel, None if reverse else after, self.hub.config.history_size
                )
            except (HistoryGone, InvalidEventId):
                raise codes.unrecoverable_position() from None
            offsets = [event.offset for event in page.events]
            if reverse:
                if since is not None:
                    if since.get("epoch") != topic.epoch:
                        raise codes.unrecoverable_position()
                    offsets = [o for o in offsets if o < since["offset"]]
                offsets.reverse()
            if limit > 0:
                offsets = offsets[:limit]
            publications = [
                orjson.Fragment(self.endpoint.publication_for(topic, offset))
                for offset in offsets
                if offset >= topic.base  # trimmed meanwhile
            ]
        result = {"publications": publications, "epoch": topic.epoch, "offset": topic.head}
        self._queue(frames.reply(command.id, "history", result))

    async def _ping(self, command: frames.Command) -> None:
        self._queue(frames.reply(command.id, "ping"))

    async def _refresh(self, command: frames.Command) -> None:
        claims = self._verify(command.params.get("token") or "")
        if claims.get("sub", "") != self.client.user:
            raise codes.INVALID_TOKEN
        self.client.grants = self._grants(claims)
        expires = self._expiry(claims)
        self.expires_at = None if expires is None else self._loop.time() + expires
        result: dict[str, Any] = {"client": self.client.id, "version": __version__}
        if expires is not None:
            result.update(expires=True, ttl=int(expires))
        self._queue(frames.reply(command.id, "refresh", result))
        # The new token may grant less: leave the channels it no longer allows.
        for channel in sorted(self.granted_channels or ()):
            if channel in self.subscriptions and not self.options.may_subscribe(
                self.client, channel
            ):
                await self._drop(channel)
                body = {"code": codes.UNSUBSCRIBE_SERVER, "reason": "permission revoked"}
                self._queue(frames.push(channel, "unsubscribe", body))

    async def _sub_refresh(self, command: frames.Command) -> None:
        channel = self._subscribed(command.params)
        claims = self._verify(command.params.get("token") or "")
        if claims.get("channel") != channel or claims.get("sub", "") != self.client.user:
            raise codes.permission_denied()
        expires = self._expiry(claims)
        result: dict[str, Any] = {}
        if expires is None:
            self.sub_expires_at.pop(channel, None)
        else:
            self.sub_expires_at[channel] = self._loop.time() + expires
            result.update(expires=True, ttl=int(expires))
        self._queue(frames.reply(command.id, "sub_refresh", result))

    # -- the writing side --------------------------------------------------------------------

    def _queue(self, frame: bytes) -> None:
        self._out.append(frame)
        self._kick()

    def _kick(self) -> None:
        if self.done or self._close_started:
            return
        if self._direct is not None:
            if self._writer is None:
                self._write_direct()
            return  # a writer task is waiting for the socket (or closing): it looks again
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    def _write_direct(self) -> None:
        """Write what is pending now, from this callback, while the socket takes it. A task
        is started only for what has to wait: a full socket, or the closing handshake; an
        idle connection has none."""
        direct = self._direct
        assert direct is not None
        while self.disconnect is None and direct.writable():
            frame = self._collect()
            if frame is None:
                return
            direct.write_text(frame)
            if not self._more:
                return  # everything pending fitted in that frame
        if self._writer is None:  # (closing may have started one meanwhile)
            self._writer = self._loop.create_task(self._write_loop())

    def ready(self) -> None:
        """Called by the hub: a followed channel has news, or a subscription was closed."""
        if self.done:
            return
        if self.writing_since:
            # Blocked in a write, the writer reads nothing: the log is where a slow client's
            # backlog grows, so check its bounds here.
            for subscription in self.subscriptions.values():
                subscription.check_lag()
            if any(s.close_reason is CloseReason.OVERFLOW for s in self.subscriptions.values()):
                self.abort(codes.SLOW)
                return
        self._kick()

    def ping(self) -> None:
        """Send the protocol's ping; the client must answer within ``pong_timeout``."""
        self._queue(frames.PING)
        if self.pong_deadline is None:
            self.pong_deadline = self._loop.time() + self.options.pong_timeout

    def close(self, disconnect: Disconnect) -> None:
        """Send what is queued, then close with ``disconnect``."""
        self._decide(disconnect)
        self._kick()

    def abort(self, disconnect: Disconnect) -> None:
        """Close a connection whose writer is stuck in a write: drop the write, then try to
        send the close frame for at most the write timeout."""
        self._decide(disconnect)
        writer = self._writer
        if writer is not None and not writer.done():
            writer.cancel()
        self.writing_since = 0.0
        if not self._close_started:
            self._close_started = True
            within = self.hub.config.write_timeout
            self._writer = self._loop.create_task(self._send_close(within=within))

    def _decide(self, disconnect: Disconnect) -> None:
        """The first reason to close wins; nothing more is read from the hub after it."""
        if self.disconnect is None:
            self.disconnect = disconnect
            self.endpoint.stats.count_disconnect(disconnect.code)
            self._release_all()

    def _release_all(self) -> None:
        for subscription in self.subscriptions.values():
            subscription.release()

    async def _write_loop(self) -> None:
        """Through ASGI: the connection's writer for its whole life. With a direct writer:
        started when the socket is full or the connection closes, gone once drained."""
        direct = self._direct
        try:
            while True:
                if direct is not None and not direct.writable():
                    self.writing_since = self._loop.time()
                    if not await direct.wait_writable():
                        raise ConnectionResetError  # gone: the reading side ends it
                    self.writing_since = 0.0
                    continue
                frame = self._collect()
                if frame is not None:
                    if direct is not None:
                        direct.write_text(frame)
                        continue
                    self.writing_since = self._loop.time()
                    await self._send({"type": "websocket.send", "text": frame.decode()})
                    self.writing_since = 0.0
                    continue
                if self.disconnect is not None:
                    break
                if direct is not None:
                    self._writer = None  # drained: callbacks write directly again
                    return
                self._wakeup = self._loop.create_future()
                await self._wakeup
                self._wakeup = None
        except OSError:  # the client is gone; the reading side ends the connection
            self.done = True
            return
        if not self._close_started:
            self._close_started = True
            await self._send_close(within=None)

    async def _send_close(self, *, within: float | None) -> None:
        disconnect = self.disconnect or codes.SHUTDOWN
        message = {"type": "websocket.close", "code": disconnect.code, "reason": disconnect.reason}
        try:
            await asyncio.wait_for(self._send(message), within)
        except TimeoutError:
            if self._direct is not None:
                self._direct.abort()  # it reads nothing: drop it rather than wait
        except (OSError, RuntimeError):
            pass  # already gone

    def _collect(self) -> bytes | None:
        """Replies first, then the publications of every channel, joined into one frame of
        about ``max_send_frame_bytes`` at most."""
        parts = self._out
        self._out = []
        self._more = False
        if self.disconnect is None:
            budget = self.options.max_send_frame_bytes - sum(map(len, parts))
            for channel, subscription in list(self.subscriptions.items()):
                budget = self._read(channel, subscription, parts, budget)
                if subscription.close_reason is not None:
                    self._closed_by_hub(channel, subscription, parts)
            # The frame is full: more may be waiting in the logs.
            self._more = budget <= 0
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else b"\n".join(parts)

    def _read(
        self, channel: str, subscription: Subscription, parts: list[bytes], budget: int
    ) -> int:
        topic = subscription.log
        push_for = self.endpoint.push_for
        delivered = 0
        while budget > 0:
            taken = subscription.take(BATCH)
            if taken is None:
                break
            for offset in range(taken[0] + 1, taken[1] + 1):
                push = push_for(topic, channel, offset)
                parts.append(push)
                budget -= len(push)
            delivered += taken[1] - taken[0]
        self.endpoint.stats.delivered += delivered
        return budget

    def _closed_by_hub(self, channel: str, subscription: Subscription, parts: list[bytes]) -> None:
        reason = subscription.close_reason
        drained = subscription.drained
        if reason is CloseReason.OVERFLOW:
            self.close(codes.SLOW)
        elif reason is CloseReason.RESYNC:
            self.close(codes.INSUFFICIENT_STATE)  # reconnect: recovery then says what is lost
        elif subscription.state is StreamState.ABORTED:
            self.abort(codes.WRITE_ERROR)
        elif not drained:
            return  # flushing what was published before it closed
        elif reason is CloseReason.COMPLETE:
            del self.subscriptions[channel]
            subscription.release()
            body = {"code": codes.UNSUBSCRIBE_SERVER, "reason": "finished"}
            parts.append(frames.push(channel, "unsubscribe", body))
        elif reason is CloseReason.SHUTDOWN:
            self.close(codes.SHUTDOWN)

    # -- the end -----------------------------------------------------------------------------

    async def _end(self) -> None:
        self.done = True
        if self.disconnect is None:
            self.endpoint.stats.count_disconnect(3000)
        self._release_all()
        if self._writer is not None:
            self._writer.cancel()
        channels = list(self.subscriptions)
        self.subscriptions.clear()
        for channel in channels:
            with contextlib.suppress(Exception):
                await self.endpoint.presence.remove(channel, self.client.id)
        hook = self.options.hooks.on_disconnect
        if hook is not None and self.connected:
            disconnect = self.disconnect or Disconnect(3000, "connection closed")
            try:
                await hook(self.client, disconnect.code, disconnect.reason)
            except Exception:
                logger.exception("on_disconnect hook failed")
