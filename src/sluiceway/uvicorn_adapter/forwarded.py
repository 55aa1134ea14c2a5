"""The client a trusted proxy forwards for, on the paths that bypass the ASGI middleware.

uvicorn believes ``X-Forwarded-For`` and ``X-Forwarded-Proto`` from the peers in
``forwarded_allow_ips`` (its ``ProxyHeadersMiddleware``, around the application): behind
nginx, the application and the access log see the browser's address instead of nginx's. The
native stream path and the WebSocket endpoint are served without the application, so its
middleware never rewrites their scope, and their access lines would name the proxy. This
applies the same middleware, with the same trusted peers, to their scope before it is used:
one set of rules (uvicorn's), whichever path serves the request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware


async def _keep_scope(scope: Any, receive: Any, send: Any) -> None:
    """The app behind the middleware: the rewritten scope is all we want."""


async def _unused(*_args: Any) -> Any:  # pragma: no cover - never called
    raise RuntimeError("the middleware only rewrites the scope")


class ForwardedClients:
    """``apply(scope)``: the scope's ``client`` (and ``scheme``) as uvicorn's middleware sets
    them, when the peer is one of ``trusted`` (addresses, networks, ``*`` for any)."""

    def __init__(self, trusted: Sequence[str]) -> None:
        #: As ``uvicorn.Config(forwarded_allow_ips=...)`` takes it ("*" alone means anyone).
        self.trusted: list[str] | str = "*" if "*" in trusted else list(trusted)
        self._middleware = ProxyHeadersMiddleware(_keep_scope, trusted_hosts=self.trusted)

    def apply(self, scope: Any) -> None:
        """Rewrite ``scope`` in place, synchronously (from a protocol callback). The
        middleware is a coroutine that awaits nothing but the app above, which returns at
        once, so one ``send(None)`` runs it to its end. Applying it twice gives the same
        scope: the forwarded address is read again from the same header."""
        step = self._middleware(scope, _unused, _unused)
        try:
            step.send(None)
        except StopIteration:
            return
        step.close()  # pragma: no cover - a uvicorn whose middleware awaits I/O
        raise RuntimeError("uvicorn's ProxyHeadersMiddleware suspended")  # pragma: no cover
