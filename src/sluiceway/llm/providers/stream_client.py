"""A lean HTTP/1.1 client for one thing: POST a request and stream its response, fast.

The providers read every token of every generation through it: it is the gateway's hot path.
httpx (h11 in Python, anyio's cancel scopes around every read) costs about 57 µs of CPU per
token read flat out and 330 µs paced at 50 tokens/s, against 1.2 and 13 µs here (measured by
``bench/llm_gateway.py``'s profile and a side-by-side read of the same fake upstream; see the
README's "Performance"). This client parses with httptools (llhttp, in C), wakes its reader
once per batch of bytes received, and hands it everything received meanwhile as one piece.

What it does: keep-alive connections pooled per origin, TLS (certifi's CAs, or
``SSL_CERT_FILE``/``SSL_CERT_DIR``), a connect timeout, a read timeout that bounds the silence
between two pieces, back-pressure (it stops reading from a socket whose pieces are not taken),
``gzip``/``deflate`` bodies. Closing a response before its end closes its connection at once:
the upstream sees the client leave and stops generating. What it does not do: proxies,
redirects, HTTP/2, request streaming; :func:`~sluiceway.llm.providers.http.open_stream` falls
back to httpx when a proxy applies.

>>> client = StreamClient(connect_timeout=10, read_timeout=120)     # doctest: +SKIP
>>> async with client.post(url, body, headers) as response:         # doctest: +SKIP
...     async for piece in response.pieces():
...         ...
"""

from __future__ import annotations

import asyncio
import os
import ssl
import zlib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import cast
from urllib.parse import urlsplit

import httptools

__all__ = [
    "ConnectError",
    "ReadTimeout",
    "RemoteProtocolError",
    "StreamClient",
    "StreamClientError",
    "StreamResponse",
]

#: Bytes received and not yet taken by the reader before the socket is no longer read.
HIGH_WATER = 1024 * 1024
#: Idle keep-alive connections kept per origin.
MAX_IDLE_PER_ORIGIN = 256


class StreamClientError(Exception):
    """The request failed at the transport or protocol level."""


class ConnectError(StreamClientError):
    """The connection (or its TLS handshake) could not be made."""


class ReadTimeout(StreamClientError):
    """The server sent nothing for ``read_timeout`` seconds."""


class RemoteProtocolError(StreamClientError):
    """The server broke the connection or HTTP/1.1 (closed mid-response, bad framing...)."""


Origin = tuple[str, str, int]


