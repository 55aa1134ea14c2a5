"""Minimal HTTP/1.1 clients: asyncio (keep-alive, one request at a time) and blocking, and
chunked transfer decoding."""

from __future__ import annotations

import asyncio
import re
import socket
import struct
from collections.abc import Mapping
from typing import cast

from harness import HOST, KiB, MiB

CONTENT_LENGTH_RE = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
CHUNKED_RE = re.compile(rb"\r\ntransfer-encoding:[ \t]*chunked", re.IGNORECASE)
#: A response head longer than this is an error.
MAX_HEAD = 64 * 1024


def free_port() -> int:
    """A TCP port on HOST that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------------------------
# asyncio
# --------------------------------------------------------------------------------------------


def build_request(
    method: str,
    path: str,
    port: int,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """A request: Host, then ``headers``, then (with a body) a JSON content type and length.

    >>> raw = build_request("POST", "/t", 80, b"{}", {"Connection": "close"})
    >>> for line in raw.split(b"\\r\\n"):
    ...     print(line.decode())
    POST /t HTTP/1.1
    Host: 127.0.0.1:80
    Connection: close
    Content-Type: application/json
    Content-Length: 2
    <BLANKLINE>
    {}
    """
    head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
    for k, v in (headers or {}).items():
        head += f"{k}: {v}\r\n"
    if body is None:
        return head.encode() + b"\r\n"
    return head.encode() + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )


def parse_response(buf: bytes, eof: bool = False) -> tuple[int, bytes, int] | None:
    """Parse one complete response at the start of buf -> (status, body, consumed) or None.

    A body with neither a length nor chunked framing runs until the server closes: complete
    only with ``eof`` (the connection is closed and buf is all there is).

    >>> parse_response(b"HTTP/1.1 200 OK\\r\\ncontent-length: 2\\r\\n\\r\\nokNEXT")
    (200, b'ok', 40)
    >>> chunked = b"HTTP/1.1 200 OK\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n"
    >>> parse_response(chunked + b"2\\r\\nok\\r\\n0\\r\\n\\r\\n")
    (200, b'ok', 59)
    >>> parse_response(b"HTTP/1.1 200 OK\\r\\n\\r\\nall") is None
    True
    >>> parse_response(b"HTTP/1.1 200 OK\\r\\n\\r\\nall", eof=True)
    (200, b'all', 22)
    """
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > MAX_HEAD:
            raise ValueError("response head too large")
        return None
    head = buf[: end + 2]
    status = int(head[9:12])
    pos = end + 4
    if m := CONTENT_LENGTH_RE.search(head):
        n = int(m.group(1))
        if len(buf) < pos + n:
            return None
        return status, buf[pos : pos + n], pos + n
    if CHUNKED_RE.search(head):
        parts: list[bytes] = []
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return None
            size = int(buf[pos:eol].split(b";", 1)[0], 16)
            pos = eol + 2
            if size == 0:
                # No trailers expected; the final CRLF ends the message.
                if len(buf) < pos + 2:
                    return None
                return status, b"".join(parts), pos + 2
            if len(buf) < pos + size + 2:
                return None
            parts.append(buf[pos : pos + size])
            pos += size + 2
    if status < 200 or status in (204, 304):
        return status, b"", pos
    if not eof:
        return None
    return status, buf[pos:], len(buf)


class HttpConn(asyncio.Protocol):
    """Keep-alive connection carrying one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, hence the cast.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._answer(eof=False)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._answer(eof=True):
            return
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection lost: {exc!r}"))

    def _answer(self, eof: bool) -> bool:
        """Resolve the waiter if buf holds its whole response (or is bad); True if resolved."""
        if self.waiter is None or self.waiter.done():
            return False
        try:
            parsed = parse_response(self.buf, eof)
        except ValueError as exc:
            self.waiter.set_exception(exc)
            return True
        if parsed is None:
            return False
        status, body, used = parsed
        self.buf = self.buf[used:]
        self.waiter.set_result((status, body))
        return True

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        if self.closed or self.transport is None:
            raise ConnectionError("connection closed")
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_http(port: int) -> HttpConn:
    """A keep-alive connection to HOST:port."""
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(HttpConn, HOST, port)
    return proto


async def http_request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    limit_s: float = 5.0,
) -> tuple[int, bytes]:
    """One request on a connection of its own (``Connection: close``) -> (status, body)."""
    async with asyncio.timeout(limit_s):
        conn = await open_http(port)
        try:
            raw = build_request(
                method, path, port, body, {"Connection": "close", **(headers or {})}
            )
            return await conn.request(raw)
        finally:
            conn.close()


