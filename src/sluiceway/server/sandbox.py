"""Bytes that come from users or upstreams never run as pages of this server's origin.

``/files`` serves what anyone allowed to upload wrote; ``/proxy`` what an upstream sent;
``/exports`` rows whose text anyone may have written. A browser that opened such a response as
a page (an uploaded XHTML file with a ``<script>``, an
upstream's HTML) would run it with this origin's cookies and same-origin writes. So every
response under those paths, errors included, carries ``Content-Security-Policy: sandbox`` (a
unique, scriptless origin) and ``X-Content-Type-Options: nosniff`` (the type is never guessed
from the bytes); :func:`sluiceway.transfer.download.file_response` also shows only passive
types inline. (The web UI's own policy admits only its nonce-bearing scripts, so an uploaded
``.js`` cannot pass for one of them either: see :mod:`sluiceway.server.web_routes`.)
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sluiceway.transfer.download import SANDBOX_HEADERS

_RAW_HEADERS = [(name.encode(), value.encode()) for name, value in SANDBOX_HEADERS.items()]
_NAMES = frozenset(name for name, _ in _RAW_HEADERS)


class SandboxedPaths:
    """ASGI middleware: :data:`SANDBOX_HEADERS` on every HTTP response whose path starts
    with one of ``prefixes`` (replacing any such header the response had)."""

    def __init__(self, app: ASGIApp, prefixes: Sequence[str]) -> None:
        self.app = app
        self.prefixes = tuple(prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefixes):
            await self.app(scope, receive, send)
            return

        async def sandboxed(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", ()) if h[0].lower() not in _NAMES]
                message = {**message, "headers": [*headers, *_RAW_HEADERS]}
            await send(message)

        await self.app(scope, receive, sandboxed)
