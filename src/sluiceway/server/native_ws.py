"""WebSocket frames written straight to the socket under ``sluiceway serve``.

Through ASGI, every frame a connection sends is a task switch into its writer and an ``await
send(...)``, in which the WebSocket library frames the text again for every connection. A
fan-out to 1,000 connections is then 1,000 task switches per publication. This subclass of
uvicorn's sans-I/O WebSocket protocol hands the application (``scope["extensions"]``) a
:class:`DirectTextWriter`: the connection writes a text frame (server frames are not masked,
so its header depends only on the length) with ``transport.write``, from the hub's callback,
with no task switch. Flow control is the transport's ``pause_writing``/``resume_writing``;
everything else (the handshake, reading, pings, the closing handshake) stays uvicorn's.

The endpoint is called without the application's middleware, so the handshake is admitted
here, by the same check the admission gate makes (:mod:`sluiceway.server.admission`): a
foreign ``Host`` or a page of another origin gets the gate's refusal, as an HTTP response.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request

from sluiceway.centrifugo.connection import DIRECT_WRITER
from sluiceway.centrifugo.endpoint import CentrifugoEndpoint
from sluiceway.server.admission import Admission, Refusal, RequestFacts
from sluiceway.server.gate import refuse_handshake

#: Where ``sluiceway serve`` serves the WebSocket endpoint.
WEBSOCKET_PATH = "/connection/websocket"


def text_frame_header(length: int) -> bytes:
    """The header of an unmasked, final text frame of ``length`` bytes (RFC 6455, 5.2)."""
    if length < 126:
        return struct.pack("!BB", 0x81, length)
    if length < 65536:
        return struct.pack("!BBH", 0x81, 126, length)
    return struct.pack("!BBQ", 0x81, 127, length)


class DirectTextWriter:
    __slots__ = ("protocol",)

    def __init__(self, protocol: WebSocketsSansIOProtocol) -> None:
        self.protocol = protocol

    def writable(self) -> bool:
        protocol = self.protocol
        return (
            protocol.writable.is_set()
            and not protocol.close_sent
            and not protocol.transport.is_closing()
        )

    def write_text(self, payload: bytes) -> None:
        self.protocol.transport.write(text_frame_header(len(payload)) + payload)

    async def wait_writable(self) -> bool:
        protocol = self.protocol
        if protocol.close_sent or protocol.transport.is_closing():
            return False  # it never will be: the connection is ending
        await protocol.writable.wait()
        return True

    def abort(self) -> None:
        self.protocol.transport.abort()


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
    """uvicorn's ``websockets-sansio`` protocol, plus the direct writer in the scope; the
    WebSocket endpoint (``endpoint``, bound by :func:`protocol_for`) is called directly, not
    through the application's middleware and router, whose frames an idle connection would
    otherwise keep alive (about 2 KiB)."""

    endpoint: CentrifugoEndpoint | None = None
    admission: Admission | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = ReceiveQueue()  # type: ignore[assignment]
        self.writable = WritableFlag()  # type: ignore[assignment]

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:  # the handshake was accepted; the app's task has not run yet
            scope["extensions"][DIRECT_WRITER] = DirectTextWriter(self)
            if self.endpoint is not None and scope["path"] == WEBSOCKET_PATH:
                refused = None
                if self.admission is not None:
                    refused = self.admission.check_request(RequestFacts.from_scope(scope))
                self.app = self.endpoint if refused is None else _Refuse(refused)

    def start_keepalive(self) -> None:
        # Called once the handshake's response is sent: the request and response objects
        # (headers and all) are not needed again, and an idle connection need not keep them.
        super().start_keepalive()
        self.request = None  # type: ignore[assignment]
        self.response = None  # type: ignore[assignment]


class _Refuse:
    """An ASGI app that answers a handshake with a refusal."""

    def __init__(self, refused: Refusal) -> None:
        self.refused = refused

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await refuse_handshake(scope, receive, send, self.refused)


def protocol_for(
    endpoint: CentrifugoEndpoint | None, admission: Admission
) -> type[DirectWebSocketProtocol]:
    """A protocol class bound to the endpoint and the app's admission, for
    ``uvicorn.Config(ws=...)``."""
    return type(
        "BoundDirectWebSocketProtocol",
        (DirectWebSocketProtocol,),
        {"endpoint": endpoint, "admission": admission},
    )
