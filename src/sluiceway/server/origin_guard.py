"""Writes from other web origins are refused unless CORS allows those origins.

A page on any site can make a browser send a POST to this server without asking first (a
"simple" request: a form, or ``fetch`` with a ``text/plain`` body): the browser hides the
answer from the page, but the write is done. With anonymous publishing on (loopback
development), any site the developer visits could publish, start generations or jobs, and
upload. Browsers say where a request comes from (``Sec-Fetch-Site``, and ``Origin`` on every
POST); other clients (curl, SDKs, servers) send neither and are not affected.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from sluiceway.server.errors import error_response

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class CrossOriginWriteGuard:
    """ASGI middleware: 403 ``cross_origin`` for an unsafe method from a browser page of
    another origin, unless that origin is in ``allowed_origins`` (the CORS setting; ``*``
    allows every origin)."""

    def __init__(self, app: ASGIApp, allowed_origins: Sequence[str] = ()) -> None:
        self.app = app
        self.allowed = frozenset(allowed_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in _SAFE_METHODS:
            origin = self._foreign_origin(scope)
            if origin is not None:
                response = error_response(
                    403,
                    "cross_origin",
                    f"writes from {origin[:100]!r} are not allowed (see cors_allow_origins)",
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _foreign_origin(self, scope: Scope) -> str | None:
        """The requesting page's origin when it is another one and not allowed, else None."""
        fetch_site = origin = host = None
        for name, value in scope["headers"]:
            if name == b"sec-fetch-site":
                fetch_site = value.decode("latin-1")
            elif name == b"origin":
                origin = value.decode("latin-1")
            elif name == b"host":
                host = value.decode("latin-1")
        if origin is None and fetch_site is None:
            return None  # not a browser page (or a browser's own navigation)
        if fetch_site in ("same-origin", "none"):
            return None
        # An older browser (no Sec-Fetch-Site): compare the page's host and port with ours.
        if fetch_site is None and origin is not None and origin.partition("://")[2] == host:
            return None
        if "*" in self.allowed or (origin is not None and origin in self.allowed):
            return None
        return origin or "another site"
