"""WebSocket frames written straight to the socket under ``sluiceway serve``.

Through ASGI, every frame a connection sends is a task switch into its writer and an ``await
send(...)``, in which the WebSocket library frames the text again for every connection. A
fan-out to 1,000 connections is then 1,000 task switches per publication. This subclass of
uvicorn's sans-I/O WebSocket protocol hands the application (``scope["extensions"]``) a
:class:`DirectTextWriter`: the connection writes a text frame (server frames are not masked,
so its header depends only on the length) with ``transport.write``, from the hub's callback,
with no task switch. Flow control is the transport's ``pause_writing``/``resume_writing``;
everything else (the handshake, reading, pings, the closing handshake) stays uvicorn's.
"""

from __future__ import annotations

import struct

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request

from sluiceway.centrifugo.connection import DIRECT_WRITER


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


class DirectWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's ``websockets-sansio`` protocol, plus the direct writer in the scope."""

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:  # the handshake was accepted; the app's task has not run yet
            scope["extensions"][DIRECT_WRITER] = DirectTextWriter(self)  # type: ignore[index]

    def start_keepalive(self) -> None:
        # Called once the handshake's response is sent: the request and response objects
        # (headers and all) are not needed again, and an idle connection need not keep them.
        super().start_keepalive()
        self.request = None  # type: ignore[assignment]
        self.response = None  # type: ignore[assignment]
