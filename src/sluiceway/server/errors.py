"""Errors as JSON: ``{"error": "<code>", "detail": "<what was wrong>"}`` with the right status."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from sluiceway.asgi.errors import hub_error_response


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class APIError(Exception):
    """Raised by a route; rendered by :func:`api_error_handler`. ``headers``: response
    headers to send with it (e.g. ``WWW-Authenticate``)."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


def error_response(status: int, code: str, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail, **extra}, status_code=status)


async def api_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    response = error_response(exc.status, exc.code, exc.detail, **exc.extra)
    response.headers.update(exc.headers)
    return response


async def hub_error_handler(request: Request, exc: Exception) -> Response:
    """The hub's errors that reach the app: answered as in users' apps (the same table, the
    same ``retry-after`` on a 503)."""
    return await hub_error_response(request, exc)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


async def http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    response = error_response(exc.status_code, code, str(exc.detail))
    if exc.headers:
        response.headers.update(exc.headers)
    return response
