"""``POST /v1/chat/completions``: OpenAI's format over a detached generation, so the official
SDKs (and anything built on them) work unchanged with ``base_url`` pointed here."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sluiceway.asgi import EventStreamResponse
from sluiceway.asgi.errors import RETRY_SOON
from sluiceway.auth.resources import GENERATIONS, owner_of
from sluiceway.gateway.manager import GenerationRefused
from sluiceway.llm.chunks import UpstreamError
from sluiceway.llm.openai_format import BadRequest, ChunkEncoder, error_body, parse_request
from sluiceway.runs import run_events
from sluiceway.runs.formats import openai_stream
from sluiceway.server.access import PUBLISH, require
from sluiceway.server.errors import APIError, JSONResponse
from sluiceway.server.generation_routes import generations_of, read_json, start_generation
from sluiceway.server.services import services_of


def openai_error(status: int, code: str, message: str, **headers: str) -> Response:
    """An error in OpenAI's shape, so that its SDKs raise their own exception for it."""
    return JSONResponse(error_body(status, code, message), status_code=status, headers=headers)


async def chat_completions(request: Request) -> Response:
    settings = services_of(request).settings
    try:
        grants = require(request, PUBLISH, GENERATIONS, api_keys=True)
        body = await read_json(request)
        chat, stream, include_usage = parse_request(body, settings.llm_max_tokens)
    except APIError as exc:
        return openai_error(exc.status, exc.code, exc.detail, **exc.headers)
    except BadRequest as exc:
        return openai_error(400, "invalid_request", str(exc))
    try:
        generation = await start_generation(generations_of(request), chat, owner=owner_of(grants))
    except GenerationRefused as exc:
        return openai_error(exc.status, exc.code, exc.detail)
    except UpstreamError as exc:
        headers = {"retry-after": str(int(exc.retry_after))} if exc.retry_after else {}
        return openai_error(exc.status, exc.kind, exc.message, **headers)
    encoder = ChunkEncoder(generation.id, generation.model, int(generation.created), include_usage)
    hub = services_of(request).hub
    if stream:
        return EventStreamResponse(
            openai_stream(hub, generation, encoder), headers={"x-generation-id": generation.id}
        )
    text = []
    async for event, payload in run_events(hub, generation):
        if event == "token":
            text.append(payload["text"])
        elif event == "done":
            if payload.get("state") == "shutdown":  # no answer to give: ask again elsewhere
                message = "the server is shutting down"
                return openai_error(503, "shutting_down", message, **RETRY_SOON)
            return JSONResponse(encoder.completion("".join(text), payload))
        elif event == "error":
            return openai_error(502, payload["error"], payload["message"])
    return openai_error(502, "upstream_error", "the generation ended without an answer")


routes = [Route("/v1/chat/completions", chat_completions, methods=["POST"])]
