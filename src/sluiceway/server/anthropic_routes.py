"""``POST /v1/messages``: Anthropic's Messages API over a detached generation, so the official
``anthropic`` SDK works unchanged with ``base_url`` pointed here::

    client = anthropic.Anthropic(base_url="http://127.0.0.1:8000", api_key="unused")
    with client.messages.stream(model="m", max_tokens=64, messages=[...]) as stream:
        for text in stream.text_stream: ...

The answer carries ``x-generation-id`` (and ``request-id``, which the SDK exposes as
``_request_id``): the generation can be followed or cancelled at ``/v1/generations/{id}``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from sluiceway.asgi import EventStreamResponse
from sluiceway.asgi.errors import RETRY_SOON
from sluiceway.auth.resources import GENERATIONS, owner_of
from sluiceway.gateway.manager import GenerationRefused
from sluiceway.llm.anthropic_format import (
    BadRequest,
    MessageEncoder,
    error_body,
    error_type,
    parse_request,
)
from sluiceway.llm.chunks import ERROR_STATUS, UpstreamError
from sluiceway.runs import run_events
from sluiceway.runs.formats import anthropic_stream
from sluiceway.server.access import PUBLISH, require
from sluiceway.server.errors import APIError, JSONResponse
from sluiceway.server.generation_routes import generations_of, read_json, start_generation
from sluiceway.server.services import services_of


def _error(status: int, message: str, kind: str | None = None, **headers: str) -> Response:
    body = error_body(error_type(status, kind), message)
    return JSONResponse(body, status_code=status, headers=headers)


async def messages(request: Request) -> Response:
    try:
        grants = require(request, PUBLISH, GENERATIONS, api_keys=True)
        chat, stream = parse_request(await read_json(request))
    except APIError as exc:  # 401/403 refused, 413 too large, 400 not JSON
        return _error(exc.status, exc.detail, **exc.headers)
    except BadRequest as exc:
        return _error(400, str(exc))
    try:
        generation = await start_generation(generations_of(request), chat, owner=owner_of(grants))
    except GenerationRefused as exc:
        return _error(exc.status, exc.detail)
    except UpstreamError as exc:
        headers = {"retry-after": str(int(exc.retry_after))} if exc.retry_after else {}
        return _error(exc.status, exc.message, exc.kind, **headers)
    encoder = MessageEncoder(generation.id, generation.model)
    headers = {"x-generation-id": generation.id, "request-id": generation.id}
    hub = services_of(request).hub
    if stream:
        return EventStreamResponse(anthropic_stream(hub, generation, encoder), headers=headers)
    text = []
    async for event, payload in run_events(hub, generation):
        if event == "token":
            text.append(payload["text"])
        elif event == "done":
            if payload.get("state") == "shutdown":  # no answer to give: ask again elsewhere
                return _error(503, "the server is shutting down", "overloaded", **RETRY_SOON)
            return JSONResponse(encoder.message("".join(text), payload), headers=headers)
        elif event == "error":
            kind = payload["error"]
            return _error(ERROR_STATUS.get(kind, 502), payload["message"], kind, **headers)
    return _error(502, "the generation ended without an answer", **headers)


routes: list[BaseRoute] = [Route("/v1/messages", messages, methods=["POST"])]
