"""The WebSocket endpoint: an ASGI app that serves Centrifugo's client protocol over a hub."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson

import sluiceway.fossil as fossil
from sluiceway.asgi.shutdown import register
from sluiceway.centrifugo import codes
from sluiceway.centrifugo.codec import JSON, PROTOBUF_SUBPROTOCOL, Codec, for_subprotocols
from sluiceway.centrifugo.connection import DIRECT_WRITER, Connection, Receive, Send
from sluiceway.centrifugo.filters import Filter
from sluiceway.centrifugo.options import CentrifugoOptions
from sluiceway.centrifugo.presence import MemoryPresence, Presence
from sluiceway.centrifugo.proxy import HttpProxy
from sluiceway.centrifugo.stats import EndpointStats
from sluiceway.hub import Hub, RetainedTopic

logger = logging.getLogger("sluiceway.centrifugo")

#: Encoded publications kept for reuse: one event fanned out to N connections is encoded once.
PUSH_CACHE_SIZE = 4096


class CentrifugoEndpoint:
    """Mount it as a WebSocket route of a Starlette/FastAPI app::

        hub = Hub()
        endpoint = CentrifugoEndpoint(hub, CentrifugoOptions(publish_channels=["chat:*"]))
        app = Starlette(routes=[WebSocketRoute("/connection/websocket", endpoint)],
                        lifespan=...)  # await endpoint.aclose() on shutdown

    Centrifugo's client SDKs (centrifuge-js, centrifuge-python, ...) then connect to
    ``ws://host/connection/websocket`` unchanged. Channels are the hub's topics: what is
    published over HTTP reaches WebSocket subscribers and the other way round, with the same
    epoch and offsets.
    """

    def __init__(
        self,
        hub: Hub,
        options: CentrifugoOptions | None = None,
        presence: Presence | None = None,
        *,
        proxy: HttpProxy | None = None,
    ) -> None:
        """``proxy``: the HTTP hooks in ``options`` (closed with the endpoint)."""
        self.hub = hub
        self._proxy = proxy
        self.options = options or CentrifugoOptions()
        self.presence: Presence = presence or MemoryPresence()
        self.stats = EndpointStats()
        self.connections: set[Connection] = set()
        self._pushes: dict[tuple[str, str, int, str], bytes] = {}
        self._delta_pushes: dict[tuple[str, str, int, str, bool], bytes] = {}
        self._matches: dict[tuple[str, str, int, bytes], bool] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._closing = False
        self._all_gone: asyncio.Event | None = None
        hooks = self.options.hooks
        self._hooks_read_headers = (
            hooks.on_connect is not None
            or hooks.on_subscribe is not None
            or hooks.on_publish is not None
            or hooks.on_rpc is not None
            or hooks.on_disconnect is not None
        )

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await _upgrade_required(send)
            return
        if (await receive())["type"] != "websocket.connect":
            return
        if self._closing:
            await send({"type": "websocket.close", "code": 1013})  # try again later
            return
        codec = for_subprotocols(scope.get("subprotocols") or [])
        accept: dict[str, Any] = {"type": "websocket.accept"}
        if codec.binary:
            accept["subprotocol"] = PROTOBUF_SUBPROTOCOL
        await send(accept)
        direct = scope.get("extensions", {}).get(DIRECT_WRITER)
        headers = scope["headers"]
        if not self._hooks_read_headers:
            # Nothing will read them again: an idle connection need not keep them (~1 KiB).
            scope["headers"] = []
        connection = Connection(
            self, send, headers if self._hooks_read_headers else [], direct, codec
        )
        self.connections.add(connection)
        self.stats.connections_opened += 1
        self._ensure_sweeper()
        forget = register(lambda: connection.close(codes.SHUTDOWN), hub_stream=True)
        try:
            await connection.run(receive)
        finally:
            forget()
            self.connections.discard(connection)
            if self._all_gone is not None and not self.connections:
                self._all_gone.set()

    # -- encoding once -----------------------------------------------------------------------

    def publication_for(
        self, topic: RetainedTopic, offset: int, codec: Codec = JSON, delta: bool = False
    ) -> bytes:
        """The Publication object of a retained event (whole, encoded for a subscription
        with deltas when ``delta``)."""
        event, data, _ = topic.record_at(offset)
        tags = topic.tags_at(offset)
        if delta:
            return codec.delta_publication(offset, codec.delta_data(data), event, tags, False)
        return codec.publication(offset, data, event, tags)

    def matches(self, topic: RetainedTopic, offset: int, tags_filter: Filter) -> bool:
        """Whether a retained event's tags match ``tags_filter``: evaluated once per event and
        distinct filter, however many subscribers share the filter."""
        key = (topic.epoch, topic.name, offset, tags_filter.key)
        found = self._matches.get(key)
        if found is None:
            found = tags_filter.matches(topic.tags_at(offset))
            self.stats.filter_evaluations += 1
            matched = self._matches
            if len(matched) >= PUSH_CACHE_SIZE:
                del matched[next(iter(matched))]
            matched[key] = found
        return found

    def delta_push_for(
        self, topic: RetainedTopic, channel: str, offset: int, codec: Codec, delta: bool
    ) -> bytes:
        """The push of a retained event to a subscription with deltas: with ``delta`` (it was
        sent the previous offset) the difference from that one, unless it is no smaller;
        else the whole data, encoded as such subscriptions need it."""
        key = (topic.epoch, channel, offset, codec.name, delta)
        push = self._delta_pushes.get(key)
        if push is None:
            event, data, _ = topic.record_at(offset)
            payload = codec.delta_data(data)
            made = False
            previous = topic.record_at(offset - 1)[1] if offset - 1 >= topic.base else None
            big = previous is not None and max(len(data), len(previous)) > fossil.MAX_DELTA_INPUT
            if delta and previous is not None and not big:
                difference = fossil.create(codec.delta_data(previous), payload)
                # JSON carries a delta as a string: it must be UTF-8 (a literal run may cut a
                # character in two; such a publication goes whole).
                if len(difference) < len(payload) and (codec.binary or _is_text(difference)):
                    payload, made = difference, True
            publication = codec.delta_publication(
                offset, payload, event, topic.tags_at(offset), made
            )
            push = codec.publication_push(channel, publication)
            pushes = self._delta_pushes
            if len(pushes) >= PUSH_CACHE_SIZE:
                del pushes[next(iter(pushes))]
            pushes[key] = push
        return push

    def push_for(
        self, topic: RetainedTopic, channel: str, offset: int, codec: Codec = JSON
    ) -> bytes:
        """The publication push of a retained event, shared by every connection (of one
        format)."""
        key = (topic.epoch, channel, offset, codec.name)
        push = self._pushes.get(key)
        if push is None:
            push = codec.publication_push(channel, self.publication_for(topic, offset, codec))
            pushes = self._pushes
            if len(pushes) >= PUSH_CACHE_SIZE:
                del pushes[next(iter(pushes))]
            pushes[key] = push
        return push

    # -- timers ------------------------------------------------------------------------------

    def _ensure_sweeper(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        """Pings, pong and connect deadlines, token expiry and presence renewal: one pass a
        second over every connection, instead of timers per connection."""
        loop = asyncio.get_running_loop()
        options = self.options
        next_presence = loop.time() + options.presence_ttl / 3
        while self.connections:
            await asyncio.sleep(1.0)
            now = loop.time()
            try:
                for connection in list(self.connections):
                    connection.tick(now)
                if now >= next_presence:
                    next_presence = now + options.presence_ttl / 3
                    await self.presence.refresh(self._presence_entries())
            except Exception:  # keep sweeping: pings and deadlines depend on it
                logger.exception("centrifugo sweep failed")

    def _presence_entries(self) -> list[tuple[str, str, dict[str, Any]]]:
        entries = []
        for connection in self.connections:
            entries += connection.protocol.presence_entries()
        return entries

    # -- shutdown ----------------------------------------------------------------------------

    async def aclose(self, grace: float = 5.0) -> None:
        """Disconnect every client with 3001 (shutdown), so that they reconnect elsewhere and
        recover; wait at most ``grace`` seconds for them to go."""
        self._closing = True
        for connection in list(self.connections):
            connection.close(codes.SHUTDOWN)
        if self.connections:
            self._all_gone = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_gone.wait(), grace)
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._proxy is not None:
            await self._proxy.aclose()


def _is_text(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


async def _upgrade_required(send: Send) -> None:
    body = orjson.dumps(
        {"error": {"code": "upgrade_required", "message": "this endpoint speaks WebSocket"}}
    )
    await send(
        {
            "type": "http.response.start",
            "status": 426,
            "headers": [
                (b"content-type", b"application/json"),
                (b"upgrade", b"websocket"),
                (b"connection", b"upgrade"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
