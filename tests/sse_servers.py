"""Servers for the client tests, each on a loopback port in a thread of its own (so the sync
and the async client can both talk to it):

* :class:`ScriptedServer`: raw HTTP/1.1 over asyncio streams, answering each request with a
  test's handler, byte for byte (cut mid-event, stall, 503 then 200...).
* :class:`ChaosProxy`: a TCP proxy in front of a real server that cuts connections at random.
* :class:`TimedCutProxy`: the same, cutting each connection after a random time instead, so
  also before its first event.
* :class:`UvicornThread`: any ASGI app (an sse-starlette app, not ours) under uvicorn.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Self

import uvicorn
from serverproc import HOST, free_port


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    #: time.monotonic() when the request had been read.
    at: float = field(default_factory=time.monotonic)


@dataclass
class Connection:
    """The server side of one request, for handlers."""

    request: Request
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    #: Set when the client closed its side (EOF) or the connection broke.
    client_gone: asyncio.Event = field(default_factory=asyncio.Event)

    async def send_head(
        self, status: int = 200, content_type: str = "text/event-stream", **headers: str
    ) -> None:
        """The head of a response; a streaming one (no Content-Length) is chunked, so that a
        cut is visible to the client as a truncated body, as with any HTTP/1.1 server."""
        lines = [f"HTTP/1.1 {status} X", f"Content-Type: {content_type}", "Connection: close"]
        if "Content_Length" not in headers:
            headers["Transfer_Encoding"] = "chunked"
        lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
        await self.send_raw(("\r\n".join(lines) + "\r\n\r\n").encode())

    async def send(self, data: bytes) -> None:
        """One chunk of a streaming body."""
        await self.send_raw(chunk(data))

    async def end(self) -> None:
        """The last chunk: the body is complete."""
        await self.send_raw(b"0\r\n\r\n")

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def respond(self, status: int, body: bytes = b"", **headers: str) -> None:
        """A complete response with a body, then close."""
        content_type = headers.pop("content_type", "text/plain")
        await self.send_head(status, content_type, Content_Length=str(len(body)), **headers)
        await self.send_raw(body)

    async def hold(self, seconds: float = 30.0) -> None:
        """Keep the connection open until the client leaves (or ``seconds`` pass)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.client_gone.wait(), seconds)


Handler = Callable[[Connection], Awaitable[None]]


