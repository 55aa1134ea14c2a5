"""The hub's errors as HTTP answers, for your own app: one line installs them.

An endpoint that passes a client's ``Last-Event-ID`` to :meth:`Hub.subscribe` raises
:class:`~sluiceway.ids.InvalidEventId` for an id that is not one of the hub's — a 500 in your
app unless it is answered. :func:`install_error_handlers` answers each of the hub's errors as
Sluiceway's own server does, ``{"error": "<code>", "detail": "<what was wrong>"}`` with the
status of :data:`HUB_ERRORS`:

>>> from fastapi import FastAPI
>>> from sluiceway.asgi import install_error_handlers
>>> app = FastAPI()
>>> install_error_handlers(app)  # or Starlette(exception_handlers=EXCEPTION_HANDLERS)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import orjson
from starlette.requests import Request
from starlette.responses import Response

from sluiceway.hub.errors import (
    BackendUnavailable,
    HistoryGone,
    HubClosed,
    HubError,
    InvalidDelta,
    InvalidTopic,
    TooManyTopics,
    TopicFinished,
    TopicNotReady,
)
from sluiceway.ids import InvalidEventId

#: The hub's errors and their answers, (status, code); the first match along the error's MRO.
HUB_ERRORS: dict[type[Exception], tuple[int, str]] = {
    InvalidTopic: (400, "invalid_topic"),
    InvalidDelta: (400, "invalid_delta"),
    InvalidEventId: (400, "invalid_last_event_id"),
    HistoryGone: (410, "history_gone"),
    TopicFinished: (409, "topic_finished"),  # ended by the application that owns it
    HubClosed: (503, "shutting_down"),
    TooManyTopics: (503, "too_many_topics"),
    BackendUnavailable: (503, "backend_unavailable"),
    TopicNotReady: (503, "backend_unavailable"),  # shared, not mirrored here
}

#: The headers of a 503: clients retry soon (another process, or this one restarted).
RETRY_SOON = {"retry-after": "1"}


def hub_error_answer(exc: Exception) -> tuple[int, str, dict[str, Any]]:
    """``(status, code, extra fields)`` for one of the hub's errors (see :data:`HUB_ERRORS`);
    503 ``hub_unavailable`` for one it does not list."""
    for kind in type(exc).__mro__:
        found = HUB_ERRORS.get(kind)
        if found is not None:
            status, code = found
            break
    else:
        status, code = 503, "hub_unavailable"
    extra: dict[str, Any] = {}
    if isinstance(exc, HistoryGone):  # where a client can resume from instead
        extra["earliest"] = str(exc.earliest) if exc.earliest else None
    return status, code, extra


async def hub_error_response(request: Request, exc: Exception) -> Response:
    """The JSON answer to one of the hub's errors (a Starlette exception handler)."""
    status, code, extra = hub_error_answer(exc)
    body = orjson.dumps({"error": code, "detail": str(exc), **extra})
    headers = RETRY_SOON if status == 503 else None
    return Response(body, status_code=status, headers=headers, media_type="application/json")


Handler = Callable[[Request, Exception], Awaitable[Response]]

#: For ``Starlette(exception_handlers=...)`` or ``FastAPI(exception_handlers=...)``.
EXCEPTION_HANDLERS: Mapping[Any, Handler] = {
    HubError: hub_error_response,
    InvalidEventId: hub_error_response,  # a ValueError, not a HubError
}


class _App(Protocol):
    def add_exception_handler(self, exc_class_or_status_code: Any, handler: Any) -> None: ...


def install_error_handlers(app: _App) -> None:
    """Answer the hub's errors in ``app`` (Starlette or FastAPI) as Sluiceway's server does."""
    for kind, handler in EXCEPTION_HANDLERS.items():
        app.add_exception_handler(kind, handler)
