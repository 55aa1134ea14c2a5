"""The Vercel AI SDK's UI message stream over a detached generation: ``POST {prefix}/chat``.

``useChat`` / ``DefaultChatTransport`` (npm ``ai``) work unchanged with ``api`` pointed at
``{prefix}/chat``; ``useChat({ resume: true })`` reconnects through ``GET
{prefix}/chat/{chatId}/stream``, which replays the chat's latest generation from its start and
follows it live (until its retention ends, even after it finished).  The SDK treats a client
abort as a disconnect, not a stop, so ``POST {prefix}/chat/{chatId}/cancel`` stops it.

In the browser (React; ``useChat`` of ``@ai-sdk/react``)::

    const { messages, sendMessage, stop } = useChat({
      id: chatId,
      resume: true,  // on load: GET /api/chat/{chatId}/stream (204: nothing to resume)
      transport: new DefaultChatTransport({ api: "/api/chat" }),
    });
    // stop() only lets go of the stream; to stop the model as well:
    const cancel = () => fetch(`/api/chat/${chatId}/cancel`, { method: "POST" });

Errors before the first token are HTTP statuses with a JSON body, which the transport raises as
``new Error(body)``; after it, an ``error`` chunk whose ``errorText`` is the same JSON shape.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from sluiceway.auth import Grants
from sluiceway.auth.resources import GENERATIONS, may_act_on_run, owner_of
from sluiceway.gateway.generation import first_token
from sluiceway.gateway.manager import GenerationRefused
from sluiceway.llm.ai_sdk_format import (
    BadRequest,
    parse_chat_request,
)
from sluiceway.llm.chunks import UpstreamError
from sluiceway.runs import RemoteRun, Run, run_response
from sluiceway.runs.directory import DirectoryUnavailable
from sluiceway.server.access import (
    PUBLISH,
    SUBSCRIBE,
    require,
    require_publisher,
    require_reader,
    require_run,
)
from sluiceway.server.errors import APIError, JSONResponse
from sluiceway.server.generation_routes import (
    ID_HEADER,
    cancel_generation,
    find_generation,
    generations_of,
    read_json,
    refusal,
)
from sluiceway.server.services import services_of


def _error(exc: APIError) -> Response:
    # The transport raises ``new Error(await response.text())``: this body is the message, in
    # the shape of the in-band ``error`` chunk's ``errorText`` (plus retry_after...).
    body = {"error": exc.code, "detail": exc.detail, **exc.extra}
    headers = dict(exc.headers)
    if "retry_after" in exc.extra:
        headers["retry-after"] = str(int(exc.extra["retry_after"]))
    if "generation_id" in exc.extra:
        headers[ID_HEADER] = exc.extra["generation_id"]
    return JSONResponse(body, status_code=exc.status, headers=headers)


async def _stream(
    request: Request, generation: Run | RemoteRun, ends_at: float | None = None
) -> Response:
    return await run_response(
        generations_of(request).runs, generation, "ai-sdk", ends_at=ends_at, id_header=ID_HEADER
    )


async def chat(request: Request) -> Response:
    """``POST {prefix}/chat``: start a generation over the chat's messages and stream it."""
    settings = services_of(request).settings
    try:
        grants = require(request, PUBLISH, GENERATIONS)
        turn = parse_chat_request(await read_json(request), settings.llm_max_tokens)
        await _check_owner(request, turn.chat_id, grants)
    except APIError as exc:
        return _error(exc)
    except BadRequest as exc:
        return _error(APIError(400, "invalid_request", str(exc)))
    generations = generations_of(request)
    try:
        generation = generations.start(turn.request, owner=owner_of(grants))
    except GenerationRefused as exc:
        return _error(refusal(exc))
    # Recorded before the first token, so that a reconnect meanwhile finds this answer (in
    # any process, with a shared directory).
    undo = await generations.runs.chats.bind(turn.chat_id, generation.id)
    try:
        await first_token(generation)
    except UpstreamError as exc:
        await undo()
        return _error(refusal(exc, generation.id))
    return await _stream(request, generation)


async def _check_owner(request: Request, chat_id: str, grants: Grants) -> None:
    """A chat stays with whoever started it: posting to its id would repoint its resume to
    one's own answer, so it needs what cancelling its latest generation needs (403)."""
    previous = await _generation_of(request, chat_id)
    if previous is not None and not may_act_on_run(
        grants, PUBLISH, GENERATIONS, previous.id, previous.owner
    ):
        raise APIError(403, "chat_taken", "this chat belongs to another user")


async def _generation_of_chat(request: Request) -> Run | RemoteRun | None:
    return await _generation_of(request, request.path_params["chat_id"])


async def _generation_of(request: Request, chat_id: str) -> Run | RemoteRun | None:
    try:
        generation_id = await generations_of(request).runs.chats.latest(chat_id)
    except (DirectoryUnavailable, OSError) as exc:
        raise APIError(503, "backend_unavailable", f"cannot look the chat up: {exc}") from None
    return await find_generation(request, generation_id) if generation_id else None


async def _authorized_chat(request: Request, action: str) -> tuple[Run | RemoteRun | None, Grants]:
    """The chat's latest generation (None when there is none), if the request may read
    (``subscribe``) or cancel (``publish``) it, and the request's grants; else
    :class:`APIError`. Whoever may not read (or cancel) at all is refused before the lookup,
    the same for every chat id."""
    grants = require_reader(request) if action == SUBSCRIBE else require_publisher(request)
    generation = await _generation_of_chat(request)
    if generation is not None:
        require_run(request, action, GENERATIONS, generation.id, generation.owner)
    return generation, grants


async def resume(request: Request) -> Response:
    """``GET {prefix}/chat/{chatId}/stream``: the chat's latest generation from its start,
    live or ended; ``204`` when there is none (or its retention ended)."""
    try:
        generation, grants = await _authorized_chat(request, SUBSCRIBE)
    except APIError as exc:
        return _error(exc)
    if generation is None:
        return Response(status_code=204)
    return await _stream(request, generation, grants.read_deadline)


async def cancel(request: Request) -> Response:
    """``POST {prefix}/chat/{chatId}/cancel``: stop the chat's generation (idempotent)."""
    try:
        generation, _ = await _authorized_chat(request, PUBLISH)
    except APIError as exc:
        return _error(exc)
    if generation is None:
        return _error(APIError(404, "unknown_chat", "no generation for this chat (or it expired)"))
    generation = await cancel_generation(request, generation)
    state = generation.state if isinstance(generation, RemoteRun) else generation.state.value
    return JSONResponse(
        {"id": generation.id, "state": state},
        headers={ID_HEADER: generation.id},
    )


def make_routes(prefix: str) -> list[BaseRoute]:
    """The routes under ``prefix`` (``""`` or ``/api``-like, no trailing slash)."""
    return [
        Route(f"{prefix}/chat", chat, methods=["POST"]),
        Route(f"{prefix}/chat/{{chat_id:path}}/stream", resume, methods=["GET"]),
        Route(f"{prefix}/chat/{{chat_id:path}}/cancel", cancel, methods=["POST"]),
    ]
