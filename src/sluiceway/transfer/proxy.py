"""Forward a streaming response from an allow-listed upstream, chunk by chunk.

>>> proxy = StreamProxy(allow=["http://127.0.0.1:9000/feeds/"])         # doctest: +SKIP
>>> return await proxy.forward(request, "http://127.0.0.1:9000/feeds/a")  # a Response

Only the headers that matter cross (content type and encoding, caching validators, ranges,
``Last-Event-ID`` for event streams); the body is passed as received (still compressed if the
upstream compressed it); and the upstream request is closed as soon as the client leaves,
because the response's producer is cancelled and closing it closes the upstream stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from urllib.parse import urlsplit

import anyio
import httpx
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

#: Request headers passed to the upstream.
FORWARDED_REQUEST_HEADERS = (
    "accept",
    "accept-encoding",
    "range",
    "if-range",
    "if-none-match",
    "if-modified-since",
    "last-event-id",
)
#: Response headers passed back to the client.
FORWARDED_RESPONSE_HEADERS = (
    "content-type",
    "content-encoding",
    "content-length",
    "content-range",
    "content-disposition",
    "accept-ranges",
    "etag",
    "last-modified",
    "cache-control",
    "retry-after",
)


class ProxyRefused(Exception):
    """``status`` (403 not allowed, 400 bad URL, 502/504 upstream) and a message."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


def _origin_and_path(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ProxyRefused(400, "invalid_url", "the URL must be absolute http(s)")
    if parts.username or parts.password:
        raise ProxyRefused(400, "invalid_url", "credentials in the URL are not forwarded")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{parts.hostname.lower()}:{port}", parts.path or "/"


class StreamProxy:
    """Forwards GET requests to URLs under one of the ``allow`` prefixes (same scheme, host
    and port; the path starts with the prefix's path)."""

    def __init__(
        self,
        allow: Sequence[str],
        *,
        client: httpx.AsyncClient | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 300.0,
    ) -> None:
        self.allow = [_origin_and_path(prefix) for prefix in allow]
        timeout = httpx.Timeout(connect_timeout, read=read_timeout)
        self._http = client or httpx.AsyncClient(timeout=timeout, follow_redirects=False)

    def allowed(self, url: str) -> bool:
        origin, path = _origin_and_path(url)
        if ".." in path.split("/"):
            return False  # no climbing out of an allowed path prefix
        return any(origin == o and path.startswith(p) for o, p in self.allow)

    async def forward(self, request: Request, url: str) -> Response:
        """The upstream's response, streamed; raises :class:`ProxyRefused` before any byte."""
        if not self.allowed(url):
            raise ProxyRefused(403, "not_allowed", "this URL is not on the proxy's allow-list")
        headers = {
            name: value
            for name in FORWARDED_REQUEST_HEADERS
            if (value := request.headers.get(name)) is not None
        }
        try:
            upstream = await self._http.send(
                self._http.build_request("GET", url, headers=headers), stream=True
            )
        except httpx.TimeoutException:
            raise ProxyRefused(504, "upstream_timeout", "the upstream did not answer") from None
        except httpx.HTTPError as exc:
            detail = f"cannot reach the upstream ({type(exc).__name__})"
            raise ProxyRefused(502, "upstream_unreachable", detail) from None
        passed = {
            name: value
            for name in FORWARDED_RESPONSE_HEADERS
            if (value := upstream.headers.get(name)) is not None
        }
        if upstream.headers.get("content-type", "").startswith("text/event-stream"):
            passed["x-accel-buffering"] = "no"
        return StreamingResponse(_body(upstream), status_code=upstream.status_code, headers=passed)

    async def aclose(self) -> None:
        await self._http.aclose()


async def _body(upstream: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in upstream.aiter_raw():
            yield chunk
    finally:  # the client left, or the upstream ended or failed: close it now
        # Shielded: when the client left, this generator is being cancelled, and anyio would
        # cancel an unshielded close too, leaving the upstream connection open.
        with anyio.CancelScope(shield=True):
            await upstream.aclose()
