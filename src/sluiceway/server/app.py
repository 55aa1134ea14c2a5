"""``create_app``: the server as a Starlette application."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute, Route, WebSocketRoute

from sluiceway.centrifugo import CentrifugoEndpoint, MemoryPresence, Presence, RedisPresence
from sluiceway.centrifugo.proxy import HttpProxy
from sluiceway.gateway.manager import Generations
from sluiceway.gateway.stats import GenerationMetrics
from sluiceway.hub import Hub, HubError
from sluiceway.ids import InvalidEventId
from sluiceway.jobs import Jobs
from sluiceway.jobs.export_job import ExportContext
from sluiceway.llm.providers.base import Provider
from sluiceway.llm.providers.factory import make_provider
from sluiceway.server import (
    ai_sdk_routes,
    anthropic_routes,
    export_routes,
    file_routes,
    generation_routes,
    job_routes,
    mercure_routes,
    openai_routes,
    proxy_routes,
    responses_routes,
    web_routes,
)
from sluiceway.server.admission import Admission
from sluiceway.server.errors import (
    APIError,
    api_error_handler,
    http_error_handler,
    hub_error_handler,
)
from sluiceway.server.gate import AdmissionGate
from sluiceway.server.mercure_face import MercureFace
from sluiceway.server.metrics import CentrifugoCollector, metrics_registry
from sluiceway.server.routes import routes
from sluiceway.server.sandbox import SandboxedPaths
from sluiceway.server.services import Services
from sluiceway.server.settings import Settings
from sluiceway.transfer.compression import CompressionMiddleware
from sluiceway.transfer.exports import ExportDatabase
from sluiceway.transfer.leftovers import UploadOwner


def make_hub(settings: Settings) -> Hub:
    """The hub the settings describe: in-process, or mirroring a shared Redis backend."""
    return Hub.from_url(settings.backend, settings.hub_config())


def create_app(
    settings: Settings | None = None, hub: Hub | None = None, provider: Provider | None = None
) -> Starlette:
    """Build the server's ASGI app. Run it with ``sluiceway serve`` or any ASGI server.

    >>> app = create_app(Settings(publish_key="s3cret"))
    """
    settings = settings or Settings()
    hub = hub or make_hub(settings)
    provider = provider or make_provider(
        settings.llm_provider,
        base_url=settings.llm_base_url,
        api_key=settings.llm_api_key,
        model=settings.llm_model,
    )
    registry = metrics_registry(hub)
    admission = Admission(settings.admission_policy())
    limits = settings.generation_limits()
    # With a shared (Redis) hub, generations are found and cancelled from any process.
    generations = Generations(hub, provider, limits, GenerationMetrics(registry))

    websocket = make_centrifugo_endpoint(settings, hub)
    if websocket is not None:
        registry.register(CentrifugoCollector(websocket))

    exports = ExportDatabase(settings.database_url)
    files_dir = Path(settings.files_dir)
    jobs = Jobs(
        hub,
        context=ExportContext(exports, settings.export_tables, files_dir),
        max_running=settings.max_jobs,
    )

    async def stop_work() -> None:
        """End what goes on by itself, while the hub still takes events, so that every
        stream gets its format's last event: WebSocket clients (3001), generations (state
        ``shutdown``), jobs (cancelled). ``sluiceway serve`` calls it first thing on SIGTERM;
        the lifespan again (for other ASGI servers), where it does nothing more."""
        if websocket is not None:  # 3001 first: clients reconnect elsewhere and recover
            await websocket.aclose(settings.shutdown_timeout)
        await generations.aclose()
        await jobs.aclose()  # running jobs cancelled, their partial files removed

    services = Services(
        settings=settings,
        hub=hub,
        admission=admission,
        metrics=registry,
        generations=generations,
        jobs=jobs,
        exports=exports,
        uploads=UploadOwner(files_dir),
        mercure=MercureFace(hub),
        websocket=websocket,
        stop_work=stop_work,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await hub.start()  # connects a shared backend (BackendUnavailable if it cannot)
        await generations.start_sharing()  # cancel requests from other processes
        await jobs.start_sharing()
        # Temporary files of uploads that a killed process left: removed while serving.
        cleanup = asyncio.get_running_loop().create_task(services.uploads.remove_leftovers())
        yield
        await stop_work()
        await services.aclose()  # stops the cleanup, if it is still walking the tree
        await cleanup
        await hub.aclose(settings.shutdown_timeout)

    app = Starlette(
        routes=[
            *routes,
            *generation_routes.routes,
            *openai_routes.routes,
            *responses_routes.routes,
            *anthropic_routes.routes,
            *ai_sdk_routes.make_routes(settings.chat_api_prefix),
            *file_routes.routes,
            *export_routes.routes,
            *job_routes.routes,
            *proxy_routes.routes,
            *(websocket_routes(websocket) if websocket is not None else []),
            *(mercure_routes.routes if settings.mercure_enabled else []),
            *(web_routes.make_routes() if settings.web_ui else []),
        ],
        middleware=middleware_for(settings, admission),
        lifespan=lifespan,
        exception_handlers={
            APIError: api_error_handler,
            HTTPException: http_error_handler,
            # The hub's errors, answered from one table (sluiceway.asgi.errors.HUB_ERRORS).
            HubError: hub_error_handler,
            InvalidEventId: hub_error_handler,
        },
    )
    app.state.services = services
    return app


def middleware_for(settings: Settings, admission: Admission) -> list[Middleware]:
    # Outermost: a request no route may answer (a foreign Host, a write from another origin)
    # is refused before anything else runs; CORS preflights are safe requests and pass.
    middleware = [Middleware(AdmissionGate, admission=admission)]
    if settings.cors_allow_origins:
        # Outermost, so that preflight requests are answered before anything else runs.
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_allow_origins,
                allow_credentials=settings.cors_allow_credentials,
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=["authorization", "content-type", "last-event-id", "cache-control"],
                expose_headers=[
                    "last-event-id",
                    "mercure-last-event-id",
                    "link",
                    "x-generation-id",
                    "retry-after",
                ],
            )
        )
    # What users uploaded and upstreams sent never runs as a page of this origin.
    middleware.append(Middleware(SandboxedPaths, prefixes=("/files/", "/proxy", "/exports/")))
    if settings.compression:
        middleware.append(Middleware(CompressionMiddleware))
    return middleware


def make_centrifugo_endpoint(settings: Settings, hub: Hub) -> CentrifugoEndpoint | None:
    """The WebSocket endpoint, with presence shared through Redis when the hub's is."""
    if not settings.ws_enabled:
        return None
    options = settings.centrifugo_options()
    proxy = None
    if settings.ws_rpc_proxy_url or settings.ws_publish_proxy_url:
        proxy = HttpProxy(
            rpc_url=str(settings.ws_rpc_proxy_url) if settings.ws_rpc_proxy_url else None,
            publish_url=(
                str(settings.ws_publish_proxy_url) if settings.ws_publish_proxy_url else None
            ),
        )
        options.hooks = proxy.hooks(options.hooks)
    presence: Presence = MemoryPresence()
    if hub.backend is not None:
        from sluiceway.hub.redis_backend import RedisBackend

        assert isinstance(hub.backend, RedisBackend)
        presence = RedisPresence(hub.backend.redis, ttl=options.presence_ttl)
    return CentrifugoEndpoint(hub, options, presence, proxy=proxy)


def websocket_routes(endpoint: CentrifugoEndpoint) -> list[BaseRoute]:
    path = "/connection/websocket"
    # The plain HTTP route answers 426 to a GET that is not an upgrade.
    return [WebSocketRoute(path, endpoint), Route(path, endpoint, methods=["GET"])]
