"""``GET /proxy?url=...``: stream an allow-listed upstream's response (off by default)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sluiceway.auth.resources import PROXY
from sluiceway.server.access import SUBSCRIBE, require
from sluiceway.server.errors import APIError
from sluiceway.transfer.proxy import ProxyRefused, StreamProxy


def proxy_for(request: Request) -> StreamProxy:
    state = request.app.state
    if getattr(state, "proxy", None) is None:
        state.proxy = StreamProxy(state.settings.proxy_allow)
    return state.proxy  # type: ignore[no-any-return]


async def proxy(request: Request) -> Response:
    require(request, SUBSCRIBE, PROXY)
    url = request.query_params.get("url")
    if not url:
        raise APIError(400, "missing_url", "give the upstream as ?url=")
    if not request.app.state.settings.proxy_allow:
        raise APIError(403, "proxy_disabled", "no upstream is allowed (set proxy_allow)")
    try:
        return await proxy_for(request).forward(request, url)
    except ProxyRefused as exc:
        raise APIError(exc.status, exc.code, exc.detail) from None


routes = [Route("/proxy", proxy, methods=["GET"])]
