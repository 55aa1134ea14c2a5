"""Helpers for the browser tests: the system Chromium under Playwright, and a static page
server on a loopback port of its own (another origin than the hub's).

Playwright cannot download its own browsers here (no internet beyond package registries), so
the tests drive Debian's ``chromium`` package; ``.ci/run`` installs it when missing.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

from serverproc import HOST

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

# A blank page: the tests evaluate their script in it, so its only job is to be an origin.
PAGE = b"<!doctype html><meta charset=utf-8><title>sluiceway browser test</title>"


def launch_chromium(playwright: Any, *extra_args: str) -> Any:
    """``playwright.chromium.launch`` on the system Chromium, headless (``extra_args``: more
    command-line switches, e.g. ``--host-resolver-rules``)."""
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM), args=[*CHROMIUM_ARGS, *extra_args], headless=True
    )


class _PageHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/html; charset=utf-8")
        self.send_header("content-length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class PageServer:
    """``with PageServer() as pages: page.goto(pages.url)``: serves :data:`PAGE` at every
    path on a free loopback port, from a thread."""

    def __init__(self) -> None:
        self._server = ThreadingHTTPServer((HOST, 0), _PageHandler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, host: str = HOST) -> str:
        """The origin, under ``host`` (``localhost`` reaches the same socket as another site)."""
        return f"http://{host}:{self.port}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)