class StreamClient:
    """Pooled HTTP/1.1 POSTs with streamed responses (see the module doc)."""

    def __init__(
        self,
        *,
        connect_timeout: float,
        read_timeout: float,
        ssl_context: ssl.SSLContext | None = None,
        user_agent: str = "sluiceway",
    ) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._ssl = ssl_context
        self._user_agent = user_agent
        self._idle: dict[Origin, list[_Connection]] = {}
        self._closed = False

    @asynccontextmanager
    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str]
    ) -> AsyncIterator[StreamResponse]:
        """POST ``body`` to ``url``; the response once its head arrived. Its connection goes
        back to the pool if the body was read to its end, and is closed otherwise."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        origin: Origin = (parts.scheme, parts.hostname, port)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        head = self._head(target, origin, headers, len(body))
        connection, reused = await self._connection(origin)
        try:
            try:
                response = await connection.send(head + body, self.read_timeout)
            except RemoteProtocolError:
                if not reused or connection.received:
                    raise
                # An idle connection the server had closed as we took it: nothing came back,
                # so nothing was done; once more, on a fresh one.
                connection, _ = await self._connection(origin, fresh=True)
                response = await connection.send(head + body, self.read_timeout)
        except BaseException:
            connection.abort()  # cancelled or failed before the head: never reused
            raise
        try:
            yield response
        finally:
            response._stop_timer()
            if response.complete and connection.reusable and not self._closed:
                idle = self._idle.setdefault(origin, [])
                if len(idle) < MAX_IDLE_PER_ORIGIN:
                    idle.append(connection)
                else:
                    connection.close()
            else:
                connection.abort()  # the upstream sees us leave now, and stops generating

    def _head(self, target: str, origin: Origin, headers: Mapping[str, str], length: int) -> bytes:
        scheme, host, port = origin
        if ":" in host:
            host = f"[{host}]"
        if port != (443 if scheme == "https" else 80):
            host = f"{host}:{port}"
        lines = [f"POST {target} HTTP/1.1", f"host: {host}", f"user-agent: {self._user_agent}"]
        lines.append("accept-encoding: gzip, deflate")
        for name, value in headers.items():
            if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
                raise ValueError("a header may not hold a line break")
            lines.append(f"{name}: {value}")
        lines.append(f"content-length: {length}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _connection(self, origin: Origin, *, fresh: bool = False) -> tuple[_Connection, bool]:
        if not fresh:
            idle = self._idle.get(origin)
            while idle:
                connection = idle.pop()
                if connection.usable:
                    return connection, True
                connection.abort()
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        context = None
        if scheme == "https":
            context = self._ssl = self._ssl or default_ssl_context()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, connection = await loop.create_connection(
                    _Connection,
                    host,
                    port,
                    ssl=context,
                    server_hostname=host if context is not None else None,
                )
        except TimeoutError:
            raise ConnectError(f"connecting took more than {self.connect_timeout:g} s") from None
        except (OSError, ssl.SSLError) as exc:
            raise ConnectError(f"cannot connect: {type(exc).__name__}") from None
        return connection, False

    async def aclose(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()


def default_ssl_context() -> ssl.SSLContext:
    """``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` when set (as httpx and OpenSSL read them), else
    certifi's CA bundle."""
    cafile, capath = os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")
    if cafile or capath:
        return ssl.create_default_context(cafile=cafile, capath=capath)
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


class StreamResponse:
    """A response whose head arrived: ``status``, ``reason``, ``headers`` (lower-case names;
    the last of repeated ones), and its body through :meth:`pieces` or :meth:`read`."""

    def __init__(self, connection: _Connection, read_timeout: float) -> None:
        self._connection = connection
        self._read_timeout = read_timeout
        self.status = 0
        self.reason = ""
        self.headers: dict[str, str] = {}
        self.complete = False
        self._body: list[bytes] = []
        self._buffered = 0
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._waiting_since = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._decoder: zlib._Decompress | None = None  # a gzip or deflate body's

    async def pieces(self) -> AsyncIterator[bytes]:
        """The body as it arrives: everything received since the last piece, joined."""
        connection = self._connection
        while True:
            if self._body:
                data = self._body[0] if len(self._body) == 1 else b"".join(self._body)
                self._body.clear()
                self._buffered = 0
                connection.resume()
                if self._decoder is not None:
                    data = self._decode(data)
                    if not data:
                        continue
                yield data
                continue
            if self.complete:
                self._stop_timer()
                return
            if self._error is not None:
                self._stop_timer()
                raise self._error
            await self._wait()

    async def read(self, limit: int) -> bytes:
        """At most ``limit`` bytes of the body (an error's message)."""
        body = bytearray()
        async for piece in self.pieces():
            body += piece
            if len(body) >= limit:
                break
        return bytes(body[:limit])

    def _decode(self, data: bytes) -> bytes:
        assert self._decoder is not None
        try:
            return self._decoder.decompress(data)
        except zlib.error:
            raise RemoteProtocolError("the body does not decode as it says") from None

    async def _wait(self) -> None:
        loop = asyncio.get_running_loop()
        self._waiting_since = loop.time()
        if self._timer is None:
            # One timer per response, not one per wait: it re-arms itself while pieces come.
            self._timer = loop.call_at(self._waiting_since + self._read_timeout, self._check_idle)
        waiter = self._waiter = loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def _check_idle(self) -> None:
        """The read timeout: has the reader waited ``read_timeout`` for the current piece?"""
        waiter = self._waiter
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._timer = None
        if self.complete or self._error is not None:
            return
        if waiter is None or waiter.done():  # not waiting now: look again a timeout later
            self._timer = loop.call_at(now + self._read_timeout, self._check_idle)
            return
        deadline = self._waiting_since + self._read_timeout
        if now < deadline:
            self._timer = loop.call_at(deadline, self._check_idle)
            return
        waiter.set_exception(ReadTimeout(f"the server sent nothing for {self._read_timeout:g} s"))

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- fed by the connection ---------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _headers_done(self, status: int, headers: dict[str, str]) -> None:
        self.status = status
        self.headers = headers
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding == "gzip":
            self._decoder = zlib.decompressobj(wbits=31)
        elif encoding == "deflate":
            self._decoder = zlib.decompressobj()
        elif encoding not in ("identity", ""):
            self._fail(RemoteProtocolError(f"unsupported content-encoding {encoding!r}"))

    def _fail(self, error: BaseException) -> None:
        if self._error is None and not self.complete:
            self._error = error
        self._wake()


class _Connection(asyncio.Protocol):
    """One socket: a request at a time, its response parsed as it arrives."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: StreamResponse | None = None
        self.head: asyncio.Future[StreamResponse] | None = None
        self.received = False  # bytes of the current response arrived
        self.lost = False
        self.reusable = False
        self.paused = False
        self._header_name = b""
        self._headers: dict[str, str] = {}
        self._interim = False  # parsing a 1xx answer, which the real one follows

    @property
    def usable(self) -> bool:
        return not self.lost and self.transport is not None and not self.transport.is_closing()

    async def send(self, request: bytes, read_timeout: float) -> StreamResponse:
        """Write ``request``; the response once its head came."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self.parser = httptools.HttpResponseParser(self)
        self.response = StreamResponse(self, read_timeout)
        self.head = loop.create_future()
        self.received = False
        self.reusable = False
        self._headers = {}
        if self.lost:
            raise RemoteProtocolError("the connection was closed")
        self.transport.write(request)
        try:
            async with asyncio.timeout(read_timeout):
                return await self.head
        except TimeoutError:
            self.abort()
            raise ReadTimeout(f"no answer in {read_timeout:g} s") from None

    def resume(self) -> None:
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a socket connection's

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._broken(RemoteProtocolError("the server switched protocols"))
        except httptools.HttpParserError as exc:
            self._broken(RemoteProtocolError(f"the server broke HTTP/1.1: {exc}"))

    def eof_received(self) -> bool:
        return False  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.reusable = False
        response = self.response
        if response is None or response.complete:
            return
        if response.status and self._ends_at_close():
            response.complete = True  # a body delimited by the connection's end
            response._wake()
            return
        self._broken(RemoteProtocolError("the server closed the connection mid-response"))

    def _ends_at_close(self) -> bool:
        headers = self._headers
        return "content-length" not in headers and "chunked" not in headers.get(
            "transfer-encoding", ""
        )

    def _broken(self, error: StreamClientError) -> None:
        self.reusable = False
        if self.head is not None and not self.head.done():
            self.head.set_exception(error)
        if self.response is not None:
            self.response._fail(error)
        if self.transport is not None:
            self.transport.abort()

    # -- httptools callbacks -----------------------------------------------------------------

    def on_status(self, reason: bytes) -> None:
        if self.response is not None:
            self.response.reason = reason.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        response = self.response
        assert response is not None and self.head is not None
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # an interim answer: the real one follows
            self._headers = {}
            self._interim = True
            return
        response._headers_done(status, self._headers)
        if not self.head.done():
            self.head.set_result(response)

    def on_body(self, body: bytes) -> None:
        response = self.response
        assert response is not None
        response._body.append(body)
        response._buffered += len(body)
        if response._buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        response._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        response = self.response
        assert response is not None
        self.reusable = self.parser.should_keep_alive()
        response.complete = True
        response._wake()
