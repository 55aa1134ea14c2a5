"""``/v1/responses``: OpenAI's Responses API over a detached generation, resumable.

``POST /v1/responses`` (``stream``, ``background``), ``GET /v1/responses/{id}`` (the Response
object; with ``?stream=true&starting_after=N`` its events after N, then live), and ``POST
/v1/responses/{id}/cancel``. The official ``openai`` SDK works unchanged against them.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sluiceway.asgi import EventStreamResponse
from sluiceway.auth import Grants
from sluiceway.auth.resources import GENERATIONS, owner_of
from sluiceway.gateway.manager import GenerationRefused
from sluiceway.hub import Hub
from sluiceway.llm.chunks import UpstreamError
from sluiceway.llm.openai_format import BadRequest
from sluiceway.llm.responses_format import (
    ResponseInfo,
    ResponsesEncoder,
    annotation,
    generation_id,
    parse_request,
    response_info,
)
from sluiceway.runs import RemoteRun, Run
from sluiceway.runs.formats import responses_replay, responses_stream
from sluiceway.server.access import PUBLISH, SUBSCRIBE, require
from sluiceway.server.errors import APIError, JSONResponse
from sluiceway.server.generation_routes import (
    authorized_generation,
    cancel_generation,
    generations_of,
    read_json,
    start_generation,
)
from sluiceway.server.openai_routes import openai_error
from sluiceway.server.services import services_of


async def create(request: Request) -> Response:
    settings = services_of(request).settings
    try:
        grants = require(request, PUBLISH, GENERATIONS, api_keys=True)
        body = await read_json(request)
        chat, stream, background = parse_request(body, settings.llm_max_tokens)
    except APIError as exc:
        return openai_error(exc.status, exc.code, exc.detail, **exc.headers)
    except BadRequest as exc:
        return openai_error(400, "invalid_request", str(exc))
    generations = generations_of(request)
    fields = annotation(chat, body)
    try:
        if background:
            # Detached at once, kept running with nobody watching; errors show in its status.
            generation = generations.start(
                chat, background=True, annotations={"responses": fields}, owner=owner_of(grants)
            )
        else:
            generation = await start_generation(
                generations, chat, annotations={"responses": fields}, owner=owner_of(grants)
            )
    except GenerationRefused as exc:
        return openai_error(exc.status, exc.code, exc.detail)
    except UpstreamError as exc:
        headers = {"retry-after": str(int(exc.retry_after))} if exc.retry_after else {}
        return openai_error(exc.status, exc.kind, exc.message, **headers)
    info = response_info(generation.id, generation.model, generation.created, fields)
    hub: Hub = services_of(request).hub
    headers = {"x-generation-id": generation.id}
    if stream:
        return EventStreamResponse(responses_stream(hub, generation, info, -1), headers=headers)
    if background:
        encoder = ResponsesEncoder(info)
        encoder.status = "queued" if not generation.opened.done() else "in_progress"
        return JSONResponse(encoder.snapshot(), headers=headers)
    encoder = await responses_replay(hub, generation, info, wait=True)
    if encoder.status == "failed":
        return openai_error(502, "upstream_error", str((encoder.error or {}).get("message", "")))
    return JSONResponse(encoder.snapshot(), headers=headers)


async def _find(
    request: Request, *, cancel: bool = False
) -> tuple[Run | RemoteRun, ResponseInfo, Grants] | Response:
    """The response and the request's grants on it: to read it, or to ``cancel`` it."""
    rid = request.path_params["response_id"]
    try:
        generation, grants = await authorized_generation(
            request, generation_id(rid), PUBLISH if cancel else SUBSCRIBE, api_keys=True
        )
    except APIError as exc:
        if exc.status != 404:
            return openai_error(exc.status, exc.code, exc.detail, **exc.headers)
        generation = None
    fields = generation.annotations.get("responses") if generation is not None else None
    if generation is None or not isinstance(fields, dict):
        return openai_error(404, "not_found", f"No response found with id '{rid[:80]}'.")
    info = response_info(generation.id, generation.model, generation.created, fields)
    return generation, info, grants


async def retrieve(request: Request) -> Response:
    found = await _find(request)
    if isinstance(found, Response):
        return found
    generation, info, grants = found
    hub: Hub = services_of(request).hub
    if request.query_params.get("stream") in ("true", "1"):
        after = request.query_params.get("starting_after") or request.headers.get("last-event-id")
        try:
            starting_after = int(after) if after is not None else -1
        except ValueError:
            return openai_error(400, "invalid_starting_after", "starting_after must be an integer")
        return EventStreamResponse(
            responses_stream(hub, generation, info, starting_after),
            headers={"x-generation-id": generation.id},
            ends_at=grants.read_deadline,
        )
    encoder = await responses_replay(hub, generation, info, wait=False)
    return JSONResponse(encoder.snapshot())


async def cancel(request: Request) -> Response:
    found = await _find(request, cancel=True)
    if isinstance(found, Response):
        return found
    generation, info, _ = found
    await cancel_generation(request, generation)
    encoder = await responses_replay(services_of(request).hub, generation, info, wait=False)
    return JSONResponse(encoder.snapshot())


routes = [
    Route("/v1/responses", create, methods=["POST"]),
    Route("/v1/responses/{response_id}", retrieve, methods=["GET"]),
    Route("/v1/responses/{response_id}/cancel", cancel, methods=["POST"]),
]
