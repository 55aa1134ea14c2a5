"""Running the server under uvicorn, ending event streams cleanly on shutdown."""

from __future__ import annotations

import gc
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable

import uvicorn

from sluiceway.asgi import close_all_streams
from sluiceway.asgi.shutdown import take_aborted
from sluiceway.hub import Hub
from sluiceway.server import native, native_ws
from sluiceway.server.admission import redact_tokens
from sluiceway.server.app import create_app, make_hub
from sluiceway.server.services import Services
from sluiceway.server.settings import Settings
from sluiceway.server.workers import REUSE_PORT_ENV, check_backend, reuse_port_socket, supervise

logger = logging.getLogger("sluiceway")

NOBODY_PUBLISHES = (
    "publishing needs a publish key or a token, and neither is configured: nobody can publish."
    " Set SLUICEWAY_PUBLISH_KEY, SLUICEWAY_TOKEN_HMAC_SECRET or SLUICEWAY_TOKEN_PUBLIC_KEY."
)
EXPOSED_WARNING = """
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
!!  sluiceway is listening on {host}:{port} with anonymous publishing ON.
!!  Anyone who can reach this address can publish to every topic.
!!  Unset SLUICEWAY_ANONYMOUS_PUBLISH and use a publish key or tokens, or bind to 127.0.0.1.
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
"""
EXPOSED_READS_WARNING = """
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
!!  sluiceway is listening on {host}:{port} with anonymous reading ON.
!!  Anyone who can reach this address can read, without a token: every topic and its
!!  history, the files under {files_dir}, the tables {tables} as exports{proxy},
!!  and the server's metrics.
!!  Set SLUICEWAY_ANONYMOUS_SUBSCRIBE=false and use tokens, or bind to 127.0.0.1.
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
"""


class RedactTokens(logging.Filter):
    """Keeps credentials out of uvicorn's logs: token parameters in logged request targets
    (``?access_token=...``) are replaced (see :func:`redact_tokens`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(
            isinstance(arg, str) and "?" in arg for arg in record.args
        ):
            record.args = tuple(
                redact_tokens(arg) if isinstance(arg, str) and "?" in arg else arg
                for arg in record.args
            )
        return True


def warn_if_exposed(settings: Settings) -> None:
    """Say loudly what anyone can do when the server is reachable from elsewhere."""
    if settings.exposed_without_key:
        logger.warning(EXPOSED_WARNING.format(host=settings.host, port=settings.port))
    elif settings.nobody_may_publish:
        logger.warning(NOBODY_PUBLISHES)
    if settings.exposed_reads:
        proxy = f", and /proxy to {', '.join(settings.proxy_allow)}" if settings.proxy_allow else ""
        logger.warning(
            EXPOSED_READS_WARNING.format(
                host=settings.host,
                port=settings.port,
                files_dir=settings.files_dir.resolve(),
                tables=", ".join(settings.export_tables) or "(none)",
                proxy=proxy,
            )
        )


class StreamingServer(uvicorn.Server):
    """uvicorn waits for open responses before it shuts down, and an event stream never ends
    by itself; so stop accepting, end the streams (after flushing what was published), then
    let uvicorn finish."""

    def __init__(
        self,
        config: uvicorn.Config,
        hub: Hub,
        timeout: float,
        stop_work: Callable[[], Awaitable[None]],
    ) -> None:
        super().__init__(config)
        self.hub = hub
        self.stream_timeout = timeout
        self.stop_work = stop_work
        self._stuck_since: dict[object, float] = {}

    async def on_tick(self, counter: int) -> bool:
        if counter % 10 == 0:  # uvicorn ticks every 0.1 s
            self._abort_stuck_connections(time.monotonic())
        aborted = take_aborted()
        if aborted:
            self._abort_connections_from(aborted)
        return await super().on_tick(counter)

    def _abort_connections_from(self, clients: set[tuple[str, int]]) -> None:
        """Drop the connections whose streams were aborted (overflow, write timeout)."""
        for connection in list(self.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is None:
                continue
            peer = transport.get_extra_info("peername")  # (host, port[, flow, scope])
            if isinstance(peer, tuple) and (peer[0], peer[1]) in clients:
                transport.abort()

    def _abort_stuck_connections(self, now: float) -> None:
        """Abort connections that are closing but cannot flush, for longer than the write
        timeout. An ASGI app cannot abort a connection: a stream it drops for a stuck socket
        just returns, and uvicorn's ``transport.close()`` then waits forever for a client that
        reads nothing. (The native stream path aborts its own transports.)"""
        stuck: dict[object, float] = {}
        for connection in list(self.server_state.connections):
            transport = getattr(connection, "transport", None)
            if (
                transport is None
                or not transport.is_closing()
                or not transport.get_write_buffer_size()
            ):
                continue
            since = self._stuck_since.get(connection, now)
            if now - since >= self.hub.config.write_timeout:
                transport.abort()
            else:
                stuck[connection] = since
        self._stuck_since = stuck

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        # Runs and jobs end first, publishing their last events while the hub takes them;
        # then the hub ends the streams, after those events are flushed.
        await self.stop_work()
        await self.hub.aclose(self.stream_timeout)
        await close_all_streams(self.stream_timeout)
        await super().shutdown(sockets)
        # uvicorn re-raises the signal that stopped it once it is done; our shutdown was
        # graceful, so exit with status 0 instead of dying of SIGTERM.
        self._captured_signals.clear()


def serve(settings: Settings) -> None:
    """Run ``sluiceway serve`` in the foreground until SIGINT/SIGTERM.

    Raises :class:`BackendUnavailable` when a shared backend cannot be reached, and
    ``ValueError`` for settings that cannot work together.
    """
    if settings.workers > 1:
        supervise(settings)
        return
    if settings.shared_backend:
        check_backend(settings.backend)
    hub = make_hub(settings)
    app = create_app(settings, hub)
    services: Services = app.state.services
    use_native = settings.native_streams and native.AVAILABLE
    if settings.native_streams and not native.AVAILABLE:
        logger.warning("this uvicorn has no hook for native streams: serving them through ASGI")
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        backlog=settings.backlog,
        lifespan="on",
        # Hub streams written straight to the socket; everything else through ASGI.
        http=native.protocol_for(hub, settings, services.admission) if use_native else "auto",
        # uvicorn's sans-I/O implementation (the lightest per connection), writing frames
        # straight to the socket. Frames over twice the protocol's limit are refused by
        # uvicorn (1009) before they are buffered whole.
        ws=native_ws.protocol_for(services.websocket, services.admission),
        ws_max_size=2 * settings.ws_max_frame_bytes,
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
    # Request targets are logged by uvicorn (and by the native path, already redacted).
    for name in ("uvicorn.access", "uvicorn.error"):
        logging.getLogger(name).addFilter(RedactTokens())
    warn_if_exposed(settings)
    # A connection allocates dozens of container objects; with the default thresholds the
    # cyclic GC runs a full pass over every live connection again and again while thousands
    # connect (measured: 10,000 subscribers accepted in 2.0 s before, 1.4 s after). What is
    # loaded by now lives as long as the process, so freeze it out of every pass, and collect
    # less often: the hot paths create few reference cycles.
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)
    sockets = None
    if os.environ.get(REUSE_PORT_ENV):  # a worker of `serve --workers N`
        sockets = [reuse_port_socket(settings.host, settings.port, settings.backlog)]
    StreamingServer(config, hub, settings.shutdown_timeout, services.stop_work).run(sockets=sockets)
