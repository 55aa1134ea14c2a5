"""Helpers for integration tests: a real ``sluiceway serve`` in a subprocess, SSE over httpx,
and a raw-socket HTTP/1.1 client for what httpx cannot express (stop reading, tiny receive
buffers, reset the connection).

Everything here waits with a bound; nothing sleeps to assert. (Hence the ``timeout``
parameters of the async helpers: ruff's ASYNC109 is about APIs whose callers could wrap them
in ``asyncio.timeout`` themselves; here the bound is the point.)
"""

# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from sluiceway.control import POSITION_EVENT
from sluiceway.sse import Event, Parser

HOST = "127.0.0.1"
START_TIMEOUT = 15.0


#: Where test servers listen: below the kernel's ephemeral range (32768-60999 by default), so
#: that no outgoing connection of the suite takes a port between its pick and its bind, and
#: chosen at random, so that two test processes (pytest -n 2) rarely pick the same one.
PORT_RANGE = (20000, 32000)
_PORTS = random.Random()  # its own generator: a test that seeds `random` must not repeat ours


def free_port() -> int:
    """A random port of :data:`PORT_RANGE` that was free a moment ago."""
    for _ in range(100):
        port = _PORTS.randint(*PORT_RANGE)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {PORT_RANGE}")


def overfill_bytes() -> int:
    """More bytes than a loopback connection whose reader reads nothing can absorb in kernel
    buffers (the sender's send buffer grows up to tcp_wmem's maximum), with room to spare, so
    that a server writing that much to it must find the socket full."""
    try:
        wmem_max = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    except (OSError, ValueError, IndexError):
        wmem_max = 4 * 1024 * 1024
    return 2 * wmem_max + 4 * 1024 * 1024


class ServerError(RuntimeError):
    pass


