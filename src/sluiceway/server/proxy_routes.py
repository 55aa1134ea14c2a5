"""``GET /proxy?url=...``: stream an allow-listed upstream's response (off by default)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sluiceway.auth.resources import PROXY
from sluiceway.server.access import SUBSCRIBE, require
from sluiceway.server.errors import APIError
from sluiceway.server.services import services_of
from sluiceway.transfer.proxy import ProxyRefused


async def proxy(request: Request) -> Response:
    require(request, SUBSCRIBE, PROXY)
    url = request.query_params.get("url")
    if not url:
        raise APIError(400, "missing_url", "give the upstream as ?url=")
    if not services_of(request).settings.proxy_allow:
        raise APIError(403, "proxy_disabled", "no upstream is allowed (set proxy_allow)")
    try:
        return await services_of(request).proxy.forward(request, url)
    except ProxyRefused as exc:
        raise APIError(exc.status, exc.code, exc.detail) from None


routes = [Route("/proxy", proxy, methods=["GET"])]
