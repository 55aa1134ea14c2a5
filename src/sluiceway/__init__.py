"""Sluiceway: streaming to clients over HTTP, done right.

- :mod:`sluiceway.sse`: the SSE wire format, sans-I/O (encoder and WHATWG parser).
- :mod:`sluiceway.hub`: topics with bounded, resumable history; subscriptions.
- :mod:`sluiceway.asgi`: ``EventStreamResponse`` for any Starlette/FastAPI app.
- :mod:`sluiceway.server`: ``create_app`` and ``sluiceway serve``.
"""

from importlib.metadata import version

__version__ = version("sluiceway")
