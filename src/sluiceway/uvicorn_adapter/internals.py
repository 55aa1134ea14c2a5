"""The uvicorn internals sluiceway uses: each one here, once, with why.

uvicorn documents ``Config``, ``Server`` and its ``run``/``serve``, and that ``Config(http=...,
ws=...)`` accepts a protocol class; the protocols' attributes and hooks are not documented.
The fast paths of ``sluiceway serve`` need a few of them. Each is read or written by exactly
one function (or, for a hook, overridden by exactly one method) named here, and checked by
``tests/test_uvicorn_versions.py`` against the oldest and the newest supported uvicorn.

0. The protocol classes' modules (``uvicorn.protocols.http.httptools_impl``,
   ``uvicorn.protocols.websockets.websockets_sansio_impl``) and ``uvicorn.protocols.utils``:
   imported here only, and re-exported.

HTTP (:mod:`.http`, subclassing ``HttpToolsProtocol``):

1. ``HttpToolsProtocol._start_asgi_task(cycle, app)`` — overridden: where a parsed request is
   handed to the app, the one point at which the native path can take it instead
   (:data:`HAS_START_ASGI_TASK`; without it ``serve`` stays on pure ASGI).
2. ``RequestResponseCycle.scope`` — the request (read in the hook);
   ``.response_started`` / ``.response_complete`` — set when the native path answers a
   request itself, so that uvicorn's keep-alive, ``connection_lost`` and
   shutdown see it answered (:func:`mark_response_started`, :func:`mark_response_complete`).
3. ``protocol.server_state.default_headers`` — the ``date`` and ``server`` headers uvicorn adds
   to every response, the date refreshed every second by the server's tick
   (:func:`default_headers`). ``Config.encoded_headers`` is public but has no ``date``.
4. ``protocol.cycle``, ``.transport``, ``.loop``, ``.flow.write_paused`` — the request being
   answered, the socket and the flow-control state (:func:`current_cycle`,
   :func:`http_transport`, :func:`http_loop`, :func:`write_paused`); read when a stream
   starts and when it ends, never per event.
5. ``protocol.access_log``/``.access_logger`` and ``uvicorn.protocols.utils``'
   ``get_client_addr``/``get_path_with_query_string`` — so that a natively served request is
   logged exactly as uvicorn logs the others (:func:`access_logger`, :func:`log_access`).

WebSocket (:mod:`.websocket`, subclassing ``WebSocketsSansIOProtocol``):

6. ``protocol.queue`` and ``protocol.writable`` — replaced, after ``__init__``, by lighter
   objects with the methods uvicorn calls (:func:`replace_ws_queue_and_flag`).
7. ``protocol.close_sent`` and ``.transport`` — whether the connection is ending, and its socket
   (:func:`ws_closing`, :func:`ws_transport`). ``DirectTextWriter.writable`` in
   :mod:`.websocket` reads ``close_sent`` inline: it runs for every frame. uvicorn before
   0.53 never cleared ``writable`` (no ``pause_writing`` on this protocol), so
   :mod:`.websocket` drives its flag itself.
8. ``handle_connect(event)`` — overridden: after it, ``protocol.scope`` is set when the
   handshake was accepted, and ``protocol.app`` is what will be called
   (:func:`accepted_scope`, :func:`route_ws_app`).
9. ``start_keepalive()`` — overridden: called once the handshake's response is sent, when the
   ``request`` and ``response`` objects can be let go (:func:`drop_handshake`).

Server (:mod:`.server`, subclassing ``uvicorn.Server``):

10. ``Server.on_tick(counter)`` and ``Server.shutdown(sockets)`` — overridden (the latter
    to end the streams first); ``on_tick`` is uvicorn's 0.1 s housekeeping tick, used to drop
    stuck connections; ``Server.servers`` and ``server_state.connections`` — the listening
    sockets and the open connections (:func:`listeners`, :func:`connection_transports`).
11. ``Server._captured_signals`` — uvicorn re-raises the signal that stopped it once it is
    done; after a graceful shutdown we exit with status 0 instead (:func:`forget_signals`).
12. ``Server.shutdown`` — replaced process-wide, once, by :mod:`.exit_hook` (users' own apps
    only: ``sluiceway serve`` subclasses instead).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

__all__ = [
    "HAS_START_ASGI_TASK",
    "HttpToolsProtocol",
    "RequestResponseCycle",
    "WebSocketsSansIOProtocol",
    "accepted_scope",
    "access_logger",
    "connection_transports",
    "current_cycle",
    "default_headers",
    "drop_handshake",
    "forget_signals",
    "http_loop",
    "http_transport",
    "listeners",
    "log_access",
    "mark_response_complete",
    "mark_response_started",
    "replace_ws_queue_and_flag",
    "route_ws_app",
    "ws_closing",
    "ws_transport",
]

#: 1. Whether the installed uvicorn has the hook the native stream path overrides.
HAS_START_ASGI_TASK = hasattr(HttpToolsProtocol, "_start_asgi_task")


# -- HTTP ------------------------------------------------------------------------------------


def mark_response_started(cycle: RequestResponseCycle) -> None:
    """2. The response's head was written (by us, not by the cycle)."""
    cycle.response_started = True


