"""A frame-level Centrifugo protocol client for tests: what an SDK would never send (malformed
frames, floods, silence) and exactly what the server answers, close codes included.

Built on the ``websockets`` library; every wait is bounded.
"""

# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed


def ws_url(http_url: str) -> str:
    return http_url.replace("http://", "ws://", 1) + "/connection/websocket"


class RawClient:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.next_id = 0
        self.pushes: list[dict[str, Any]] = []  # pushes seen while waiting for replies
        self.pings = 0
        self.frames = 0  # text frames received

    async def send_frame(self, frame: str) -> None:
        await self.ws.send(frame)

    async def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one command and return its reply (``{"id": .., "<method>": ..}`` or error)."""
        self.next_id += 1
        command_id = self.next_id
        await self.ws.send(json.dumps({"id": command_id, method: params or {}}))
        return await self.reply(command_id)

    async def reply(self, command_id: int, timeout: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                for message in await self.messages():
                    if message.get("id") == command_id:
                        return message

    async def messages(self, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The next frame's objects; pushes and pings are also recorded."""
        frame = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(frame, str), "the JSON protocol uses text frames"
        self.frames += 1
        objects = [json.loads(line) for line in frame.split("\n")]
        for message in objects:
            if message == {}:
                self.pings += 1
            elif "push" in message:
                self.pushes.append(message["push"])
        return objects

    async def publications(self, channel: str, count: int, timeout: float = 10.0) -> list[Any]:
        """Wait until ``count`` publications of ``channel`` arrived; their ``pub`` objects."""
        async with asyncio.timeout(timeout):
            while True:
                pubs = [p["pub"] for p in self.pushes if p.get("channel") == channel and "pub" in p]
                if len(pubs) >= count:
                    return pubs
                await self.messages(timeout)

    async def connect(self, **params: Any) -> dict[str, Any]:
        reply = await self.request("connect", params)
        assert "connect" in reply, reply
        return reply["connect"]

    async def subscribe(self, channel: str, **params: Any) -> dict[str, Any]:
        reply = await self.request("subscribe", {"channel": channel, **params})
        assert "subscribe" in reply, reply
        return reply["subscribe"]

    async def closed(self, timeout: float = 10.0) -> tuple[int | None, str]:
        """Read until the server closes; its close code and reason."""
        async with asyncio.timeout(timeout):
            try:
                while True:
                    await self.messages(timeout)
            except ConnectionClosed as closed:
                if closed.rcvd is None:
                    return None, ""
                return closed.rcvd.code, closed.rcvd.reason


@asynccontextmanager
async def raw_client(http_url: str, **options: Any) -> AsyncIterator[RawClient]:
    async with connect(ws_url(http_url), open_timeout=5, **options) as ws:
        yield RawClient(ws)


class SilentClient:
    """A WebSocket client on a plain blocking socket with a tiny receive buffer, that reads
    nothing until told to: a client that stopped reading. (Client libraries keep reading into
    their own memory, which hides the backlog from the server.)"""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Before connecting, so that the TCP window stays small.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                "GET /connection/websocket HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)  # byte by byte: nothing after the head is consumed
        assert head.startswith(b"HTTP/1.1 101"), head

    def send(self, text: str) -> None:
        data = text.encode()
        mask = os.urandom(4)
        masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(data))
        length = len(data)
        if length < 126:
            head = struct.pack("!BB", 0x81, 0x80 | length)
        else:
            head = struct.pack("!BBH", 0x81, 0x80 | 126, length)
        self.sock.sendall(head + mask + masked)

    def read_to_close(self, timeout: float) -> tuple[list[str], int | None, str]:
        """Read everything until the server's close frame: the text frames, code and reason."""
        self.sock.settimeout(timeout)
        buffer = b""
        texts: list[str] = []
        while True:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                return texts, None, ""
            buffer += chunk
            while len(buffer) >= 2:
                opcode, length = buffer[0] & 0x0F, buffer[1] & 0x7F
                offset = {126: 4, 127: 10}.get(length, 2)
                if len(buffer) < offset:
                    break
                if length == 126:
                    (length,) = struct.unpack("!H", buffer[2:4])
                elif length == 127:
                    (length,) = struct.unpack("!Q", buffer[2:10])
                if len(buffer) < offset + length:
                    break
                payload = buffer[offset : offset + length]
                buffer = buffer[offset + length :]
                if opcode == 0x8:
                    (code,) = struct.unpack("!H", payload[:2])
                    return texts, code, payload[2:].decode()
                if opcode == 0x1:
                    texts.append(payload.decode())

    def close(self) -> None:
        self.sock.close()
