"""The server's services: one typed container, built once by ``create_app``.

Routes reach them through :func:`services_of` (never through loose ``app.state``
attributes); lower layers (jobs, exports, the hub) get what they need as arguments.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from prometheus_client import CollectorRegistry
from starlette.requests import HTTPConnection

from sluiceway.gateway.manager import Generations
from sluiceway.hub import Hub
from sluiceway.jobs import Jobs
from sluiceway.server.admission import Admission
from sluiceway.server.settings import Settings
from sluiceway.transfer.exports import ExportDatabase
from sluiceway.transfer.leftovers import UploadOwner
from sluiceway.transfer.proxy import StreamProxy

if TYPE_CHECKING:
    from sluiceway.centrifugo import CentrifugoEndpoint
    from sluiceway.server.mercure_face import MercureFace

__all__ = ["Services", "services_of"]


@dataclass
class Services:
    """Everything the routes of ``sluiceway serve`` use."""

    settings: Settings
    hub: Hub
    admission: Admission
    metrics: CollectorRegistry
    generations: Generations
    jobs: Jobs
    exports: ExportDatabase
    #: This process's tag in upload temporary names (see sluiceway.transfer.leftovers).
    uploads: UploadOwner
    mercure: MercureFace
    #: The WebSocket (Centrifugo) endpoint; None when ``ws_enabled`` is off.
    websocket: CentrifugoEndpoint | None
    #: Ends what goes on by itself (WebSockets, generations, jobs) while the hub still
    #: takes events: the first step of a shutdown.
    stop_work: Callable[[], Awaitable[None]]
    #: The ``/proxy`` client, made on first use (only where ``proxy_allow`` names upstreams).
    _proxy: StreamProxy | None = field(default=None, repr=False)

    @property
    def proxy(self) -> StreamProxy:
        if self._proxy is None:
            self._proxy = StreamProxy(self.settings.proxy_allow)
        return self._proxy

    async def aclose(self) -> None:
        """Release what the services hold: the export pool, the proxy's connections, the
        uploads' lock."""
        self.uploads.release()
        await self.exports.aclose()
        if self._proxy is not None:
            await self._proxy.aclose()


def services_of(connection: HTTPConnection) -> Services:
    """The services of the app that serves ``connection`` (a request or a WebSocket)."""
    return cast(Services, connection.app.state.services)
