"""uvicorn's sans-I/O WebSocket protocol, writing text frames straight to the socket (a
:class:`DirectTextWriter` in the scope's extensions) and calling the app chosen for the
handshake directly (``sluiceway serve``'s Centrifugo endpoint; what and why:
:mod:`sluiceway.server.native_ws`). The uvicorn internals touched are those of
:mod:`.internals`, WebSocket section."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import Any

from websockets.http11 import Request

from sluiceway.uvicorn_adapter.forwarded import ForwardedClients
from sluiceway.uvicorn_adapter.internals import (
    WebSocketsSansIOProtocol,
    accepted_scope,
    drop_handshake,
    replace_ws_queue_and_flag,
    route_ws_app,
    ws_closing,
    ws_transport,
)

TEXT = 0x81  # FIN + opcode 1
BINARY = 0x82  # FIN + opcode 2


def frame_header(length: int, first: int = TEXT) -> bytes:
    """The header of an unmasked, final frame of ``length`` bytes (RFC 6455, 5.2): server
    frames are not masked, so it depends only on the length and the opcode."""
    if length < 126:
        return struct.pack("!BB", first, length)
    if length < 65536:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


class DirectTextWriter:
    """The direct writer handed to the endpoint (``scope["extensions"][DIRECT_WRITER]``).

    ``writable`` runs for every frame, so it reads the protocol's ``close_sent`` (internals
    7) inline rather than through a function."""

    __slots__ = ("flag", "protocol", "transport")

    def __init__(self, protocol: DirectWebSocketProtocol) -> None:
        self.protocol = protocol
        self.flag = protocol.write_flag
        self.transport = ws_transport(protocol)

    def writable(self) -> bool:
        return (
            self.flag.is_set() and not self.protocol.close_sent and not self.transport.is_closing()
        )

    def write_text(self, payload: bytes) -> None:
        self.transport.write(frame_header(len(payload)) + payload)

    def write_binary(self, payload: bytes) -> None:
        self.transport.write(frame_header(len(payload), BINARY) + payload)

    async def wait_writable(self) -> bool:
        if ws_closing(self.protocol):
            return False  # it never will be: the connection is ending
        await self.flag.wait()
        return True

    def abort(self) -> None:
        self.transport.abort()


class ReceiveQueue:
    """What uvicorn's protocol needs of its ``asyncio.Queue`` of received messages, at a
    tenth of the memory: an idle connection holds one of these (an ``asyncio.Queue`` is four
    deques and an event, about 3 KiB; a deque alone is 760 bytes, and this queue rarely holds
    more than one message, so a list)."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Any:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.pop(0)

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)


class WritableFlag:
    """``asyncio.Event`` as uvicorn uses it for write flow control, without the deque of
    waiters that every event carries (760 bytes per idle connection)."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = True
        self._waiters: list[asyncio.Future[None]] = []

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if self._set:
            return True
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
        return True


class DirectWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's ``websockets-sansio`` protocol, plus a direct writer in the scope (under
    ``writer_key``); the app that ``route`` picks for an accepted handshake is called
    directly, not through the application's middleware and router, whose frames an idle
    connection would otherwise keep alive (about 2 KiB). Both bound by :func:`protocol_for`."""

    writer_key: str = "direct_text_writer"
    route: Callable[[Any], Any | None] | None = None
    #: The proxies believed (bound by ``streaming_server``); None: the peer is the client.
    forwarded: ForwardedClients | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.write_flag = WritableFlag()
        replace_ws_queue_and_flag(self, ReceiveQueue(), self.write_flag)

    # Write flow control is ours: uvicorn's protocol drives its flag itself only from 0.53.
    def pause_writing(self) -> None:
        super().pause_writing()
        self.write_flag.clear()

    def resume_writing(self) -> None:
        super().resume_writing()
        self.write_flag.set()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.write_flag.set()  # asyncio won't resume a lost transport: wake whoever waits

    # internals 8
    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = accepted_scope(self)
        if scope is not None:  # the handshake was accepted; the app's task has not run yet
            if self.forwarded is not None:
                # What the app's middleware does, for the endpoint called without it: the
                # client (access log, endpoint) is the one a trusted proxy forwards for.
                self.forwarded.apply(scope)
            scope["extensions"][self.writer_key] = DirectTextWriter(self)
            app = self.route(scope) if self.route is not None else None
            if app is not None:
                route_ws_app(self, app)

    # internals 9
    def start_keepalive(self) -> None:
        # Called once the handshake's response is sent: the request and response objects
        # (headers and all) are not needed again, and an idle connection need not keep them.
        super().start_keepalive()
        drop_handshake(self)


def protocol_for(
    route: Callable[[Any], Any | None], writer_key: str
) -> type[DirectWebSocketProtocol]:
    """A protocol class for ``uvicorn.Config(ws=...)``: the direct writer in
    ``scope["extensions"][writer_key]``, and ``route(scope)`` (an ASGI app, or None for the
    application) called for every accepted handshake."""
    return type(
        "BoundDirectWebSocketProtocol",
        (DirectWebSocketProtocol,),
        {"route": staticmethod(route), "writer_key": writer_key},
    )