def mark_response_complete(cycle: RequestResponseCycle) -> None:
    """2. The response is over: uvicorn may reuse or close the connection."""
    cycle.response_complete = True


def default_headers(protocol: HttpToolsProtocol) -> list[tuple[bytes, bytes]]:
    """3. The headers uvicorn adds to every response (``date``, ``server``, ``--header``)."""
    return protocol.server_state.default_headers


def current_cycle(protocol: HttpToolsProtocol) -> RequestResponseCycle | None:
    """4. The request being answered on this connection, if any."""
    return protocol.cycle


def http_transport(protocol: HttpToolsProtocol) -> asyncio.Transport:
    """4. The connection's socket."""
    return protocol.transport


def http_loop(protocol: HttpToolsProtocol) -> asyncio.AbstractEventLoop:
    """4. The loop the protocol runs in."""
    return protocol.loop


def write_paused(protocol: HttpToolsProtocol) -> bool:
    """4. Whether the transport asked us to stop writing (``pause_writing``)."""
    return protocol.flow.write_paused


def access_logger(protocol: HttpToolsProtocol) -> logging.Logger | None:
    """5. uvicorn's access logger, if access logging is on (and at INFO)."""
    logger = protocol.access_logger
    if protocol.access_log and logger.isEnabledFor(logging.INFO):
        return logger
    return None


def log_access(
    logger: logging.Logger, scope: Any, status: int, redact: Callable[[str], str]
) -> None:
    """5. One access line for a request answered outside uvicorn's cycle, in uvicorn's format,
    its target rewritten by ``redact``."""
    logger.info(
        '%s - "%s %s HTTP/%s" %d',
        get_client_addr(scope),
        scope["method"],
        redact(get_path_with_query_string(scope)),
        scope["http_version"],
        status,
    )


# -- WebSocket -------------------------------------------------------------------------------


def replace_ws_queue_and_flag(protocol: WebSocketsSansIOProtocol, queue: Any, flag: Any) -> None:
    """6. Swap the protocol's receive queue and its ``writable`` event (right after
    ``__init__``, before anything was queued or awaited) for ``queue`` and ``flag``, which
    must have the methods uvicorn calls on them (``put_nowait``/``get``/``empty``/``qsize``;
    ``is_set``/``set``/``clear``/``wait``)."""
    # Plain attributes, declared by uvicorn with asyncio's types.
    vars(protocol).update(queue=queue, writable=flag)


def ws_closing(protocol: WebSocketsSansIOProtocol) -> bool:
    """7. Whether the connection is ending: a close frame was sent, or the socket closes."""
    return protocol.close_sent or protocol.transport.is_closing()


def ws_transport(protocol: WebSocketsSansIOProtocol) -> asyncio.Transport:
    """7. The connection's socket."""
    return protocol.transport


def accepted_scope(protocol: WebSocketsSansIOProtocol) -> Any | None:
    """8. After ``handle_connect``: the ASGI scope if the handshake was accepted, else None."""
    return getattr(protocol, "scope", None)


def route_ws_app(protocol: WebSocketsSansIOProtocol, app: Any) -> None:
    """8. After ``handle_connect``, before the app's task runs: call ``app`` instead."""
    protocol.app = app


def drop_handshake(protocol: WebSocketsSansIOProtocol) -> None:
    """9. After ``start_keepalive``: let go of the handshake's request and response."""
    vars(protocol).update(request=None, response=None)


# -- Server ----------------------------------------------------------------------------------


def listeners(server: uvicorn.Server) -> list[asyncio.base_events.Server]:
    """10. The server's listening sockets (as asyncio servers)."""
    return list(getattr(server, "servers", ()))


def connection_transports(server: uvicorn.Server) -> Iterator[tuple[object, asyncio.Transport]]:
    """10. Every open connection (its protocol) and its transport."""
    for connection in list(server.server_state.connections):
        transport = getattr(connection, "transport", None)
        if transport is not None:
            yield connection, transport


def forget_signals(server: uvicorn.Server) -> None:
    """11. Don't re-raise the signal that stopped the server when it is done."""
    server._captured_signals.clear()
