"""``/v1/generations``: start a detached generation, follow it, resume it, cancel it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
from pydantic import Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sluiceway.asgi import EventStreamResponse
from sluiceway.hub import HubClosed, InvalidEventId, Subscription
from sluiceway.llm.chunks import UpstreamError
from sluiceway.llm.follow import generation_stream
from sluiceway.llm.generation import Generation
from sluiceway.llm.manager import GenerationRefused, Generations
from sluiceway.llm.pacing import paced
from sluiceway.llm.request import ChatRequest
from sluiceway.server.errors import APIError, JSONResponse
from sluiceway.sse import Event


class GenerationBody(ChatRequest):
    """``POST /v1/generations``: a chat request, plus ``partial_json`` for structured output
    and ``pace`` (tokens/s) for smooth output."""

    partial_json: bool = False
    pace: float | None = Field(default=None, gt=0, le=10_000)


def generations_of(request: Request) -> Generations:
    return request.app.state.generations  # type: ignore[no-any-return]


async def read_json(request: Request) -> Any:
    limit = request.app.state.settings.max_body_bytes
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            raise APIError(413, "body_too_large", f"request body exceeds {limit} bytes")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise APIError(400, "invalid_json", f"request body is not valid JSON: {exc}") from None


def validation_detail(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in error['loc']) or 'body'}: {error['msg']}"
        for error in exc.errors()
    )


async def start_generation(
    generations: Generations, chat: ChatRequest, *, partial_json: bool = False
) -> Generation:
    """Start a generation and wait for its first token: errors before it raise
    :class:`UpstreamError` / :class:`GenerationRefused`, so they can become HTTP statuses."""
    generation = generations.start(chat, partial_json=partial_json)
    # Shielded: a client that leaves now must not cancel the detached generation.
    await asyncio.shield(generation.opened)
    return generation


def refusal(exc: GenerationRefused | UpstreamError, generation_id: str | None = None) -> APIError:
    extra: dict[str, Any] = {"generation_id": generation_id} if generation_id else {}
    if isinstance(exc, GenerationRefused):
        return APIError(exc.status, exc.code, exc.detail, **extra)
    if exc.retry_after is not None:
        extra["retry_after"] = exc.retry_after
    return APIError(exc.status, exc.kind, exc.message, **extra)


def stream_of(
    request: Request, generation: Generation, last_event_id: str | None, pace: float | None
) -> Response:
    hub = request.app.state.hub
    if generation.done.is_set() and last_event_id == hub.latest_id(generation.topic):
        # The client has everything of an ended generation: 204 tells it not to reconnect.
        return Response(status_code=204)
    content: Subscription | AsyncIterator[Event]
    try:
        if pace is None:
            content = hub.subscribe_nowait(
                [generation.topic], last_event_id or hub.earliest_id(generation.topic)
            )
        else:
            hub.subscribe_nowait([generation.topic], last_event_id).release()  # check the id
            content = paced(generation_stream(hub, generation, last_event_id), pace)
    except InvalidEventId as exc:
        raise APIError(400, "invalid_last_event_id", str(exc)) from None
    except HubClosed as exc:
        raise APIError(503, "shutting_down", str(exc)) from None
    return EventStreamResponse(  # type: ignore[return-value]
        content,
        headers={"x-generation-id": generation.id},
        retry=request.app.state.settings.retry_ms,
    )


async def create(request: Request) -> Response:
    try:
        body = GenerationBody.model_validate(await read_json(request))
    except ValidationError as exc:
        raise APIError(422, "invalid_body", validation_detail(exc)) from None
    chat = ChatRequest.model_validate(body.model_dump(exclude={"partial_json", "pace"}))
    generations = generations_of(request)
    try:
        generation = await start_generation(generations, chat, partial_json=body.partial_json)
    except (GenerationRefused, UpstreamError) as exc:
        raise refusal(exc) from None
    return stream_of(request, generation, None, body.pace)


def _find(request: Request) -> Generation:
    generation = generations_of(request).get(request.path_params["generation_id"])
    if generation is None:
        raise APIError(404, "unknown_generation", "no such generation (or its retention ended)")
    return generation


async def describe(request: Request) -> Response:
    return JSONResponse(_find(request).describe())


async def follow(request: Request) -> Response:
    generation = _find(request)
    last_event_id = request.headers.get("last-event-id") or request.query_params.get(
        "last_event_id"
    )
    pace = request.query_params.get("pace")
    try:
        rate = float(pace) if pace is not None else None
    except ValueError:
        rate = -1.0
    if rate is not None and not 0 < rate <= 10_000:
        raise APIError(400, "invalid_pace", "pace must be a number of tokens per second, 0-10000")
    return stream_of(request, generation, last_event_id, rate)


async def cancel(request: Request) -> Response:
    generation = _find(request)
    generations_of(request).cancel(generation.id)
    if generation.task is not None and not generation.task.done():
        await asyncio.wait({generation.task}, timeout=2)
    return JSONResponse({"id": generation.id, "state": generation.state.value})


routes = [
    Route("/v1/generations", create, methods=["POST"]),
    Route("/v1/generations/{generation_id}", describe, methods=["GET"]),
    Route("/v1/generations/{generation_id}/stream", follow, methods=["GET"]),
    Route("/v1/generations/{generation_id}/cancel", cancel, methods=["POST"]),
]