@dataclass
class ServerProcess:
    """``python -m sluiceway.cli serve`` on a free loopback port; or, with ``script``, that
    Python file (an ASGI app that serves on ``$PORT`` and answers ``health``)."""

    args: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    script: str | None = None
    health: str = "/healthz"
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    _log: Any = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def ps(self) -> psutil.Process:
        return psutil.Process(self.pid)

    def start(self, *, same_port: bool = False) -> ServerProcess:
        """Start (or, with ``same_port``, restart on the port used before) and wait until
        ``/healthz`` answers."""
        last_error = ""
        for _attempt in range(3):  # the free port may be taken between probe and bind
            if not (same_port and self.port):
                self.port = free_port()
            self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
            env = {
                key: value for key, value in os.environ.items() if not key.startswith("SLUICEWAY_")
            }
            env.update(self.env)
            env["PORT"] = str(self.port)
            command = (
                [sys.executable, self.script, *self.args]
                if self.script
                else [
                    sys.executable,
                    "-m",
                    "sluiceway.cli",
                    "serve",
                    "--host",
                    HOST,
                    "--port",
                    str(self.port),
                    "--log-level",
                    "warning",
                    *self.args,
                ]
            )
            self.proc = subprocess.Popen(
                command, env=env, stdout=self._log, stderr=subprocess.STDOUT
            )
            if self._wait_healthy():
                return self
            last_error = self.output()
            self.stop()
        raise ServerError(f"server did not start: {last_error}")

    def restart(self) -> ServerProcess:
        """Stop (SIGTERM) and start a new process on the same port: a fresh in-memory hub."""
        self.stop()
        return self.start(same_port=True)

    def _wait_healthy(self) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        with httpx.Client(base_url=self.url, timeout=1.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    return False
                with contextlib.suppress(httpx.TransportError):
                    if client.get(self.health).status_code == 200:
                        return True
                time.sleep(0.05)  # polling interval, not an assertion
        return False

    def output(self) -> str:
        if self._log is None or self._log.closed:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def signal(self, signum: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit status."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if self._log is not None and not self._log.closed:
            self._log.close()
        return proc.returncode

    def connection_ports(self) -> set[int]:
        """Remote ports of the server's TCP connections to 127.0.0.1 (i.e. its clients)."""
        ports = set()
        for conn in self.ps.net_connections(kind="tcp"):
            if conn.raddr and conn.laddr and conn.laddr.port == self.port:
                ports.add(conn.raddr.port)
        return ports

    def metrics(self) -> dict[str, float]:
        """``GET /metrics`` as {sample name with labels: value}."""
        text = httpx.get(f"{self.url}/metrics", timeout=5.0).text
        return parse_metrics(text)


def parse_metrics(text: str) -> dict[str, float]:
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        samples[name] = float(value)
    return samples


async def get_metrics(client: httpx.AsyncClient) -> dict[str, float]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    return parse_metrics(response.text)


def client_for(server: ServerProcess, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, timeout=10.0, **kwargs)


# -- SSE over httpx ------------------------------------------------------------------------


def _take_in(events: list[Event], positions: list[Event]) -> list[Event]:
    """``events`` but the hub's position events, which go to ``positions``: like every client
    of Sluiceway's, the helpers take a stream's ``sluiceway.position`` in (its id is the
    parser's last event id) rather than hand it over as an event."""
    kept = []
    for event in events:
        (positions if event.event == POSITION_EVENT else kept).append(event)
    return kept


class SSEStream:
    """Reads an httpx streaming response through :class:`sluiceway.sse.Parser`; position
    events are kept in ``positions``, not returned (see :func:`_take_in`)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.parser = Parser()
        self.raw = bytearray()
        self.ended = False
        self.positions: list[Event] = []
        self._events: deque[Event] = deque()
        self._chunks = response.aiter_bytes()  # decoded: the SSE bytes, compressed or not

    async def _read_more(self) -> bool:
        if self.ended:
            return False
        try:
            chunk = await anext(self._chunks)
        except StopAsyncIteration:
            self.ended = True
            return False
        self.raw += chunk
        self._events.extend(_take_in(self.parser.feed(chunk), self.positions))
        return True

    async def next_event(self, timeout: float = 5.0) -> Event:
        async with asyncio.timeout(timeout):
            while not self._events:
                if not await self._read_more():
                    raise EOFError("the stream ended")
        return self._events.popleft()

    async def events(self, count: int, timeout: float = 5.0) -> list[Event]:
        async with asyncio.timeout(timeout):
            return [await self.next_event(timeout) for _ in range(count)]

    async def until_end(self, timeout: float = 5.0) -> list[Event]:
        """Every remaining event, reading until the server ends the response."""
        async with asyncio.timeout(timeout):
            while await self._read_more():
                pass
        events = list(self._events)
        self._events.clear()
        return events

    async def until_raw(self, needle: bytes, timeout: float = 5.0, start: int = 0) -> None:
        """Read until ``needle`` appears in the bytes received (from offset ``start`` on)."""
        async with asyncio.timeout(timeout):
            while self.raw.find(needle, start) < 0:
                if not await self._read_more():
                    raise EOFError(f"the stream ended before {needle!r}")


@contextlib.asynccontextmanager
async def open_stream(
    client: httpx.AsyncClient,
    path: str,
    *,
    last_event_id: str | None = None,
    params: Any = None,
    headers: Mapping[str, str | bytes] | None = None,
) -> AsyncIterator[SSEStream]:
    all_headers = dict(headers or {})
    if last_event_id is not None:
        all_headers["Last-Event-ID"] = last_event_id
    async with client.stream("GET", path, params=params, headers=all_headers) as response:
        assert response.status_code == 200, (response.status_code, await response.aread())
        yield SSEStream(response)


# -- raw sockets ---------------------------------------------------------------------------


class RawHTTPStream:
    """One HTTP/1.1 GET over a plain socket; decodes the chunked body by hand so the test
    decides exactly when (and whether) to read, and how the connection ends. Position events
    are kept in ``positions``, not returned (see :func:`_take_in`)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.status = 0
        self.headers: dict[str, str] = {}
        self.parser = Parser()
        self.complete = False  # the terminating zero-length chunk arrived
        self.positions: list[Event] = []
        self._events: deque[Event] = deque()

    @property
    def local_port(self) -> int:
        return int(self.writer.get_extra_info("sockname")[1])

    @classmethod
    async def connect(
        cls,
        port: int,
        target: str,
        *,
        headers: Mapping[str, str] | None = None,
        rcvbuf: int | None = None,
        limit: int = 64 * 1024,
    ) -> RawHTTPStream:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connect, so the window is small from the start
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (HOST, port))
        # ``limit`` also bounds how much asyncio reads ahead (2 x limit) while we are not reading.
        reader, writer = await asyncio.open_connection(sock=sock, limit=limit)
        lines = [f"GET {target} HTTP/1.1", f"Host: {HOST}:{port}", "Accept: text/event-stream"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        return cls(reader, writer)

    async def read_head(self, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        for line in header_lines:
            if line:
                name, _, value = line.partition(":")
                self.headers[name.strip().lower()] = value.strip()
        assert self.headers.get("transfer-encoding") == "chunked", self.headers

    async def _read_chunk(self) -> bytes | None:
        """The next chunk's payload; ``None`` after the terminating chunk."""
        size_line = await self.reader.readuntil(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            assert await self.reader.readexactly(2) == b"\r\n"
            self.complete = True
            return None
        payload = await self.reader.readexactly(size)
        assert await self.reader.readexactly(2) == b"\r\n"
        return payload

    async def next_event(self, timeout: float = 5.0) -> Event:
        async with asyncio.timeout(timeout):
            while not self._events:
                chunk = await self._read_chunk()
                if chunk is None:
                    raise EOFError("the response ended")
                self._events.extend(_take_in(self.parser.feed(chunk), self.positions))
        return self._events.popleft()

    async def read_until_eof(self, timeout: float) -> int:
        """Discard everything until the server closes the connection; returns the byte count."""
        total = 0
        async with asyncio.timeout(timeout):
            while data := await self.reader.read(1 << 20):
                total += len(data)
        return total

    def reset(self) -> None:
        """Close abruptly: RST instead of FIN (SO_LINGER with a zero timeout)."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await asyncio.wait_for(self.writer.wait_closed(), 2.0)


async def wait_for(predicate: Any, timeout: float, what: str = "", interval: float = 0.05) -> Any:
    """Poll ``predicate`` (a callable, sync or async) until it returns something truthy;
    an AssertionError naming ``what`` when that takes longer than ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                result = predicate()
                if asyncio.iscoroutine(result):
                    result = await result
                if result:
                    return result
                await asyncio.sleep(interval)
    except TimeoutError:
        raise AssertionError(f"not within {timeout} s: {what or predicate}") from None
