"""Errors as JSON: ``{"error": "<code>", "detail": "<what was wrong>"}`` with the right status."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from sluiceway.hub import (
    BackendUnavailable,
    HistoryGone,
    HubClosed,
    InvalidTopic,
    TooManyTopics,
    TopicFinished,
    TopicNotReady,
)
from sluiceway.ids import InvalidEventId

#: The headers of a 503 while shutting down: the clients' SDKs retry, and reach another
#: process (or this one restarted).
RETRY_SOON = {"retry-after": "1"}


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


#: The hub's errors as answers: a route lets them through, :func:`hub_error_handler` answers.
HUB_ERRORS: dict[type[Exception], tuple[int, str]] = {
    InvalidTopic: (400, "invalid_topic"),
    InvalidEventId: (400, "invalid_last_event_id"),
    HistoryGone: (410, "history_gone"),
    TopicFinished: (409, "topic_finished"),  # ended by the application that owns it
    HubClosed: (503, "shutting_down"),
    TooManyTopics: (503, "too_many_topics"),
    BackendUnavailable: (503, "backend_unavailable"),
    TopicNotReady: (503, "backend_unavailable"),  # shared, not mirrored here
}


def hub_error(exc: Exception) -> APIError:
    """The :class:`APIError` for one of the hub's errors (see :data:`HUB_ERRORS`)."""
    for kind in type(exc).__mro__:
        found = HUB_ERRORS.get(kind)
        if found is not None:
            status, code = found
            break
    else:
        status, code = 503, "hub_unavailable"
    error = APIError(status, code, str(exc))
    if isinstance(exc, HistoryGone):  # where a client can resume from instead
        error.extra["earliest"] = str(exc.earliest) if exc.earliest else None
    return error


async def hub_error_handler(request: Request, exc: Exception) -> Response:
    return await api_error_handler(request, hub_error(exc))


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


async def http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    response = error_response(exc.status_code, code, str(exc.detail))
    if exc.headers:
        response.headers.update(exc.headers)
    return response
