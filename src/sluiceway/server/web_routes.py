"""The browser side of ``sluiceway serve``: the web UI at ``/`` and its files (the
``sluiceway.js`` client among them) at ``/static/``, shipped inside the package.

Nothing is fetched from elsewhere: the page works with no network beyond this server, and the
Content-Security-Policy says so to the browser (scripts, styles and connections: this origin
only), which also keeps an injected ``<script>`` from running.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

#: Where the page, its script and style, and ``sluiceway.js`` live.
WEB_DIR = Path(str(files("sluiceway") / "web"))

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
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
        response = await super().get_response(path, scope)
        response.headers.update(_PAGE_HEADERS)
        if path.endswith(".js"):
            response.headers["content-type"] = "text/javascript; charset=utf-8"
        elif path.endswith(".d.ts"):
            response.headers["content-type"] = "text/plain; charset=utf-8"
        return response


async def index(request: Request) -> Response:
    return FileResponse(WEB_DIR / "index.html", headers=_PAGE_HEADERS)


def make_routes() -> list[BaseRoute]:
    return [
        Route("/", index, methods=["GET", "HEAD"]),
        Mount("/static", app=WebFiles(directory=WEB_DIR), name="static"),
    ]
