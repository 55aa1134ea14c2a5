"""FastAPI: the follow / describe / cancel endpoints of a family of runs, as a router.

>>> from fastapi import Depends, FastAPI                                  # doctest: +SKIP
>>> runs = Runs(Hub(), family="answer")                                    # doctest: +SKIP
>>> app = FastAPI(lifespan=runs.lifespan)                                  # doctest: +SKIP
>>> app.include_router(RunRouter(runs, prefix="/answers", identify=current_user))  # doctest: +SKIP

``identify`` is an ordinary FastAPI dependency (it may depend on ``OAuth2PasswordBearer``, a
session, anything): what it returns is the caller's owner id, compared with each run's owner.
The endpoints appear in the app's OpenAPI document, with their stream's media type.
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoints' annotations, which
# name aliases local to RunRouter.__init__.

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query
from pydantic import BaseModel, ConfigDict
from starlette.responses import Response

from sluiceway.runs.formats import Format
from sluiceway.runs.http import cancel_chat, cancel_run, describe_run, follow_chat, follow_run
from sluiceway.runs.manager import Runs

__all__ = ["RunDescription", "RunRouter"]


class RunDescription(BaseModel):
    """A run as ``GET {prefix}/{run_id}`` describes it (plus its ``meta``)."""

    model_config = ConfigDict(extra="allow")

    id: str
    state: str
    created: int
    finish_reason: str | None
    items: int
    followers: int
    usage: dict[str, Any] | None = None
    text: str | None = None
    error: dict[str, str] | None = None


class Cancelled(BaseModel):
    id: str
    state: str


class ErrorBody(BaseModel):
    error: str
    detail: str


def _nobody() -> None:
    return None


STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The run's events: ``text/event-stream`` in the requested format.",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    },
    204: {"description": "Nothing more to send: the client has all of an ended run."},
    400: {"model": ErrorBody, "description": "A ``Last-Event-ID`` that is not the run's."},
    404: {"model": ErrorBody, "description": "No such run, or not the caller's."},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No such run, or not the caller's."},
    503: {"model": ErrorBody, "description": "The shared directory (Redis) is unreachable."},
}


class RunRouter(APIRouter):
    """``GET {prefix}/{run_id}``, ``GET {prefix}/{run_id}/events``, ``POST
    {prefix}/{run_id}/cancel``; with ``chats`` (the path ``useChat`` posts to), also ``GET
    {chats}/{chat_id}/stream`` and ``POST {chats}/{chat_id}/cancel`` (see
    :func:`sluiceway.runs.http.run_routes`, the same endpoints for Starlette)."""

    def __init__(
        self,
        runs: Runs,
        *,
        prefix: str = "/runs",
        identify: Callable[..., Any] | None = None,
        chats: str | None = None,
        tags: list[str] | None = None,
        **router_options: Any,
    ) -> None:
        super().__init__(tags=list(tags or ["runs"]), **router_options)
        prefix = prefix.rstrip("/")
        Owner = Annotated[str | None, Depends(identify or _nobody)]
        RunId = Annotated[str, Path(description="The run's id (its ``start`` event's ``id``).")]

        @self.get(
            f"{prefix}/{{run_id}}",
            response_model=RunDescription,
            responses=NOT_FOUND,
            summary="Describe a run",
        )
        async def describe(run_id: RunId, owner: Owner) -> Response:
            """Its state, meta, followers, and what it produced so far."""
            return await describe_run(runs, run_id, owner)

        @self.get(
            f"{prefix}/{{run_id}}/events",
            response_class=Response,
            responses=STREAM_DOC,
            summary="Follow a run",
        )
        async def events(
            run_id: RunId,
            owner: Owner,
            format: Annotated[
                Format, Query(description="The wire format: the run's own events, or an LLM API's.")
            ] = "sse",
            last_event_id_header: Annotated[
                str | None,
                Header(
                    alias="Last-Event-ID",
                    description="Resume after this event (``sse``; a ``sequence_number`` for "
                    "``responses``).",
                ),
            ] = None,
            last_event_id: Annotated[
                str | None, Query(description="The same, for clients that cannot set headers.")
            ] = None,
            starting_after: Annotated[
                int | None,
                Query(ge=0, description="``responses``: resume after this ``sequence_number``."),
            ] = None,
        ) -> Response:
            """The run's stream, replayed from the start (or after ``Last-Event-ID``) then
            live, until its last event (``done`` or ``error``)."""
            return await follow_run(
                runs,
                run_id,
                owner,
                format=format,
                last_event_id=last_event_id_header or last_event_id,
                starting_after=starting_after,
            )

        @self.post(
            f"{prefix}/{{run_id}}/cancel",
            response_model=Cancelled,
            responses=NOT_FOUND,
            summary="Cancel a run",
        )
        async def cancel(run_id: RunId, owner: Owner) -> Response:
            """Stop it wherever it goes on (idempotent); its stream ends with ``done``
            ``{"state": "cancelled"}``. Answers once it has ended (or after 2 s)."""
            return await cancel_run(runs, run_id, owner)

        if chats is None:
            return
        chats = chats.rstrip("/")
        ChatId = Annotated[str, Path(description="The chat's id (``useChat``'s ``id``).")]

        @self.get(
            f"{chats}/{{chat_id:path}}/stream",
            response_class=Response,
            responses=STREAM_DOC,
            summary="Resume a chat's answer",
        )
        async def chat_stream(chat_id: ChatId, owner: Owner) -> Response:
            """``useChat({ resume: true })``: the chat's latest run, in the AI SDK's UI message
            stream, from its start; ``204`` when there is none."""
            return await follow_chat(runs, chat_id, owner)

        @self.post(
            f"{chats}/{{chat_id:path}}/cancel",
            response_model=Cancelled,
            responses=NOT_FOUND,
            summary="Stop a chat's answer",
        )
        async def chat_cancel(chat_id: ChatId, owner: Owner) -> Response:
            """Stop the chat's latest run (``useChat``'s ``stop()`` only lets go of the
            stream)."""
            return await cancel_chat(runs, chat_id, owner)
