"""The native stream path under uvicorn: its httptools protocol, with the requests that a
:class:`NativePath` takes (``sluiceway serve``'s: :class:`sluiceway.server.native.NativeStreams`)
answered straight on the socket, with no ASGI task. The uvicorn internals touched are those of
:mod:`.internals`, HTTP section."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, Protocol

from sluiceway.uvicorn_adapter.forwarded import ForwardedClients
from sluiceway.uvicorn_adapter.internals import (
    HAS_START_ASGI_TASK,
    HttpToolsProtocol,
    RequestResponseCycle,
    access_logger,
    current_cycle,
    default_headers,
    http_loop,
    http_transport,
    log_access,
    mark_response_complete,
    mark_response_started,
    write_paused,
)

#: False if the installed uvicorn lacks the hook we use; ``serve`` then stays on pure ASGI.
AVAILABLE = HAS_START_ASGI_TASK

#: The scope extension holding the socket's peer (the same name as
#: ``sluiceway.asgi.shutdown.PEER_EXTENSION``, which reads it; the packages import nothing of
#: each other's at module level, and a test keeps the two equal).
PEER_EXTENSION = "sluiceway.peer"


class StreamOwner(Protocol):
    """The connection, as the sink of a native stream sees it."""

    def stream_finished(self) -> None:
        """The response is over (the sink wrote its end, or dropped the connection)."""


class NativeSink(Protocol):
    """A response written straight to the socket, driven by the connection's callbacks."""

    def start(self) -> None:
        """Begin writing (the head is written; the connection holds this sink)."""

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def disconnected(self) -> None:
        """The client left."""


class NativePath(Protocol):
    """Which requests are answered natively, and how."""

    def open(
        self,
        scope: Any,
        *,
        server_headers: Iterable[tuple[bytes, bytes]],
        transport: asyncio.Transport,
        loop: asyncio.AbstractEventLoop,
        write_paused: bool,
        owner: StreamOwner,
    ) -> NativeSink | None:
        """Take the request of ``scope``: write the response's head (with ``server_headers``,
        those the server adds to every response) and return its sink, not yet started; or
        None, writing nothing, to leave it to the ASGI app."""

    def redact(self, target: str) -> str:
        """The request target as the access log may show it."""


class NoNativePath:
    """A :class:`NativePath` that takes nothing: every request goes to the app (``sluiceway
    serve`` with ``native_streams=false``), on a connection that still keeps its socket's peer
    for the app (:data:`PEER_EXTENSION`)."""

    def open(self, scope: Any, **kwargs: Any) -> NativeSink | None:
        return None

    def redact(self, target: str) -> str:
        return target


class StreamingHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the requests ``native`` takes served natively.

    Bound to a :class:`NativePath` with :func:`protocol_for`.
    """

    native: NativePath
    #: The proxies believed (bound by ``streaming_server``); None: the peer is the client.
    forwarded: ForwardedClients | None = None
    sink: NativeSink | None = None

    # internals 1: the hook where uvicorn hands a parsed request to the app.
    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        if self.sink is None and self._serve_natively(cycle):
            return
        # The socket's peer, kept where the proxy-headers middleware (which rewrites
        # scope["client"] to the forwarded client) leaves it: what abort_connection names.
        scope: dict[str, Any] = cycle.scope  # type: ignore[assignment]
        scope.setdefault("extensions", {})[PEER_EXTENSION] = scope.get("client")
        super()._start_asgi_task(cycle, app)

    def _serve_natively(self, cycle: RequestResponseCycle) -> bool:
        scope = cycle.scope
        sink = self.native.open(
            scope,
            server_headers=default_headers(self),
            transport=http_transport(self),
            loop=http_loop(self),
            write_paused=write_paused(self),
            owner=self,
        )
        if sink is None:
            return False
        mark_response_started(cycle)
        logger = access_logger(self)
        if logger is not None:
            # The app's middleware would have named the client a trusted proxy forwards
            # for; the log is the only reader of the client here, so only then.
            if self.forwarded is not None:
                self.forwarded.apply(scope)
            log_access(logger, scope, 200, self.native.redact)
        self.sink = sink
        sink.start()
        return True

    def stream_finished(self) -> None:
        cycle = current_cycle(self)
        if cycle is not None:
            mark_response_complete(cycle)
        self.sink = None

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.sink is not None:
            self.sink.pause()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.sink is not None:
            self.sink.resume()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.sink is not None:
            self.sink.disconnected()
        super().connection_lost(exc)


def protocol_for(native: NativePath) -> type[asyncio.Protocol]:
    """A protocol class bound to ``native``, for ``uvicorn.Config(http=...)``."""
    return type("BoundStreamingHttpProtocol", (StreamingHttpProtocol,), {"native": native})