def chunk(data: bytes) -> bytes:
    """``data`` framed as one HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(data), data)


class _LoopThread:
    """An event loop running in a daemon thread; ``call`` runs a coroutine on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def call(self, coroutine: Awaitable[Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)  # type: ignore[arg-type]

    def stop(self, server: asyncio.Server) -> None:
        async def close() -> None:
            server.close()
            # Connections still being served end here, not later in another test's loop.
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=5)

        self.call(close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self.loop.close()


class LoopServer:
    """A TCP server on a free loopback port, served by ``_serve`` on a loop thread of its own:
    ``with Subclass(...) as server: ... server.url ...``."""

    port = 0
    _thread: _LoopThread | None = None
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def __enter__(self) -> Self:
        self._thread = _LoopThread()
        self._server = self._thread.call(asyncio.start_server(self._serve, HOST, 0))
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._thread is not None and self._server is not None
        self._thread.stop(self._server)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class ScriptedServer(LoopServer):
    """``with ScriptedServer(handler) as server: ... server.url ...``; every request is kept in
    ``server.requests`` (thread-safe to read after the fact)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        #: Connections whose client went away, counted as the server saw them go.
        self.disconnects = 0
        self._disconnected = threading.Condition()

    def wait_disconnects(self, count: int, timeout: float) -> bool:
        with self._disconnected:
            return self._disconnected.wait_for(lambda: self.disconnects >= count, timeout)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await _read_request(reader)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            writer.close()
            return
        self.requests.append(request)
        connection = Connection(request, reader, writer)
        watcher = asyncio.create_task(self._watch(connection))
        try:
            await self.handler(connection)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            if not writer.is_closing():
                writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.client_gone.wait(), 5)
            watcher.cancel()

    async def _watch(self, connection: Connection) -> None:
        with contextlib.suppress(ConnectionError):
            while await connection.reader.read(65536):
                pass
        connection.client_gone.set()
        with self._disconnected:
            self.disconnects += 1
            self._disconnected.notify_all()


async def _read_request(reader: asyncio.StreamReader) -> Request:
    head = await reader.readuntil(b"\r\n\r\n")
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    method, path, _version = request_line.split(" ", 2)
    headers = {}
    for line in header_lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = await reader.readexactly(length) if length else b""
    return Request(method, path, headers, body)


class ChaosProxy(LoopServer):
    """Forwards loopback TCP connections to ``upstream_port``, cutting each one after a random
    number of downstream bytes (between ``min_bytes`` and ``max_bytes``), sometimes with a FIN,
    sometimes with a RST.  ``cuts`` counts the connections it broke."""

    def __init__(self, upstream_port: int, *, seed: int, min_bytes: int, max_bytes: int) -> None:
        self.upstream_port = upstream_port
        self.random = random.Random(seed)
        self.min_bytes = min_bytes
        self.max_bytes = max_bytes
        self.cuts = 0

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        budget = self.random.randint(self.min_bytes, self.max_bytes)
        abort = self.random.random() < 0.5
        try:
            up_r, up_w = await asyncio.open_connection(HOST, self.upstream_port)
        except OSError:
            client_w.close()
            return
        upload = asyncio.create_task(_pipe(client_r, up_w))
        try:
            while budget > 0:
                chunk = await up_r.read(min(budget, 65536))
                if not chunk:
                    break
                client_w.write(chunk)
                await client_w.drain()
                budget -= len(chunk)
            else:
                self.cuts += 1
        except ConnectionError:
            pass
        finally:
            upload.cancel()
            if abort:
                client_w.transport.abort()
            else:
                client_w.close()
            up_w.close()


class TimedCutProxy(LoopServer):
    """Forwards loopback TCP connections to ``upstream_port``, cutting each one after a random
    time between ``min_s`` and ``max_s`` from its start (whatever it carried: nothing, the
    response head alone, or events), sometimes with a FIN, sometimes with a RST.
    ``connections`` counts the connections it forwarded, ``cuts`` those it broke."""

    def __init__(
        self, upstream_port: int, *, seed: int, min_s: float = 0.2, max_s: float = 0.8
    ) -> None:
        self.upstream_port = upstream_port
        self.random = random.Random(seed)
        self.min_s = min_s
        self.max_s = max_s
        self.connections = 0
        self.cuts = 0

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        lifetime = self.random.uniform(self.min_s, self.max_s)
        abort = self.random.random() < 0.5
        self.connections += 1
        try:
            up_r, up_w = await asyncio.open_connection(HOST, self.upstream_port)
        except OSError:
            client_w.close()
            return
        upload = asyncio.create_task(_pipe(client_r, up_w))
        download = asyncio.create_task(_pipe(up_r, client_w))
        try:
            done, _ = await asyncio.wait({download}, timeout=lifetime)
            if not done:
                self.cuts += 1
        finally:
            upload.cancel()
            download.cancel()
            if abort:
                client_w.transport.abort()
            else:
                client_w.close()
            up_w.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()


class UvicornThread:
    """``with UvicornThread(app) as server: ... server.url ...``"""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self._server = uvicorn.Server(
            uvicorn.Config(app, host=HOST, port=self.port, log_level="warning", lifespan="off")
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The server thread's loop, for ``asyncio.run_coroutine_threadsafe``."""
        assert self._loop is not None
        return self._loop

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._server.serve())
        finally:
            self._loop.close()

    def __enter__(self) -> Self:
        self._thread.start()
        for _ in range(500):
            if self._server.started:
                return self
            threading.Event().wait(0.01)
        raise RuntimeError("uvicorn did not start")

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)


class FailoverProxy(LoopServer):
    """Forwards each loopback TCP connection to the first of ``upstream_ports`` that accepts:
    a client keeps one URL while the server behind it dies and another takes over."""

    def __init__(self, upstream_ports: list[int]) -> None:
        self.upstream_ports = upstream_ports
        self.connections: list[int] = []  # the upstream port of each connection made

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        for port in self.upstream_ports:
            try:
                up_r, up_w = await asyncio.open_connection(HOST, port)
            except OSError:
                continue
            self.connections.append(port)
            upload = asyncio.create_task(_pipe(client_r, up_w))
            await _pipe(up_r, client_w)
            upload.cancel()
            up_w.close()
            break
        client_w.close()
