"""A front-end TCP proxy: spreads connections over live backends, and cuts them on demand.

Clients that must survive a backend's death connect to the proxy, never to a backend: each
new connection goes to the next backend in turn, skipping those that refuse (a killed
process, one still starting), so a client that reconnects lands on a live one.  ``cut``
breaks a share of the open connections the way a network does, in the middle of whatever
they carry: the next chunk from the backend is forwarded only in part, then the connection
ends with a FIN or a RST.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import time
from collections.abc import Sequence
from typing import cast

from harness import HOST

#: A backend that refused a connection is skipped for this long (it is probably down).
SKIP_REFUSING_S = 0.5
#: A connection chosen for a cut that carries nothing meanwhile is cut after this long anyway.
CUT_WITHIN_S = 1.0
#: Reading from one side pauses while the other side holds more than this unsent.
HIGH_WATER = 256 * 1024


def _reset(transport: asyncio.BaseTransport) -> None:
    """Close with a RST rather than a FIN (SO_LINGER with a zero timeout), at once."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    cast(asyncio.WriteTransport, transport).abort()


class _Pair:
    """One proxied connection: the client's side and the backend's."""

    __slots__ = ("backend", "client", "closed", "cut_pending", "pending", "upstream")

    def __init__(self, client: asyncio.Transport) -> None:
        self.client = client
        self.upstream: asyncio.Transport | None = None
        self.backend = 0
        self.pending: list[bytes] = []  # from the client before the backend answered
        self.cut_pending = False
        self.closed = False

    def gone(self) -> bool:
        """Closed meanwhile (a method, so that type checkers do not assume it unchanged)."""
        return self.closed

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.client.close()
        if self.upstream is not None:
            self.upstream.close()


class _ClientSide(asyncio.Protocol):
    def __init__(self, proxy: FrontProxy) -> None:
        self.proxy = proxy
        self.pair: _Pair | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        client = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport
        client.set_write_buffer_limits(high=HIGH_WATER)
        self.pair = _Pair(client)
        self.proxy._opened(self.pair)

    def data_received(self, data: bytes) -> None:
        pair = self.pair
        assert pair is not None
        if pair.upstream is None:
            pair.pending.append(data)
        else:
            pair.upstream.write(data)

    def eof_received(self) -> bool:
        assert self.pair is not None
        self.pair.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.pair is not None:
            self.pair.close()
            self.proxy._closed(self.pair)

    # The client reads slowly: stop reading from the backend until it catches up.
    def pause_writing(self) -> None:
        if self.pair is not None and self.pair.upstream is not None:
            self.pair.upstream.pause_reading()

    def resume_writing(self) -> None:
        if self.pair is not None and self.pair.upstream is not None:
            self.pair.upstream.resume_reading()


class _BackendSide(asyncio.Protocol):
    def __init__(self, proxy: FrontProxy, pair: _Pair) -> None:
        self.proxy = proxy
        self.pair = pair

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.Transport, transport).set_write_buffer_limits(high=HIGH_WATER)

    def data_received(self, data: bytes) -> None:
        pair = self.pair
        if pair.closed:
            return
        if pair.cut_pending and len(data) > 1:
            # Mid-chunk: the client gets a prefix of what the backend sent, then nothing.
            pair.client.write(data[: self.proxy.random.randint(1, len(data) - 1)])
            self.proxy._cut_now(pair)
            return
        pair.client.write(data)

    def eof_received(self) -> bool:
        self.pair.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.pair.close()

    def pause_writing(self) -> None:
        self.pair.client.pause_reading()

    def resume_writing(self) -> None:
        self.pair.client.resume_reading()


class FrontProxy:
    """``FrontProxy([8001, 8002, 8003])``; ``await start()``; clients use ``port``.

    ``connections`` counts the connections accepted, ``per_backend`` those forwarded to each
    backend, ``refused`` the backends' refusals, ``unplaced`` the connections no backend
    took (closed at once), ``cuts`` the connections :meth:`cut` broke."""

    def __init__(self, backends: Sequence[int], *, seed: int = 0) -> None:
        self.backends = list(backends)
        self.random = random.Random(seed)
        self.port = 0
        self.connections = 0
        self.per_backend: dict[int, int] = dict.fromkeys(self.backends, 0)
        self.refused = 0
        self.unplaced = 0
        self.cuts = 0
        self._next = 0
        self._skip_until: dict[int, float] = {}
        self._pairs: set[_Pair] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> FrontProxy:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _ClientSide(self), HOST, 0, backlog=4096, reuse_address=True
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def open_connections(self) -> int:
        return len(self._pairs)

    def _opened(self, pair: _Pair) -> None:
        self.connections += 1
        self._pairs.add(pair)
        task = asyncio.get_running_loop().create_task(self._place(pair))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _closed(self, pair: _Pair) -> None:
        self._pairs.discard(pair)

    def _candidates(self) -> list[int]:
        """The backends in round-robin order from the next one, those skipped last."""
        now = time.monotonic()
        start = self._next
        self._next = (self._next + 1) % len(self.backends)
        order = self.backends[start:] + self.backends[:start]
        return sorted(order, key=lambda port: self._skip_until.get(port, 0.0) > now)

    async def _place(self, pair: _Pair) -> None:
        loop = asyncio.get_running_loop()
        pair.client.pause_reading()  # until there is somewhere to send what it says
        for port in self._candidates():
            if pair.gone():
                return
            try:
                async with asyncio.timeout(2.0):
                    transport, _ = await loop.create_connection(
                        lambda: _BackendSide(self, pair), HOST, port
                    )
            except (OSError, TimeoutError):
                self.refused += 1
                self._skip_until[port] = time.monotonic() + SKIP_REFUSING_S
                continue
            if pair.gone():
                transport.close()
                return
            pair.upstream = transport
            pair.backend = port
            self.per_backend[port] = self.per_backend.get(port, 0) + 1
            for data in pair.pending:
                transport.write(data)
            pair.pending.clear()
            pair.client.resume_reading()
            return
        self.unplaced += 1
        pair.close()

    def cut(self, share: float) -> int:
        """Mark ``share`` (0..1) of the open connections to be cut mid-chunk; returns how many.
        Each is cut on the next bytes its backend sends, or after :data:`CUT_WITHIN_S`."""
        placed = [p for p in self._pairs if p.upstream is not None and not p.cut_pending]
        chosen = self.random.sample(placed, round(len(placed) * share))
        loop = asyncio.get_running_loop()
        for pair in chosen:
            pair.cut_pending = True
            loop.call_later(CUT_WITHIN_S, self._cut_now, pair)
        return len(chosen)

    def _cut_now(self, pair: _Pair) -> None:
        if pair.closed:
            return
        self.cuts += 1
        pair.closed = True
        if self.random.random() < 0.5:
            _reset(pair.client)
        else:
            pair.client.close()  # a FIN after what was written
        if pair.upstream is not None:
            pair.upstream.abort()

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for pair in list(self._pairs):
            pair.close()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await self._server.wait_closed()
