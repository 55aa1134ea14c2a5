"""Our own Redis connections for the hot paths, read by hand with hiredis' parser.

redis-py costs tens of µs per command and per notification (an ``asyncio.timeout`` per read, a
logger lookup per push, several layers of wrappers): with it, a token through Redis cost 5x a
token in-process when many generations run side by side (``bench/run_tokens.py``, paced).
Here every read of the socket feeds ``hiredis.Reader`` and every complete reply in it is
handled in the same call, a few µs each:

* :class:`CommandConnection` sends a batch of commands in one write and answers each
  command's future in order (the Redis backend's publishes, snapshots and run records);
* :class:`PubSubConnection` subscribes, unsubscribes and pings, and delivers notifications.

redis-py keeps everything else (rare commands, cluster topology, redirections).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import hiredis
from redis.asyncio.connection import SSLConnection, parse_url
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    ResponseError,
    TryAgainError,
)

#: Called with each notification's channel and payload.
OnMessage = Callable[[str, str], None]


@dataclass(frozen=True)
class Address:
    """Where a pub/sub connection goes, and as whom."""

    host: str = "localhost"
    port: int = 6379
    path: str | None = None  # a Unix socket instead of host:port
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None
    connect_timeout: float = 5.0

    @classmethod
    def from_url(cls, url: str, connect_timeout: float = 5.0) -> Address:
        """``redis://``, ``rediss://`` or ``unix://`` as redis-py reads them."""
        options: dict[str, Any] = dict(parse_url(url))
        tls = None
        if options.get("connection_class") is SSLConnection:
            tls = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
            if options.get("ssl_cert_reqs") in ("none", ssl.CERT_NONE):
                tls.check_hostname = False
                tls.verify_mode = ssl.CERT_NONE
        return cls(
            host=options.get("host", "localhost"),
            port=int(options.get("port", 6379)),
            path=options.get("path"),
            db=int(options.get("db", 0)),
            username=options.get("username"),
            password=options.get("password"),
            tls=tls,
            connect_timeout=connect_timeout,
        )

    def node(self, host: str, port: int) -> Address:
        """Another node of the same cluster: same credentials and TLS."""
        return Address(
            host, port, None, 0, self.username, self.password, self.tls, self.connect_timeout
        )


def pack(*command: str | int | bytes) -> bytes:
    """A command in RESP (an array of bulk strings), packed by hiredis."""
    packed: bytes = hiredis.pack_command(command)  # type: ignore[arg-type]  # its stub says a 1-tuple
    return packed


class ConnectionLost(ConnectionError):
    """The connection is gone, or its stream can no longer be trusted."""


#: Error replies as redis-py raises them (a cluster's redirections, a script not loaded).
_ERRORS: dict[str, type[ResponseError]] = {
    "NOSCRIPT": NoScriptError,
    "MOVED": MovedError,
    "ASK": AskError,
    "CLUSTERDOWN": ClusterDownError,
    "TRYAGAIN": TryAgainError,
}


def error_of(reply: hiredis.ReplyError) -> ResponseError:
    """An error reply as redis-py's exception (``MovedError`` for ``MOVED 3999 host:port``)."""
    text = str(reply)
    code, _, rest = text.partition(" ")
    kind = _ERRORS.get(code)
    if kind in (MovedError, AskError):
        return kind(rest)
    return (kind or ResponseError)(text)


_Connection = TypeVar("_Connection", bound="_Resp")


class _Resp(asyncio.Protocol):
    """Connect, authenticate, parse: what both connections share."""

    def __init__(self) -> None:
        self._reader = self._new_reader()
        self._transport: Any = None  # uvloop's transports are not asyncio.Transport
        #: Replies to the set-up commands (AUTH, SELECT), in order.
        self._setup: deque[asyncio.Future[Any]] = deque()
        self.lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.heard = time.monotonic()

    @staticmethod
    def _new_reader() -> hiredis.Reader:
        return hiredis.Reader()

    @classmethod
    async def _open(
        cls: type[_Connection], address: Address, factory: Callable[[], _Connection]
    ) -> _Connection:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(address.connect_timeout):
            if address.path is not None:
                _, conn = await loop.create_unix_connection(factory, address.path, ssl=address.tls)
            else:
                _, conn = await loop.create_connection(
                    factory,
                    address.host,
                    address.port,
                    ssl=address.tls,
                    server_hostname=address.host if address.tls is not None else None,
                )
            setup = []
            if address.password is not None:
                user = (address.username,) if address.username else ()
                setup.append(("AUTH", *user, address.password))
            if address.db:
                setup.append(("SELECT", str(address.db)))
            for command in setup:
                waiter = loop.create_future()
                conn._setup.append(waiter)
                conn._send(pack(*command))
                reply = await waiter
                if isinstance(reply, hiredis.ReplyError):
                    conn.close()
                    raise ConnectionLost(f"Redis refused {command[0]}: {reply}")
        return conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # Closing resets: what the kernel has not delivered is dropped, not sent on. A
            # command cut off by a partition, whose caller was answered 503, must not reach
            # Redis and run once the link is back.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def data_received(self, data: bytes) -> None:
        self.heard = time.monotonic()
        self._reader.feed(data)
        try:
            while (reply := self._reader.gets()) is not False:
                if self._setup:
                    self._setup.popleft().set_result(reply)
                else:
                    self._handle(reply)
        except hiredis.ProtocolError as exc:  # the stream is garbled: nothing after it is safe
            self._drop(f"protocol error: {exc}")
        except ConnectionLost as exc:
            self._drop(str(exc))

    def _handle(self, reply: Any) -> None:
        raise NotImplementedError

    def connection_lost(self, exc: Exception | None) -> None:
        self._drop(f"connection lost: {exc}" if exc else "connection closed by the server")

    def _drop(self, why: str) -> None:
        if not self.lost.done():
            self.lost.set_result(why)
        for waiter in self._waiters():
            if not waiter.done():
                waiter.set_exception(ConnectionLost(why))
                waiter.exception()  # retrieved: its caller may be gone (no "never retrieved")
        if self._transport is not None:
            self._transport.abort()

    def _waiters(self) -> list[asyncio.Future[Any]]:
        waiters = list(self._setup)
        self._setup.clear()
        return waiters

    def _send(self, data: bytes) -> None:
        if self.lost.done():
            raise ConnectionLost(self.lost.result())
        self._transport.write(data)

    @property
    def closed(self) -> bool:
        return self.lost.done()

    def close(self) -> None:
        self._drop("closed")


