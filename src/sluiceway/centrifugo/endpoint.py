"""The WebSocket endpoint: an ASGI app that serves Centrifugo's client protocol over a hub."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson

from sluiceway.asgi.shutdown import register
from sluiceway.centrifugo import codes
from sluiceway.centrifugo.codec import JSON, PROTOBUF_SUBPROTOCOL, Codec, for_subprotocols
from sluiceway.centrifugo.connection import DIRECT_WRITER, Connection, Receive, Send
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

    def publication_for(self, topic: RetainedTopic, offset: int, codec: Codec = JSON) -> bytes:
        """The Publication object of a retained event."""
        event, data, _ = topic.record_at(offset)
        return codec.publication(offset, data, event)

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
