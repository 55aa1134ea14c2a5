"""Everything sluiceway does with uvicorn, in one package.

``sluiceway serve`` runs on uvicorn, and its fast paths reach into uvicorn's protocols: no
module outside this package imports uvicorn. What uses uvicorn's public API (``Config``,
``Server.run``, ``Config(http=..., ws=...)`` taking protocol classes) is spread over the
modules below; what uses its private internals goes through :mod:`.internals`, one function
per internal, so that a uvicorn release that changes one breaks in one place. That is also why
``pyproject.toml`` bounds uvicorn's version from above, and why ``tests/test_uvicorn_versions.py``
runs the native paths against the oldest and the newest uvicorn in that range.

* :mod:`.http` — the native stream path: uvicorn's httptools protocol, with the requests a
  ``NativePath`` takes written straight to the socket (``sluiceway serve``'s hub streams:
  :mod:`sluiceway.server.native`).
* :mod:`.websocket` — uvicorn's sans-I/O WebSocket protocol, writing text frames straight to
  the socket and calling the app chosen for the handshake directly (``sluiceway serve``'s
  Centrifugo endpoint: :mod:`sluiceway.server.native_ws`).
* :mod:`.server` — ``StreamingServer``, the ``uvicorn.Server`` of ``sluiceway serve`` (ends the
  streams before uvicorn waits for connections, drops stuck connections), and its ``Config``.
* :mod:`.forwarded` — the client a trusted proxy forwards for (uvicorn's
  ``ProxyHeadersMiddleware``), applied to the scope of the two paths above, which bypass the
  app and its middleware.
* :mod:`.exit_hook` — for your own uvicorn app: run a coroutine when uvicorn starts to shut
  down (:func:`sluiceway.asgi.end_streams_on_uvicorn_exit`).
* :mod:`.internals` — the list of uvicorn internals used, and why.

The package imports nothing else of sluiceway: what to serve natively, which streams to end
and which connections to drop are handed to it by :mod:`sluiceway.server` (and the exit hook
by :mod:`sluiceway.asgi`), so it sits below both. This ``__init__`` imports nothing, so
importing a submodule costs only what that one needs.
"""