class CommandConnection(_Resp):
    """``conn = await CommandConnection.open(address)``; ``futures = conn.send(packed, n)``
    sends ``n`` packed commands in one write; each future gets its command's reply (bytes,
    ints, lists) or its error reply as redis-py's exception.  Replies come back in order, so
    commands sent on one connection run in the order sent."""

    def __init__(self) -> None:
        super().__init__()
        self._pending: deque[asyncio.Future[Any]] = deque()
        #: The SHA1s of the scripts loaded on this connection's server (its user's record).
        self.scripts: set[str] = set()

    @classmethod
    async def open(cls, address: Address) -> CommandConnection:
        return await cls._open(address, cls)

    def _handle(self, reply: Any) -> None:
        if not self._pending:
            raise ConnectionLost("a reply to no command")
        future = self._pending.popleft()
        if future.done():  # its caller gave up
            return
        if isinstance(reply, hiredis.ReplyError):
            future.set_exception(error_of(reply))
            future.exception()  # its caller may be gone
        else:
            future.set_result(reply)

    def _waiters(self) -> list[asyncio.Future[Any]]:
        waiters = [*super()._waiters(), *self._pending]
        self._pending.clear()
        return waiters

    def send(self, packed: bytes, count: int) -> list[asyncio.Future[Any]]:
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(count)]
        self._send(packed)
        self._pending.extend(futures)
        return futures


class PubSubConnection(_Resp):
    """``conn = await PubSubConnection.open(address, on_message)``; then :meth:`subscribe`,
    :meth:`unsubscribe`, :meth:`ping`; :attr:`lost` completes (with the reason) when the
    connection is gone.  :attr:`heard` is when the server last said anything."""

    def __init__(self, on_message: OnMessage, on_moved: Callable[[str], bool]) -> None:
        super().__init__()
        self._on_message = on_message
        self._on_moved = on_moved
        self._confirm: dict[str, asyncio.Future[None]] = {}

    @staticmethod
    def _new_reader() -> hiredis.Reader:
        # Notifications are text (the backend publishes JSON and plain lines).
        return hiredis.Reader(encoding="utf-8", errors="surrogateescape")

    @classmethod
    async def open(
        cls,
        address: Address,
        on_message: OnMessage,
        on_moved: Callable[[str], bool] = lambda channel: True,
    ) -> PubSubConnection:
        """Connect (and ``AUTH``); raises :class:`OSError` on failure.  ``on_moved(channel)``
        says whether an unsolicited unsubscribe of ``channel`` means the channel moved (the
        connection is then dropped)."""
        return await cls._open(address, lambda: cls(on_message, on_moved))

    def _handle(self, reply: Any) -> None:
        if isinstance(reply, list) and len(reply) == 3:
            kind, channel, payload = reply
            if kind in ("message", "smessage"):
                self._on_message(channel, payload)
            elif kind in ("subscribe", "ssubscribe"):
                waiter = self._confirm.pop(channel, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
            elif kind == "sunsubscribe" and self._on_moved(channel):
                raise ConnectionLost(f"moved: {channel}")
        elif isinstance(reply, hiredis.ReplyError):
            # A refused command (a MOVED SSUBSCRIBE): never half-subscribed.
            raise ConnectionLost(f"Redis refused a command: {reply}")
        # Anything else (pong, unsubscribe confirmations) only proves the server is there.

    def _waiters(self) -> list[asyncio.Future[Any]]:
        waiters: list[asyncio.Future[Any]] = [*super()._waiters(), *self._confirm.values()]
        self._confirm.clear()
        return waiters

    async def subscribe(self, channels: list[str], *, sharded: bool) -> None:
        """Subscribe (one command per channel: on a cluster one ``SSUBSCRIBE`` may name one
        slot only) and wait until the server confirms every one."""
        loop = asyncio.get_running_loop()
        command = "SSUBSCRIBE" if sharded else "SUBSCRIBE"
        waiters = []
        for channel in channels:
            waiter = self._confirm.get(channel)
            if waiter is None:
                waiter = self._confirm[channel] = loop.create_future()
            waiters.append(waiter)
        self._send(b"".join(pack(command, channel) for channel in channels))
        for waiter in waiters:
            await waiter

    def unsubscribe(self, channel: str, *, sharded: bool) -> None:
        self._send(pack("SUNSUBSCRIBE" if sharded else "UNSUBSCRIBE", channel))

    def ping(self) -> None:
        self._send(pack("PING"))
