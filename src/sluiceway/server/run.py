"""Running ``sluiceway serve``: the app, its hub and the warnings, served by uvicorn
(:mod:`sluiceway.uvicorn_adapter.server`, which ends event streams cleanly on shutdown)."""

from __future__ import annotations

import gc
import logging
import os

from sluiceway.asgi import close_all_streams
from sluiceway.asgi.shutdown import take_aborted
from sluiceway.server import native_ws
from sluiceway.server.admission import redact_tokens
from sluiceway.server.app import create_app, make_hub
from sluiceway.server.native import NativeStreams
from sluiceway.server.services import Services
from sluiceway.server.settings import Settings
from sluiceway.server.workers import REUSE_PORT_ENV, check_backend, reuse_port_socket, supervise
from sluiceway.uvicorn_adapter import http
from sluiceway.uvicorn_adapter.server import filter_server_logs, streaming_server

logger = logging.getLogger("sluiceway")

NOBODY_PUBLISHES = (
    "publishing needs a publish key or a token, and neither is configured: nobody can publish."
    " Set SLUICEWAY_PUBLISH_KEY, SLUICEWAY_TOKEN_HMAC_SECRET or SLUICEWAY_TOKEN_PUBLIC_KEY."
)
EXPOSED_WARNING = """
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
!!  sluiceway is reachable from elsewhere ({exposure}) with anonymous publishing ON.
!!  Anyone who can reach this address can publish to every topic.
!!  Unset SLUICEWAY_ANONYMOUS_PUBLISH and use a publish key or tokens.
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
"""
EXPOSED_READS_WARNING = """
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
!!  sluiceway is reachable from elsewhere ({exposure}) with anonymous reading ON.
!!  Anyone who can reach this address can read, without a token: every topic and its
!!  history, the files under {files_dir}, the tables {tables} as exports{proxy},
!!  and the server's metrics.
!!  Set SLUICEWAY_ANONYMOUS_SUBSCRIBE=false and use tokens.
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
"""


class RedactTokens(logging.Filter):
    """Keeps credentials out of the server's logs: token parameters in logged request targets
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
    """Say loudly what anyone can do when the server is reachable from elsewhere (bound
    beyond loopback, or behind a proxy: :attr:`Settings.exposure`)."""
    if settings.exposed_without_key:
        logger.warning(EXPOSED_WARNING.format(exposure=settings.exposure))
    elif settings.nobody_may_publish:
        logger.warning(NOBODY_PUBLISHES)
    if settings.exposed_reads:
        proxy = f", and /proxy to {', '.join(settings.proxy_allow)}" if settings.proxy_allow else ""
        logger.warning(
            EXPOSED_READS_WARNING.format(
                exposure=settings.exposure,
                files_dir=settings.files_dir.resolve(),
                tables=", ".join(settings.export_tables) or "(none)",
                proxy=proxy,
            )
        )


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
    use_native = settings.native_streams and http.AVAILABLE
    if settings.native_streams and not http.AVAILABLE:
        logger.warning("this uvicorn has no hook for native streams: serving them through ASGI")

    async def end_streams() -> None:
        # Runs and jobs end first, publishing their last events while the hub takes them;
        # then the hub ends the streams, after those events are flushed.
        await services.stop_work()
        await hub.aclose(settings.shutdown_timeout)
        await close_all_streams(settings.shutdown_timeout)

    server = streaming_server(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        backlog=settings.backlog,
        # Hub streams written straight to the socket; everything else through ASGI.
        http=(
            http.protocol_for(
                NativeStreams(hub, settings, services.admission)
                if use_native
                else http.NoNativePath()
            )
            if http.AVAILABLE
            else None
        ),
        # uvicorn's sans-I/O implementation (the lightest per connection), writing frames
        # straight to the socket; frames over twice the protocol's limit are refused.
        ws=native_ws.protocol_for(services.websocket, services.admission),
        ws_max_size=2 * settings.ws_max_frame_bytes,
        end_streams=end_streams,
        take_aborted=take_aborted,
        write_timeout=hub.config.write_timeout,
        forwarded_allow_ips=settings.trusted_proxies,
    )
    # Request targets are logged by uvicorn (and by the native path, already redacted).
    filter_server_logs(RedactTokens())
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
    server.run(sockets=sockets)
