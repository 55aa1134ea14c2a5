"""The uvicorn server of ``sluiceway serve``: its configuration, and a ``Server`` that ends
the event streams on shutdown and drops connections that cannot be flushed (what it ends and
drops is given to it: this package imports nothing else of sluiceway). The uvicorn internals
touched are those of :mod:`.internals`, Server section."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import uvicorn

from sluiceway.uvicorn_adapter.forwarded import ForwardedClients
from sluiceway.uvicorn_adapter.internals import (
    connection_transports,
    forget_signals,
    listeners,
)

#: The loggers uvicorn logs requests and errors to.
SERVER_LOGGERS = ("uvicorn.access", "uvicorn.error")


class StreamingServer(uvicorn.Server):
    """uvicorn waits for open responses before it shuts down, and an event stream never ends
    by itself; so stop accepting, end the streams (``end_streams``: after flushing what was
    published), then let uvicorn finish. Meanwhile, drop the connections of streams that were
    aborted (``take_aborted``: client addresses) and those stuck closing for longer than
    ``write_timeout`` s."""

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        end_streams: Callable[[], Awaitable[None]],
        take_aborted: Callable[[], set[tuple[str, int]]],
        write_timeout: float,
    ) -> None:
        super().__init__(config)
        self.end_streams = end_streams
        self.take_aborted = take_aborted
        self.write_timeout = write_timeout
        self._stuck_since: dict[object, float] = {}

    # internals 10: uvicorn's housekeeping tick.
    async def on_tick(self, counter: int) -> bool:
        if counter % 10 == 0:  # uvicorn ticks every 0.1 s
            self._abort_stuck_connections(time.monotonic())
        aborted = self.take_aborted()
        if aborted:
            self._abort_connections_from(aborted)
        return await super().on_tick(counter)

    def _abort_connections_from(self, clients: set[tuple[str, int]]) -> None:
        """Drop the connections whose streams were aborted (overflow, write timeout)."""
        for _connection, transport in connection_transports(self):
            peer = transport.get_extra_info("peername")  # (host, port[, flow, scope])
            if isinstance(peer, tuple) and (peer[0], peer[1]) in clients:
                transport.abort()

    def _abort_stuck_connections(self, now: float) -> None:
        """Abort connections that are closing but cannot flush, for longer than the write
        timeout. An ASGI app cannot abort a connection: a stream it drops for a stuck socket
        just returns, and uvicorn's ``transport.close()`` then waits forever for a client that
        reads nothing. (The native stream path aborts its own transports.)"""
        stuck: dict[object, float] = {}
        for connection, transport in connection_transports(self):
            if not transport.is_closing() or not transport.get_write_buffer_size():
                continue
            since = self._stuck_since.get(connection, now)
            if now - since >= self.write_timeout:
                transport.abort()
            else:
                stuck[connection] = since
        self._stuck_since = stuck

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in listeners(self):
            server.close()
        await self.end_streams()
        await super().shutdown(sockets)
        # uvicorn re-raises the signal that stopped it once it is done; our shutdown was
        # graceful, so exit with status 0 instead of dying of SIGTERM.
        forget_signals(self)


def streaming_server(
    app: Any,
    *,
    host: str,
    port: int,
    log_level: str,
    backlog: int,
    http: type[asyncio.Protocol] | None,
    ws: type[asyncio.Protocol],
    ws_max_size: int,
    end_streams: Callable[[], Awaitable[None]],
    take_aborted: Callable[[], set[tuple[str, int]]],
    write_timeout: float,
    forwarded_allow_ips: Sequence[str],
) -> StreamingServer:
    """The server of ``sluiceway serve`` for ``app``, with the ``http`` protocol class (None:
    uvicorn's own) and the ``ws`` one; ``.run(sockets=...)`` runs it in the foreground until
    SIGINT/SIGTERM. ``forwarded_allow_ips``: the proxies whose ``X-Forwarded-*`` headers are
    believed, by the application and by the paths that bypass it alike."""
    forwarded = ForwardedClients(forwarded_allow_ips)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        backlog=backlog,
        lifespan="on",
        http=_believing(http, forwarded) if http is not None else "auto",
        ws=_believing(ws, forwarded),
        # uvicorn's ProxyHeadersMiddleware around the app, with the same proxies as the
        # native paths (which apply it themselves: they bypass the app).
        proxy_headers=True,
        forwarded_allow_ips=forwarded.trusted,
        # Frames over this are refused by uvicorn (1009) before they are buffered whole.
        ws_max_size=ws_max_size,
        # permessage-deflate would compress each frame again for every connection (a fan-out
        # encodes once) and hold a zlib context of ~100s of KiB per idle connection.
        ws_per_message_deflate=False,
        # The Centrifugo protocol's own pings find dead clients (3012); WebSocket-level pings
        # on top would cost a timer per connection.
        ws_ping_interval=None,
        # Streams are ended (or dropped, if stuck) by StreamingServer.shutdown before uvicorn
        # waits for connections; this only bounds what is left, e.g. a slow upload.
        timeout_graceful_shutdown=1,
    )
    return StreamingServer(
        config, end_streams=end_streams, take_aborted=take_aborted, write_timeout=write_timeout
    )


def _believing(protocol: type[asyncio.Protocol], forwarded: ForwardedClients) -> type[Any]:
    """``protocol`` bound to ``forwarded`` if it serves requests outside the app (it has a
    ``forwarded`` attribute: the native HTTP and WebSocket protocols), else itself."""
    if not hasattr(protocol, "forwarded"):
        return protocol
    return type(protocol.__name__, (protocol,), {"forwarded": forwarded})


def filter_server_logs(log_filter: logging.Filter) -> None:
    """Add ``log_filter`` to the loggers uvicorn logs requests and errors to."""
    for name in SERVER_LOGGERS:
        logging.getLogger(name).addFilter(log_filter)
