"""Running the server under uvicorn, ending event streams cleanly on shutdown."""

from __future__ import annotations

import logging
import socket

import uvicorn

from sluiceway.asgi import close_all_streams
from sluiceway.hub import Hub
from sluiceway.server import native
from sluiceway.server.app import create_app
from sluiceway.server.settings import Settings

logger = logging.getLogger("sluiceway")

EXPOSED_WARNING = """
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
!!  sluiceway is listening on {host}:{port} with NO publish key.
!!  Anyone who can reach this address can publish to every topic.
!!  Set SLUICEWAY_PUBLISH_KEY (or --publish-key), or bind to 127.0.0.1.
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
"""


class StreamingServer(uvicorn.Server):
    """uvicorn waits for open responses before it shuts down, and an event stream never ends
    by itself; so stop accepting, end the streams (after flushing what was published), then
    let uvicorn finish."""

    def __init__(self, config: uvicorn.Config, hub: Hub, timeout: float) -> None:
        super().__init__(config)
        self.hub = hub
        self.stream_timeout = timeout

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        await self.hub.aclose(self.stream_timeout)
        await close_all_streams(self.stream_timeout)
        await super().shutdown(sockets)


def serve(settings: Settings) -> None:
    """Run ``sluiceway serve`` in the foreground until SIGINT/SIGTERM."""
    hub = Hub(settings.hub_config())
    app = create_app(settings, hub)
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
        http=native.protocol_for(hub, settings) if use_native else "auto",
        # A backstop: streams are ended by StreamingServer.shutdown well before this.
        timeout_graceful_shutdown=settings.shutdown_timeout + 5,
    )
    if settings.exposed_without_key:
        logger.warning(EXPOSED_WARNING.format(host=settings.host, port=settings.port))
    StreamingServer(config, hub, settings.shutdown_timeout).run()
