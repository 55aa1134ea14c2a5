"""For your own uvicorn app: run a coroutine when uvicorn starts to shut down
(:func:`sluiceway.asgi.end_streams_on_uvicorn_exit` ends the event streams with it).

uvicorn has no hook for this (its lifespan shutdown runs only after open responses finished,
which an event stream never does), so ``uvicorn.Server.shutdown`` is replaced process-wide,
once (internals 12). ``sluiceway serve`` does not use this: its server subclasses instead.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Awaitable, Callable

import uvicorn

_MARK = "_sluiceway"


def before_uvicorn_shutdown(hook: Callable[[], Awaitable[None]]) -> bool:
    """Make every ``uvicorn.Server`` await ``hook()`` first when it shuts down. Only the first
    call installs a hook (the process has one); returns whether this one did."""
    server_class = uvicorn.Server
    original = server_class.shutdown
    if getattr(original, _MARK, False):
        return False

    @functools.wraps(original)
    async def shutdown(self: uvicorn.Server, sockets: list[socket.socket] | None = None) -> None:
        await hook()
        await original(self, sockets)

    setattr(shutdown, _MARK, True)
    # A process-wide replacement is the point (see the module doc).
    setattr(server_class, "shutdown", shutdown)  # noqa: B010
    return True
