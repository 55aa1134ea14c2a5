"""Forward a streaming response from an allow-listed upstream, chunk by chunk.

>>> proxy = StreamProxy(allow=["http://127.0.0.1:9000/feeds/"])
>>> proxy.allowed("http://127.0.0.1:9000/feeds/a"), proxy.allowed("http://127.0.0.1:9000/feeds/%2e%2e/x")
(True, False)
>>> response = await proxy.forward(request, "http://127.0.0.1:9000/feeds/a")  # doctest: +SKIP

The allow-list is checked on the URL normalized (RFC 3986 section 6), and that very URL is
requested: ``/feeds/%2e%2e/admin.txt`` is ``/admin.txt``, and not allowed; an encoded ``/`` or
``\\`` in the path is refused outright (400), since the upstream may read it as a separator.

Only the headers that matter cross (content type and encoding, caching validators, ranges,
``Last-Event-ID`` for event streams); the body is passed as received (still compressed if the
upstream compressed it); and the upstream request is closed as soon as the client leaves,
because the response's producer is cancelled and closing it closes the upstream stream.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import anyio
import httpx
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from sluiceway.urls import decode_unreserved, normalize_path

_ENCODED_SEPARATOR = re.compile(r"%(2[fF]|5[cC])")

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


@dataclass(frozen=True, slots=True)
class Target:
    """An upstream URL as the proxy checks and requests it: normalized (RFC 3986 section 6:
    lower-case scheme and host, the port spelled out, escaped unreserved characters decoded,
    dot segments removed, no fragment), so that the allow-list is checked on the very URL
    that is requested, however the client spelled it."""

    origin: str  # scheme://host:port
    path: str
    url: str  # what is requested

    @classmethod
    def parse(cls, url: str) -> Target:
        """Raises :class:`ProxyRefused` (400) for what cannot be checked safely."""
        try:
            parts = urlsplit(url)
        except ValueError:  # e.g. an unclosed IPv6 bracket
            raise ProxyRefused(400, "invalid_url", "the URL does not parse") from None
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise ProxyRefused(400, "invalid_url", "the URL must be absolute http(s)")
        if parts.username or parts.password:
            raise ProxyRefused(400, "invalid_url", "credentials in the URL are not forwarded")
        try:
            port = parts.port
        except ValueError:
            raise ProxyRefused(400, "invalid_url", "the URL's port is not a port") from None
        raw_path = parts.path or "/"
        if "\\" in raw_path or _ENCODED_SEPARATOR.search(raw_path):
            # An encoded "/" or "\\" would be one segment here and two upstream.
            raise ProxyRefused(400, "invalid_url", "the path must not hold encoded / or \\")
        if not raw_path.startswith("/"):
            raise ProxyRefused(400, "invalid_url", "the URL's path must be absolute")
        host = parts.hostname.lower()
        netloc = f"[{host}]" if ":" in host else host
        default = 443 if scheme == "https" else 80
        port = port or default
        if any(
            ";" in segment and segment.split(";", 1)[0] in (".", "..")
            for segment in decode_unreserved(raw_path).split("/")
        ):
            # "..;" is ".." to Tomcat and its kin: a dot segment with parameters is refused.
            raise ProxyRefused(400, "invalid_url", "the path has a dot segment with parameters")
        path = normalize_path(raw_path)
        authority = netloc if port == default else f"{netloc}:{port}"
        query = f"?{parts.query}" if parts.query else ""
        return cls(f"{scheme}://{netloc}:{port}", path, f"{scheme}://{authority}{path}{query}")

    def within(self, prefix: Target) -> bool:
        """Same origin, and the path is the prefix's or below it (by whole segments)."""
        if self.origin != prefix.origin:
            return False
        base = prefix.path
        return self.path == base or self.path.startswith(base if base.endswith("/") else base + "/")


class StreamProxy:
    """Forwards GET requests to URLs under one of the ``allow`` prefixes: same scheme, host
    and port, and a path at or below the prefix's, compared after normalization (see
    :class:`Target`); the normalized URL is what is requested."""

    def __init__(
        self,
        allow: Sequence[str],
        *,
        client: httpx.AsyncClient | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 300.0,
    ) -> None:
        self.allow = [Target.parse(prefix) for prefix in allow]
        timeout = httpx.Timeout(connect_timeout, read=read_timeout)
        self._http = client or httpx.AsyncClient(timeout=timeout, follow_redirects=False)

    def check(self, url: str) -> Target:
        """The URL to request, if ``url`` is on the allow-list; else :class:`ProxyRefused`
        (400 for a URL that cannot be checked, 403 for one that is not allowed)."""
        target = Target.parse(url)
        if not any(target.within(prefix) for prefix in self.allow):
            raise ProxyRefused(403, "not_allowed", "this URL is not on the proxy's allow-list")
        return target

    def allowed(self, url: str) -> bool:
        try:
            self.check(url)
        except ProxyRefused:
            return False
        return True

    async def forward(self, request: Request, url: str) -> Response:
        """The upstream's response, streamed; raises :class:`ProxyRefused` before any byte."""
        target = self.check(url)
        headers = {
            name: value
            for name in FORWARDED_REQUEST_HEADERS
            if (value := request.headers.get(name)) is not None
        }
        try:
            upstream = await self._http.send(
                self._http.build_request("GET", target.url, headers=headers), stream=True
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
