"""One WebSocket client speaking Centrifugo's protocol: the asyncio side of it.

The protocol itself (commands, replies, tokens, deadlines) is
:class:`~sluiceway.centrifugo.protocol.CentrifugoProtocol`, which does no I/O. A
:class:`Connection` owns the socket and the hub's subscriptions: it feeds the protocol what the
client sends, executes what it requests (subscribe, publish, presence, hooks...) and writes
what it has to send, ahead of the channels' publications.

Like an SSE stream, a connection keeps no queue of publications: each of its channels is a hub
:class:`~sluiceway.hub.Subscription` (an offset into the topic's log), and its writer reads
what is new when the hub says so. It follows the hub's writer contract: its subscriptions are
marked blocked while its socket takes nothing, so the hub applies the write timeout (3009) and
the buffer bounds (3008, slow) to it as to every writer. A client that does not keep up falls
behind in the log and recovers on reconnect, so nothing is lost and the server's memory does
not grow with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from sluiceway.centrifugo import codes, join_leave
from sluiceway.centrifugo.codec import JSON, Codec
from sluiceway.centrifugo.codes import Disconnect
from sluiceway.centrifugo.filters import Filter
from sluiceway.centrifugo.options import Client
from sluiceway.centrifugo.protocol import (
    CentrifugoProtocol,
    ClientInfo,
    ConnectHook,
    Follow,
    GetHistory,
    GetPresence,
    History,
    Publish,
    PublishHook,
    Request,
    RpcHook,
    Subscribe,
    Subscribed,
    SubscribeHook,
    Unsubscribe,
)
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
)

if TYPE_CHECKING:
    from sluiceway.centrifugo.endpoint import CentrifugoEndpoint

logger = logging.getLogger("sluiceway.centrifugo")

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]

#: The ``scope["extensions"]`` key under which a server offers a :class:`DirectWriter`.
DIRECT_WRITER = "sluiceway.direct_text_writer"


class DirectWriter(Protocol):
    """Writes whole frames to the socket without a task switch (``sluiceway serve`` offers
    one, see :mod:`sluiceway.server.native_ws`); without it, frames go through ASGI."""

    def writable(self) -> bool: ...

    def write_text(self, payload: bytes) -> None: ...

    def write_binary(self, payload: bytes) -> None: ...

    async def wait_writable(self) -> bool:
        """Wait until the socket takes more; False when it never will (closing)."""
        ...

    def abort(self) -> None: ...


REPLAY_ALL = 1 << 62  # take() limit for a subscribe reply: everything history holds
BATCH = 64  # events read from one channel at a time while filling a frame

#: What the hub's refusals answer, per request.
SUBSCRIBE_ERRORS: dict[type[Exception], Callable[[], Exception]] = {
    InvalidTopic: codes.unknown_channel,
    TooManyTopics: codes.limit_exceeded,
    BackendUnavailable: codes.internal,
    HubClosed: lambda: codes.SHUTDOWN,
}
PUBLISH_ERRORS: dict[type[Exception], Callable[[], Exception]] = {
    TopicFinished: codes.permission_denied,
    BackendUnavailable: codes.internal,
    HubClosed: lambda: codes.SHUTDOWN,
    TooManyTopics: codes.limit_exceeded,
}
HISTORY_ERRORS: dict[type[Exception], Callable[[], Exception]] = {
    HistoryGone: codes.unrecoverable_position,
    InvalidEventId: codes.unrecoverable_position,
}


def _translated(error: Exception, table: dict[type[Exception], Callable[[], Exception]]) -> None:
    for kind, answer in table.items():
        if isinstance(error, kind):
            raise answer() from None


class Connection:
    __slots__ = (
        "_blocked_since",
        "_close_started",
        "_direct",
        "_loop",
        "_more",
        "_opening",
        "_send",
        "_wakeup",
        "_writer",
        "codec",
        "deltas",
        "disconnect",
        "done",
        "endpoint",
        "filters",
        "hearing",
        "hub",
        "options",
        "paused",
        "protocol",
        "subscriptions",
    )

    def __init__(
        self,
        endpoint: CentrifugoEndpoint,
        send: Send,
        headers: list[tuple[bytes, bytes]],
        direct: DirectWriter | None = None,
        codec: Codec = JSON,
    ) -> None:
        self.endpoint = endpoint
        self._direct = direct
        self.hub = endpoint.hub
        self.options = endpoint.options
        self._send = send
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.protocol = CentrifugoProtocol(
            endpoint.options, loop.time(), headers=headers, stats=endpoint.stats, codec=codec
        )
        self.codec = codec
        self.subscriptions: dict[str, Subscription] = {}  # followed, in the protocol's channels
        #: Channels sent as fossil deltas: whether the previous offset was sent (made when
        #: first needed).
        self.deltas: dict[str, bool] | None = None
        #: Channels with a tags filter (made when first needed).
        self.filters: dict[str, Filter] | None = None
        #: The channels whose joins and leaves this client hears (made when first needed).
        self.hearing: dict[str, Subscription] | None = None
        #: Subscribed in the hub by the running command, not followed yet (made when needed).
        self._opening: dict[str, Subscription] | None = None
        self.disconnect: Disconnect | None = None  # the protocol's, once acted on
        self._more = False  # the last frame collected was full
        self._wakeup: asyncio.Future[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._close_started = False  # the close frame is being (or was) sent
        self._blocked_since: float | None = None  # loop time since when no write completed
        # Sink: the hub calls ready() when a followed topic has news. This writer keeps the
        # connection alive with the protocol's own pings, so the hub's SSE keep-alive is off
        # ("paused"), and "done" once the connection has ended.
        self.paused = True
        self.done = False

    @property
    def client(self) -> Client:
        return self.protocol.client

    # -- the reading side (the ASGI task) ----------------------------------------------------

    async def run(self, receive: Receive) -> None:
        if self._direct is None:
            self._writer = self._loop.create_task(self._write_loop())
        protocol = self.protocol
        try:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text")
                if text is not None:
                    protocol.receive_text(text, self._loop.time())
                else:
                    protocol.receive_bytes(message.get("bytes") or b"", self._loop.time())
                await self._serve()
        finally:
            await self._end()

    async def _serve(self) -> None:
        """Execute what the protocol requests until it waits for the client again."""
        protocol = self.protocol
        try:
            while True:
                self._sync()
                request = protocol.next_request()
                if request is None:
                    return
                try:
                    result = await self._execute(request)
                except Exception as error:  # answered by the protocol (logged there)
                    protocol.fail(request, error)
                else:
                    protocol.resolve(request, result)
        finally:
            opening = self._opening
            if opening is not None:  # subscribed by a command that failed before following
                for subscription in opening.values():
                    subscription.release()
                self._opening = None

    async def _execute(self, request: Request[Any]) -> Any:
        hooks = self.options.hooks
        match request:
            case Subscribe():
                return await self._subscribe(request)
            case Follow():
                return await self._follow(request)
            case Unsubscribe():
                return await self._unsubscribe(request.channel, request.info)
            case Publish():
                try:
                    await self.hub.publish(request.channel, request.data)
                except Exception as error:
                    _translated(error, PUBLISH_ERRORS)
                    raise
                return None
            case GetPresence():
                return await self.endpoint.presence.get(request.channel)
            case GetHistory():
                return await self._history(request)
            case ConnectHook():
                assert hooks.on_connect is not None
                return await self._hook(hooks.on_connect(request.client, request.data))
            case SubscribeHook():
                assert hooks.on_subscribe is not None
                call = hooks.on_subscribe(request.client, request.channel, request.data)
                return await self._hook(call)
            case PublishHook():
                assert hooks.on_publish is not None
                call = hooks.on_publish(request.client, request.channel, request.data)
                return await self._hook(call)
            case RpcHook():
                assert hooks.on_rpc is not None
                return await self._hook(hooks.on_rpc(request.client, request.method, request.data))
        raise TypeError(f"unknown request {request!r}")

    async def _hook(self, call: Awaitable[Any]) -> Any:
        """An application hook's result, within ``hook_timeout``."""
        try:
            async with asyncio.timeout(self.options.hook_timeout):
                return await call
        except TimeoutError:
            logger.warning("a hook took longer than %.1f s", self.options.hook_timeout)
            raise codes.hook_timeout() from None

    async def _subscribe(self, request: Subscribe) -> Subscribed:
        channel = request.channel
        lost = False
        try:
            try:
                subscription = await self.hub.subscribe([channel], last_event_id=request.cursor)
            except InvalidEventId:  # an epoch that was never one of ours
                subscription = await self.hub.subscribe([channel])
                lost = True
        except Exception as error:
            _translated(error, SUBSCRIBE_ERRORS)
            raise
        if self._opening is None:
            self._opening = {}
        previous = self._opening.pop(channel, None)
        if previous is not None:
            previous.release()
        self._opening[channel] = subscription
        if request.rewind:
            subscription.rewind()
        topic = subscription.log
        base = topic.base
        publications = (
            self._replay(subscription, request.delta, request.tags_filter) if request.replay else []
        )
        return Subscribed(
            topic.epoch, subscription.offset, base, lost or subscription.lost, publications
        )

    def _replay(
        self, subscription: Subscription, delta: bool, tags_filter: Filter | None
    ) -> list[bytes]:
        taken = subscription.take(REPLAY_ALL)
        if taken is None:
            return []
        topic = subscription.log
        endpoint = self.endpoint
        codec = self.codec
        return [
            endpoint.publication_for(topic, offset, codec, delta)
            for offset in range(taken[0] + 1, taken[1] + 1)
            if tags_filter is None or endpoint.matches(topic, offset, tags_filter)
        ]

    async def _follow(self, request: Follow) -> None:
        channel = request.channel
        subscription = self._opening.pop(channel, None) if self._opening else None
        if subscription is None:
            return
        if self.disconnect is not None or self.done:
            subscription.release()
            return
        previous = self.subscriptions.get(channel)
        if previous is not None:
            previous.release()
        self.subscriptions[channel] = subscription
        if request.delta:
            if self.deltas is None:
                self.deltas = {}
            self.deltas[channel] = False  # the first push goes whole
        if request.tags_filter is not None:
            if self.filters is None:
                self.filters = {}
            self.filters[channel] = request.tags_filter
        if self._blocked_since is not None:
            subscription.blocked(self._blocked_since)
        subscription.attach(self)
        if request.join_leave:  # before our own join: the client hears it too
            await self._hear_join_leave(channel)
        try:
            await self.endpoint.presence.add(channel, self.protocol.client.id, request.info)
        except Exception:  # presence is advisory, and the sweeper renews it
            logger.warning("could not record presence in %r", channel, exc_info=True)
        await self._announce(channel, join_leave.JOIN, request.info)

    async def _unsubscribe(self, channel: str, info: ClientInfo) -> None:
        subscription = self.subscriptions.pop(channel, None)
        self._stop_hearing(channel)
        if self.deltas is not None:
            self.deltas.pop(channel, None)
        if self.filters is not None:
            self.filters.pop(channel, None)
        if subscription is not None:
            subscription.release()
            await self.endpoint.presence.remove(channel, self.protocol.client.id)
            await self._announce(channel, join_leave.LEAVE, info)

    # -- joins and leaves (see sluiceway.centrifugo.join_leave) ------------------------------

    async def _hear_join_leave(self, channel: str) -> None:
        """Follow the channel's joins and leaves from now on."""
        try:
            heard = await self.hub.subscribe([join_leave.topic_of(channel)])
        except Exception:  # the channel itself is followed: only its joins are missing
            logger.warning("cannot follow the joins and leaves of %r", channel, exc_info=True)
            return
        if self.hearing is None:
            self.hearing = {}
        self._stop_hearing(channel)
        self.hearing[channel] = heard
        heard.attach(self)

    def _stop_hearing(self, channel: str) -> None:
        if self.hearing is not None and (heard := self.hearing.pop(channel, None)):
            heard.release()

    async def _announce(self, channel: str, kind: str, info: ClientInfo) -> None:
        if not self.options.announces_join_leave(channel):
            return
        try:
            await self.hub.publish(join_leave.topic_of(channel), info, event=kind)
        except Exception:  # announcements are advisory; presence still says who is there
            logger.warning("could not announce a %s in %r", kind, channel, exc_info=True)

    def _read_join_leave(self, parts: list[bytes]) -> None:
        assert self.hearing is not None
        push = self.codec.push
        for channel, heard in list(self.hearing.items()):
            topic = heard.log
            while (taken := heard.take(BATCH)) is not None:
                for offset in range(taken[0] + 1, taken[1] + 1):
                    kind, data, _ = topic.record_at(offset)
                    if kind in (join_leave.JOIN, join_leave.LEAVE):
                        parts.append(push(channel, kind, {"info": orjson.loads(data)}))
            if heard.close_reason is not None:  # best effort: overflow or resync end them
                self._stop_hearing(channel)

    async def _history(self, request: GetHistory) -> History:
        subscription = self.subscriptions.get(request.channel)
        if subscription is None:
            raise codes.permission_denied()
        offsets: list[int] = []
        if request.fetch:
            hub = self.hub
            try:
                page = await hub.history(request.channel, request.after, hub.config.history_size)
            except Exception as error:
                _translated(error, HISTORY_ERRORS)
                raise
            offsets = [event.offset for event in page.events]
        topic = subscription.log
        return History(
            topic.epoch,
            topic.head,
            topic.base,
            offsets,
            partial(self.endpoint.publication_for, topic, codec=self.codec),
        )

    def _sync(self) -> None:
        """Act on what the protocol decided: a close, frames to send."""
        disconnect = self.protocol.disconnect
        if disconnect is not None and self.disconnect is None:
            self.disconnect = disconnect
            self._release_all()  # nothing more is read from the hub
        if self.protocol.wants_write or disconnect is not None:
            self._kick()

    # -- driven by the endpoint --------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Once a second: the protocol's deadlines and pings; and the write timeout of a
        connection the hub does not watch (no subscription, or closing)."""
        blocked_since = self._blocked_since
        if (
            blocked_since is not None
            and (self.disconnect is not None or not self.subscriptions)
            and now - blocked_since > self.hub.config.write_timeout
        ):
            self.abort(codes.WRITE_ERROR)
            return
        if self.disconnect is None:
            self.protocol.tick(now)
            self._sync()

    def close(self, disconnect: Disconnect) -> None:
        """Send what is queued, then close with ``disconnect``."""
        self.protocol.close(disconnect)
        self._sync()

    # -- the writing side --------------------------------------------------------------------

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
            self._write_frame(direct, frame)
            if not self._more:
                return  # everything pending fitted in that frame
        if self._writer is None:  # (closing may have started one meanwhile)
            self._writer = self._loop.create_task(self._write_loop())

    def ready(self) -> None:
        """Called by the hub: a followed channel has news, or a subscription was closed."""
        if self.done:
            return
        if self._blocked_since is not None:
            # Blocked, the writer reads nothing: the log is where a slow client's backlog
            # grows, so its bounds are checked as news comes, not only at the hub's next sweep
            # (which applies them too, and the write timeout); an aborted stream ends it now.
            for subscription in self.subscriptions.values():
                if subscription.state.sends:
                    subscription.check_lag()
                if subscription.state is StreamState.ABORTED:
                    slow = subscription.close_reason is CloseReason.OVERFLOW
                    self.abort(codes.SLOW if slow else codes.WRITE_ERROR)
                    return
        self._kick()

    def abort(self, disconnect: Disconnect) -> None:
        """Close a connection whose writer is stuck in a write: drop the write, then try to
        send the close frame for at most the write timeout."""
        protocol = self.protocol
        protocol.close(disconnect)
        if self.disconnect is None:
            self.disconnect = protocol.disconnect
            self._release_all()
        writer = self._writer
        if writer is not None and not writer.done():
            writer.cancel()
        self._blocked_since = None
        if not self._close_started:
            self._close_started = True
            within = self.hub.config.write_timeout
            self._writer = self._loop.create_task(self._send_close(within=within))

    def _release_all(self) -> None:
        for subscription in self.subscriptions.values():
            subscription.release()
        if self.hearing is not None:
            for heard in self.hearing.values():
                heard.release()
            self.hearing = None

    def _blocked(self) -> None:
        now = self._loop.time()
        self._blocked_since = now
        for subscription in self.subscriptions.values():
            subscription.blocked(now)

    def _unblocked(self) -> None:
        self._blocked_since = None
        now = self._loop.time()
        for subscription in self.subscriptions.values():
            subscription.sent(0, now)

    async def _write_loop(self) -> None:
        """Through ASGI: the connection's writer for its whole life. With a direct writer:
        started when the socket is full or the connection closes, gone once drained."""
        direct = self._direct
        try:
            while True:
                if direct is not None and not direct.writable():
                    self._blocked()
                    if not await direct.wait_writable():
                        raise ConnectionResetError  # gone: the reading side ends it
                    self._unblocked()
                    continue
                frame = self._collect()
                if frame is not None:
                    if direct is not None:
                        self._write_frame(direct, frame)
                        continue
                    self._blocked()
                    if self.codec.binary:
                        await self._send({"type": "websocket.send", "bytes": frame})
                    else:
                        await self._send({"type": "websocket.send", "text": frame.decode()})
                    self._unblocked()
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

    def _write_frame(self, direct: DirectWriter, frame: bytes) -> None:
        if self.codec.binary:
            direct.write_binary(frame)
        else:
            direct.write_text(frame)

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
        parts = self.protocol.data_to_send()
        self._more = False
        if self.disconnect is None:
            budget = self.options.max_send_frame_bytes - sum(map(len, parts))
            finished = False
            if self.hearing:
                self._read_join_leave(parts)
            for channel, subscription in list(self.subscriptions.items()):
                budget = self._read(channel, subscription, parts, budget)
                if subscription.close_reason is not None:
                    finished = self._closed_by_hub(channel, subscription) or finished
            if finished:  # the unsubscribe pushes of finished channels
                parts += self.protocol.data_to_send()
            # The frame is full: more may be waiting in the logs.
            self._more = budget <= 0
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else self.codec.separator.join(parts)

    def _read(
        self, channel: str, subscription: Subscription, parts: list[bytes], budget: int
    ) -> int:
        topic = subscription.log
        push_for = self.endpoint.push_for
        codec = self.codec
        deltas = self.deltas
        with_deltas = deltas is not None and channel in deltas
        tags_filter = self.filters.get(channel) if self.filters is not None else None
        matches = self.endpoint.matches
        delivered = 0
        while budget > 0:
            taken = subscription.take(BATCH)
            if taken is None:
                break
            for offset in range(taken[0] + 1, taken[1] + 1):
                if tags_filter is not None and not matches(topic, offset, tags_filter):
                    continue
                if with_deltas:
                    assert deltas is not None
                    # The subscription reads its log in order: after its first push, each
                    # one follows the offset sent before it.
                    push = self.endpoint.delta_push_for(
                        topic, channel, offset, codec, deltas[channel]
                    )
                    deltas[channel] = True
                else:
                    push = push_for(topic, channel, offset, codec)
                parts.append(push)
                budget -= len(push)
            delivered += taken[1] - taken[0]
        self.endpoint.stats.delivered += delivered
        return budget

    def _closed_by_hub(self, channel: str, subscription: Subscription) -> bool:
        """Act on a subscription the hub closed; True when its channel finished."""
        reason = subscription.close_reason
        if reason is CloseReason.OVERFLOW:
            self.close(codes.SLOW)
        elif reason is CloseReason.RESYNC:
            self.close(codes.INSUFFICIENT_STATE)  # reconnect: recovery then says what is lost
        elif subscription.state is StreamState.ABORTED:
            self.abort(codes.WRITE_ERROR)
        elif not subscription.drained:
            return False  # flushing what was published before it closed
        elif reason is CloseReason.COMPLETE:
            del self.subscriptions[channel]
            subscription.release()
            self.protocol.channel_finished(channel)
            return True
        elif reason is CloseReason.SHUTDOWN:
            self.close(codes.SHUTDOWN)
        return False

    # -- the end -----------------------------------------------------------------------------

    async def _end(self) -> None:
        self.done = True
        protocol = self.protocol
        protocol.connection_lost()
        if self.disconnect is None:
            self.disconnect = protocol.disconnect
        self._release_all()
        if self._writer is not None:
            self._writer.cancel()
        channels = list(self.subscriptions)
        self.subscriptions.clear()
        client = protocol.client
        for channel in channels:
            with contextlib.suppress(Exception):
                await self.endpoint.presence.remove(channel, client.id)
            if protocol.connected:
                await self._announce(channel, join_leave.LEAVE, protocol.presence_info(channel))
        hook = self.options.hooks.on_disconnect
        disconnect = protocol.disconnect
        if hook is not None and protocol.connected and disconnect is not None:
            try:
                await hook(client, disconnect.code, disconnect.reason)
            except Exception:
                logger.exception("on_disconnect hook failed")
