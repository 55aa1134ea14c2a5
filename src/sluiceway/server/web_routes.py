"""The browser side of ``sluiceway serve``: the web UI at ``/`` and its files (the
``sluiceway.js`` client among them) at ``/static/``, shipped inside the package.

Nothing is fetched from elsewhere: the page works with no network beyond this server, and the
Content-Security-Policy says so to the browser (connections: this origin only). Scripts and
styles must carry the nonce drawn for each page (the modules the page's script imports
inherit it): being on this origin is not enough, since ``/files`` and ``/proxy`` also serve
from it what users uploaded and upstreams sent; so an injected ``<script src="/files/...">``
does not run.
"""

from __future__ import annotations

import secrets
from functools import cache
from importlib.resources import files
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

#: Where the page, its script and style, and ``sluiceway.js`` live.
WEB_DIR = Path(str(files("sluiceway") / "web"))

#: The policy of the static files themselves; the page's own adds its nonce (:func:`index`).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
PAGE_POLICY = (
    "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
#: Where index.html takes the nonce.
NONCE_MARK = "{{CSP_NONCE}}"
_PAGE_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    # Revalidated on every load (ETag / Last-Modified): an upgrade shows at once.
    "cache-control": "no-cache",
}


class WebFiles(StaticFiles):
    """Static files with the page's headers, and JavaScript's and TypeScript's own types
    (``.ts`` would otherwise be guessed as an MPEG transport stream)."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        if path == "index.html":
            # The page is served at / only, with its nonce: here it would run under
            # script-src 'self', which an uploaded script also satisfies.
            raise HTTPException(404)
        response = await super().get_response(path, scope)
        response.headers.update(_PAGE_HEADERS)
        if path.endswith(".js"):
            response.headers["content-type"] = "text/javascript; charset=utf-8"
        elif path.endswith(".d.ts"):
            response.headers["content-type"] = "text/plain; charset=utf-8"
        return response


@cache
def _page() -> str:
    return (WEB_DIR / "index.html").read_text("utf-8")


async def index(request: Request) -> Response:
    """The page, with a nonce of its own in its policy and on its script and stylesheet."""
    nonce = secrets.token_urlsafe(18)
    headers = {**_PAGE_HEADERS, "content-security-policy": PAGE_POLICY.format(nonce=nonce)}
    return HTMLResponse(_page().replace(NONCE_MARK, nonce), headers=headers)


def make_routes() -> list[BaseRoute]:
    return [
        Route("/", index, methods=["GET", "HEAD"]),
        Mount("/static", app=WebFiles(directory=WEB_DIR), name="static"),
    ]
