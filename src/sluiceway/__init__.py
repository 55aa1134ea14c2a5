"""Sluiceway: streaming to clients over HTTP, done right.

The names an application uses are here, each from the one module of its concept:

>>> from sluiceway import Hub, EventStreamResponse, Event, EventSource
>>> hub = Hub()

- :mod:`sluiceway.sse`: the SSE wire format, sans-I/O (``Event``, ``encode``, ``Parser``).
- :mod:`sluiceway.hub`: topics with bounded, resumable history (``Hub``, ``HubConfig``).
- :mod:`sluiceway.asgi`: ``EventStreamResponse`` for any Starlette/FastAPI app, and
  ``install_error_handlers`` (the hub's errors answered as 4xx/503 JSON).
- :mod:`sluiceway.runs`: your own streaming code run detached, resumable, cancellable
  (``Runs``).
- :mod:`sluiceway.client`: ``EventSource``, an SSE client that reconnects and resumes.
- :mod:`sluiceway.testing`: ``client(app)``, your streams tested in process.
- :mod:`sluiceway.server`: ``create_app`` and ``sluiceway serve``.

Each is imported on first use, so ``import sluiceway`` costs nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sluiceway.asgi import EventStreamResponse, install_error_handlers
    from sluiceway.client import EventSource
    from sluiceway.hub import Hub, HubConfig
    from sluiceway.runs import Runs
    from sluiceway.server import create_app
    from sluiceway.sse import Event

#: name -> the module that defines it.
_NAMES = {
    "Event": "sluiceway.sse",
    "Hub": "sluiceway.hub",
    "HubConfig": "sluiceway.hub",
    "EventStreamResponse": "sluiceway.asgi",
    "install_error_handlers": "sluiceway.asgi",
    "Runs": "sluiceway.runs",
    "EventSource": "sluiceway.client",
    "create_app": "sluiceway.server",
}

__all__ = [
    "Event",
    "EventSource",
    "EventStreamResponse",
    "Hub",
    "HubConfig",
    "Runs",
    "__version__",
    "create_app",
    "install_error_handlers",
]


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import version

        return version("sluiceway")
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'sluiceway' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
