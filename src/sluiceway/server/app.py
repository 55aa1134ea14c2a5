"""``create_app``: the server as a Starlette application."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException

from sluiceway.hub import Hub
from sluiceway.server.errors import APIError, api_error_handler, http_error_handler
from sluiceway.server.metrics import metrics_registry
from sluiceway.server.routes import routes
from sluiceway.server.settings import Settings


def create_app(settings: Settings | None = None, hub: Hub | None = None) -> Starlette:
    """Build the server's ASGI app. Run it with ``sluiceway serve`` or any ASGI server.

    >>> app = create_app(Settings(publish_key="s3cret"))
    """
    settings = settings or Settings()
    hub = hub or Hub(settings.hub_config())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await hub.aclose(settings.shutdown_timeout)

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={APIError: api_error_handler, HTTPException: http_error_handler},
    )
    app.state.settings = settings
    app.state.hub = hub
    app.state.metrics_registry = metrics_registry(hub)
    return app
