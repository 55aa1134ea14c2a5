"""Ending streams when the server shuts down.

An SSE response never finishes on its own, and uvicorn waits for open responses before it runs
the application's lifespan shutdown, so the application cannot learn from its lifespan that it
must end its streams: without help, a shutdown hangs until the clients leave. Every running
:class:`~sluiceway.asgi.EventStreamResponse` registers here; :func:`close_all_streams` ends
them at an event boundary. ``sluiceway serve`` calls it when shutdown begins; in your own
uvicorn app call :func:`end_streams_on_uvicorn_exit` once at import time.

What feeds streams stops first: the work registered with :func:`stop_first` (a family of runs
ends each run, publishing its last event), then the hubs registered with it close (every
subscriber gets what was published, then its stream ends), then the remaining streams end.
``Runs.lifespan`` registers its runs and hub, and installs the uvicorn hook itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

# Each running stream's closer, and whether it streams a hub subscription (those are counted
# by the hub itself).
_closers: dict[Callable[[], object], bool] = {}
_drained: asyncio.Event | None = None
# Work that feeds streams, stopped before they end, then what it publishes into.
_stoppers: dict[Callable[[], Awaitable[None]], None] = {}
_sinks: dict[Callable[[float], Awaitable[None]], None] = {}


def register(closer: Callable[[], object], *, hub_stream: bool = False) -> Callable[[], None]:
    """Remember a running stream's ``closer``; returns the function that forgets it."""
    _closers[closer] = hub_stream

    def forget() -> None:
        _closers.pop(closer, None)
        if _drained is not None and not _closers:
            _drained.set()

    return forget


#: Client addresses whose stream was aborted (its socket accepts nothing): an ASGI app cannot
#: drop a connection itself, the server (``sluiceway serve``) does it for them.
_aborted: set[tuple[str, int]] = set()


#: A scope extension where ``sluiceway serve`` keeps the socket's peer: behind a trusted proxy
#: ``scope["client"]`` names the forwarded client, which is no connection of this server's.
PEER_EXTENSION = "sluiceway.peer"


def peer_of(scope: Mapping[str, Any]) -> tuple[str, int] | None:
    """The address of the connection that carries ``scope``'s request (for
    :func:`abort_connection`): the socket's peer where the server kept it, else the client."""
    peer = scope.get("extensions", {}).get(PEER_EXTENSION)
    return peer if peer is not None else scope.get("client")


def abort_connection(client: tuple[str, int] | None) -> None:
    """Ask the server to drop the connection from ``client`` (a scope's ``client``) at once,
    instead of waiting for it to read what is buffered."""
    if client is not None:
        _aborted.add(client)


def take_aborted() -> set[tuple[str, int]]:
    """The addresses :func:`abort_connection` was asked for since the last call."""
    global _aborted
    aborted, _aborted = _aborted, set()
    return aborted


def open_stream_count() -> int:
    """Streams of producers other than the hub (hub streams: ``Hub.open_streams``)."""
    return sum(1 for hub_stream in _closers.values() if not hub_stream)


def stop_first(
    stop: Callable[[], Awaitable[None]], then: Callable[[float], Awaitable[None]] | None = None
) -> Callable[[], None]:
    """At shutdown, await ``stop()`` before any stream is ended (with every other registered
    ``stop``), then ``then(grace)`` (a hub's ``aclose``: streams get what was published, then
    end). Returns the function that forgets both (a lifespan that ends on its own)."""
    _stoppers[stop] = None
    if then is not None:
        _sinks[then] = None

    def forget() -> None:
        _stoppers.pop(stop, None)
        if then is not None:
            _sinks.pop(then, None)

    return forget


async def close_all_streams(grace: float = 5.0) -> None:
    """Stop the work registered with :func:`stop_first`, then ask every running stream to
    end, and wait at most ``grace`` s for them to do so."""
    global _drained
    stoppers, sinks = list(_stoppers), list(_sinks)
    _stoppers.clear()
    _sinks.clear()
    if stoppers:
        await asyncio.gather(*(stop() for stop in stoppers), return_exceptions=True)
    if sinks:
        await asyncio.gather(*(sink(grace) for sink in sinks), return_exceptions=True)
    if not _closers:
        return
    _drained = asyncio.Event()
    for closer in list(_closers):
        closer()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(_drained.wait(), grace)
    _drained = None


def end_streams_on_uvicorn_exit(timeout: float = 5.0) -> None:
    """Make uvicorn end running event streams when it is asked to exit (idempotent: the first
    call's ``timeout`` holds)."""
    from sluiceway.uvicorn_adapter.exit_hook import before_uvicorn_shutdown

    before_uvicorn_shutdown(functools.partial(close_all_streams, timeout))
