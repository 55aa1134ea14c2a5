"""``/v1/generations``: start a detached generation, follow it, resume it, cancel it."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sluiceway.auth import Grants
from sluiceway.auth.resources import GENERATIONS, owner_of
from sluiceway.gateway.generation import first_token
from sluiceway.gateway.manager import GenerationRefused, Generations
from sluiceway.llm.chunks import UpstreamError
from sluiceway.llm.request import ChatRequest
from sluiceway.runs import RemoteRun, Run, run_response
from sluiceway.runs.directory import DirectoryUnavailable
from sluiceway.server.access import PUBLISH, SUBSCRIBE, require, require_run
from sluiceway.server.errors import APIError, JSONResponse
from sluiceway.server.services import services_of

#: The response header naming the generation a stream comes from.
ID_HEADER = "x-generation-id"


class GenerationBody(ChatRequest):
    """``POST /v1/generations``: a chat request, plus ``partial_json`` for structured output
    and ``pace`` (tokens/s) for smooth output."""

    partial_json: bool = False
    pace: float | None = Field(default=None, gt=0, le=10_000)


def generations_of(request: Request) -> Generations:
    return services_of(request).generations


async def read_json(request: Request) -> Any:
    limit = services_of(request).settings.max_body_bytes
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            raise APIError(413, "body_too_large", f"request body exceeds {limit} bytes")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise APIError(400, "invalid_json", f"request body is not valid JSON: {exc}") from None
    try:
        orjson.dumps(value)  # parts of it go upstream: they must be writable as JSON again
    except orjson.JSONEncodeError:
        raise APIError(400, "invalid_json", "the body is nested more than 255 deep") from None
    return value


def validation_detail(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in error['loc']) or 'body'}: {error['msg']}"
        for error in exc.errors()
    )


async def start_generation(
    generations: Generations,
    chat: ChatRequest,
    *,
    partial_json: bool = False,
    annotations: dict[str, Any] | None = None,
    owner: str | None = None,
) -> Run:
    """Start a generation for ``owner`` and wait for its first token: errors before it raise
    :class:`UpstreamError` / :class:`GenerationRefused`, so they can become HTTP statuses."""
    generation = generations.start(
        chat, partial_json=partial_json, annotations=annotations, owner=owner
    )
    await first_token(generation)
    return generation


def refusal(exc: GenerationRefused | UpstreamError, generation_id: str | None = None) -> APIError:
    extra: dict[str, Any] = {"generation_id": generation_id} if generation_id else {}
    if isinstance(exc, GenerationRefused):
        return APIError(exc.status, exc.code, exc.detail, **extra)
    if exc.retry_after is not None:
        extra["retry_after"] = exc.retry_after
    return APIError(exc.status, exc.kind, exc.message, **extra)


async def stream_of(
    request: Request,
    generation: Run | RemoteRun,
    last_event_id: str | None,
    pace: float | None,
    ends_at: float | None = None,
) -> Response:
    """The generation's stream from ``last_event_id`` (its start when None); ``ends_at``: when
    the stream must end (the reader's token expires)."""
    return await run_response(
        generations_of(request).runs,
        generation,
        last_event_id=last_event_id,
        pace=pace,
        ends_at=ends_at,
        retry=services_of(request).settings.retry_ms,
        id_header=ID_HEADER,
    )


async def create(request: Request) -> Response:
    grants = require(request, PUBLISH, GENERATIONS)
    try:
        body = GenerationBody.model_validate(await read_json(request))
    except ValidationError as exc:
        raise APIError(422, "invalid_body", validation_detail(exc)) from None
    chat = ChatRequest.model_validate(body.model_dump(exclude={"partial_json", "pace"}))
    generations = generations_of(request)
    try:
        generation = await start_generation(
            generations, chat, partial_json=body.partial_json, owner=owner_of(grants)
        )
    except (GenerationRefused, UpstreamError) as exc:
        raise refusal(exc) from None
    return await stream_of(request, generation, None, body.pace)


async def find_generation(request: Request, generation_id: str) -> Run | RemoteRun | None:
    """The generation, run by this process or (with the Redis backend) by another one."""
    try:
        return await generations_of(request).find(generation_id)
    except (DirectoryUnavailable, OSError) as exc:
        raise APIError(
            503, "backend_unavailable", f"cannot look the generation up: {exc}"
        ) from None


async def authorized_generation(
    request: Request, generation_id: str, action: str, *, api_keys: bool = False
) -> tuple[Run | RemoteRun, Grants]:
    """The generation, if the request may read (``subscribe``) or cancel (``publish``) it,
    and the request's grants; else :class:`APIError` (401/403; 404 for an unknown id, to
    whoever could act on their own generations)."""
    generation = await find_generation(request, generation_id)
    grants = require_run(
        request,
        action,
        GENERATIONS,
        generation_id,
        generation.owner if generation is not None else None,
        exists=generation is not None,
        api_keys=api_keys,
    )
    if generation is None:
        raise APIError(404, "unknown_generation", "no such generation (or its retention ended)")
    return generation, grants


async def describe(request: Request) -> Response:
    generation, _ = await authorized_generation(
        request, request.path_params["generation_id"], SUBSCRIBE
    )
    return JSONResponse(await generations_of(request).runs.describe(generation))


async def follow(request: Request) -> Response:
    generation, grants = await authorized_generation(
        request, request.path_params["generation_id"], SUBSCRIBE
    )
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
    return await stream_of(request, generation, last_event_id, rate, grants.read_deadline)


async def cancel_generation(request: Request, generation: Run | RemoteRun) -> Run | RemoteRun:
    """Cancel it wherever it runs and wait (up to 2 s) until it has ended; the generation as
    it stands then."""
    try:
        return await generations_of(request).runs.cancel_and_wait(generation)
    except (DirectoryUnavailable, OSError) as exc:
        raise APIError(503, "backend_unavailable", f"cannot reach the generation: {exc}") from None


async def cancel(request: Request) -> Response:
    found, _ = await authorized_generation(request, request.path_params["generation_id"], PUBLISH)
    generation = await cancel_generation(request, found)
    state = generation.state if isinstance(generation, RemoteRun) else generation.state.value
    return JSONResponse({"id": generation.id, "state": state})


routes = [
    Route("/v1/generations", create, methods=["POST"]),
    Route("/v1/generations/{generation_id}", describe, methods=["GET"]),
    Route("/v1/generations/{generation_id}/stream", follow, methods=["GET"]),
    Route("/v1/generations/{generation_id}/cancel", cancel, methods=["POST"]),
]