# --------------------------------------------------------------------------------------------
# Chunked transfer decoding
# --------------------------------------------------------------------------------------------


class ChunkDecoder:
    """Chunked transfer decoding of a body that arrives in pieces.

    >>> d = ChunkDecoder()
    >>> d.feed(b"3\\r\\nab"), d.feed(b"c\\r\\n2;x=1\\r"), d.feed(b"\\nde\\r\\n0\\r\\n\\r\\n")
    (b'ab', b'c', b'de')
    >>> d.ended
    True
    """

    __slots__ = ("bad_size_line", "ended", "left", "pending", "skip")

    def __init__(self) -> None:
        self.left = 0  # bytes of the current chunk's data still to come
        self.skip = 0  # bytes of the CRLF that trails a chunk's data still to drop
        self.pending = b""  # incomplete chunk-size line
        self.ended = False  # the last (zero-size) chunk was seen
        self.bad_size_line = False  # the last feed left a chunk-size line > 64 bytes pending

    def feed(self, data: bytes) -> bytes:
        """The body bytes in ``data``; at the zero-size chunk, ``ended`` and the rest dropped."""
        self.bad_size_line = False
        if self.pending:
            data = self.pending + data
            self.pending = b""
        out: list[bytes] = []
        pos = 0
        n = len(data)
        while pos < n:
            if self.left:
                end = pos + self.left
                if end <= n:
                    out.append(data[pos:end])
                    self.left = 0
                    self.skip = 2
                    pos = end
                else:
                    out.append(data[pos:])
                    self.left -= n - pos
                    pos = n
            elif self.skip:
                take = min(self.skip, n - pos)
                pos += take
                self.skip -= take
            else:
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    self.pending = data[pos:]
                    self.bad_size_line = len(self.pending) > 64
                    break
                size = int(data[pos:eol].split(b";", 1)[0], 16)
                pos = eol + 2
                if size == 0:
                    self.ended = True
                    break
                self.left = size
        if len(out) == 1:
            return out[0]
        return b"".join(out)


# --------------------------------------------------------------------------------------------
# Blocking
# --------------------------------------------------------------------------------------------


def connect(port: int, timeout: float) -> socket.socket:
    """A blocking connection to HOST:port (TCP_NODELAY) with kernel send/receive timeouts."""
    sock = socket.create_connection((HOST, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # A blocking socket (SO_RCVLOWAT applies to blocking reads) with kernel timeouts.
    tv = struct.pack("ll", int(timeout), 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
    return sock


def request_head(method: str, path: str, port: int, extra: Mapping[str, str]) -> bytes:
    """A request head asking for an unencoded body, with ``extra`` headers."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}", "Accept-Encoding: identity"]
    lines += [f"{k}: {v}" for k, v in extra.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _head_fields(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return int(lines[0].split(" ", 2)[1]), headers


def read_head(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """(status, lower-cased headers, bytes after the head)."""
    buf = b""
    while (end := buf.find(b"\r\n\r\n")) < 0:
        data = sock.recv(64 * KiB)
        if not data:
            raise ConnectionError(f"connection closed before the response head ({buf[:200]!r})")
        buf += data
    status, headers = _head_fields(buf[:end])
    return status, headers, buf[end + 4 :]


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """A whole response read until the server closed: (status, headers, decoded body).

    >>> head = b"HTTP/1.1 200 OK\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n"
    >>> split_response(head + b"2\\r\\nok\\r\\n0\\r\\n\\r\\n")
    (200, {'transfer-encoding': 'chunked'}, b'ok')
    """
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        raise ValueError(f"no response head in {raw[:200]!r}")
    status, headers = _head_fields(raw[:end])
    body = raw[end + 4 :]
    if "chunked" in headers.get("transfer-encoding", "").lower():
        parts, pos = [], 0
        while True:
            eol = body.index(b"\r\n", pos)
            size = int(body[pos:eol].split(b";", 1)[0], 16)
            if size == 0:
                break
            parts.append(body[eol + 2 : eol + 2 + size])
            pos = eol + 2 + size + 2
        body = b"".join(parts)
    elif "content-length" in headers:
        body = body[: int(headers["content-length"])]
    return status, headers, body


def read_until_close(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes, in reads of up to a MiB."""
    chunks = []
    while data := sock.recv(MiB):
        chunks.append(data)
    return b"".join(chunks)
