"""The HTTP API of ``sluiceway serve``: publish, subscribe, history, health, metrics."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sluiceway.asgi import EventStreamResponse
from sluiceway.auth import AuthError
from sluiceway.auth.resources import is_internal_topic
from sluiceway.control import RESERVED_EVENT_PREFIX
from sluiceway.hub import (
    TOPIC_NAME,
    Hub,
    HubError,
    InvalidEventId,
    check_tags,
    check_topic_name,
)
from sluiceway.server.access import (
    admission_of,
    facts_of,
    require_status,
    require_topic_publish,
    require_topics_read,
)
from sluiceway.server.errors import APIError, JSONResponse
from sluiceway.server.metrics import render
from sluiceway.server.services import services_of
from sluiceway.server.settings import Settings
from sluiceway.server.streams import read_stream_request
from sluiceway.sse import SSEProtocolError

MAX_HISTORY_LIMIT = 1000


def _settings(request: Request) -> Settings:
    return services_of(request).settings


def _hub(request: Request) -> Hub:
    return services_of(request).hub


def _topic(request: Request) -> str:
    return check_topic_name(request.path_params["topic"])


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise APIError(413, "body_too_large", f"request body exceeds {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise APIError(413, "body_too_large", f"request body exceeds {limit} bytes")
    return bytes(body)


def _parse_publication(body: bytes) -> tuple[Any, str | None, dict[str, str] | None]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise APIError(400, "invalid_json", f"request body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise APIError(422, "invalid_body", 'expected a JSON object like {"data": ...}')
    if "data" not in payload:
        raise APIError(422, "missing_data", 'the body has no "data" field')
    unknown = set(payload) - {"data", "event", "tags"}
    if unknown:
        raise APIError(422, "unknown_field", f"unknown field(s): {', '.join(sorted(unknown))}")
    event = payload.get("event")
    if event is not None:
        if not isinstance(event, str) or not event or len(event) > 200:
            raise APIError(422, "invalid_event", '"event" must be a string of 1-200 characters')
        if "\r" in event or "\n" in event:
            raise APIError(422, "invalid_event", '"event" must not contain line breaks')
        if event.startswith(RESERVED_EVENT_PREFIX):
            reserved = f"event types starting with {RESERVED_EVENT_PREFIX!r} are reserved"
            raise APIError(422, "invalid_event", reserved)
    try:
        tags = check_tags(payload.get("tags"))
    except ValueError as exc:
        raise APIError(422, "invalid_tags", str(exc)) from None
    return payload["data"], event, tags


async def publish(request: Request) -> Response:
    topic = _topic(request)
    require_topic_publish(request, topic)
    body = await read_body(request, _settings(request).max_body_bytes)
    data, event, tags = _parse_publication(body)
    try:
        event_id = await _hub(request).publish(topic, data, event=event, tags=tags)
    except HubError:
        raise  # answered from the table of the hub's errors
    except (SSEProtocolError, ValueError) as exc:  # a lone surrogate; JSON nested too deep
        raise APIError(422, "invalid_data", str(exc)) from None
    return JSONResponse({"id": event_id})


async def _stream(request: Request, path_topics: list[str]) -> Response:
    hub = _hub(request)
    wanted = read_stream_request(
        _settings(request), path_topics, request.query_params, request.headers
    )
    grants = require_topics_read(request, wanted.topics)
    subscription = await hub.subscribe(
        wanted.topics, last_event_id=wanted.last_event_id, delta=wanted.delta
    )
    return EventStreamResponse(
        subscription, retry=_settings(request).retry_ms, ends_at=grants.read_deadline
    )


async def subscribe_topic(request: Request) -> Response:
    return await _stream(request, [_topic(request)])


async def subscribe_many(request: Request) -> Response:
    return await _stream(request, [])


async def history(request: Request) -> Response:
    topic = _topic(request)
    require_topics_read(request, [topic])
    after = request.query_params.get("after") or None
    raw_limit = request.query_params.get("limit", "100")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_HISTORY_LIMIT:
        raise APIError(400, "invalid_limit", f"limit must be an integer in 1..{MAX_HISTORY_LIMIT}")
    try:
        page = await _hub(request).history(topic, after=after, limit=int(raw_limit))
    except InvalidEventId as exc:  # here it names the after= parameter
        raise APIError(400, "invalid_after", str(exc)) from None
    return JSONResponse(page.to_json())


async def healthz(request: Request) -> Response:
    """The status for anyone (load balancers); the counts for whoever may see the server's
    status (``status_public``, or a grant on ``/metrics``)."""
    hub = _hub(request)
    status, code = "ok", 200
    if hub.closing:
        status, code = "shutting_down", 503
    elif not hub.healthy:
        status, code = "backend_unavailable", 503
    body: dict[str, Any] = {"status": status}
    if not hub.closing and _may_see_status(request):
        names = hub.topic_names()
        internal = sum(1 for name in names if is_internal_topic(name))
        body |= {
            "open_streams": hub.open_streams,
            # The topics people publish to; the server's own (a generation's, a job's) apart.
            "topics": len(names) - internal,
            "internal_topics": internal,
            "backend": "redis" if hub.backend is not None else "memory",
        }
    return JSONResponse(body, status_code=code)


def _may_see_status(request: Request) -> bool:
    admission = admission_of(request)
    try:
        return admission.may_see_status(admission.grants(facts_of(request)))
    except AuthError:
        return False  # a bad token sees what anyone sees: the status alone


async def metrics(request: Request) -> Response:
    """Prometheus text, for whoever may see the server's status (``status_public``, or a
    grant naming ``/metrics``: anonymous reading alone does not open it)."""
    require_status(request)
    return Response(
        render(services_of(request).metrics),
        media_type="text/plain; version=0.0.4; charset=utf-8",
    )


async def slashed_topic(request: Request) -> Response:
    """``/topics/a/b`` (or ``a%2Fb``): a topic name with ``/``, which names no topic."""
    name = request.path_params["topic"]
    history_of = name.removesuffix("/history")
    if history_of != name and TOPIC_NAME.fullmatch(history_of):
        raise APIError(405, "method_not_allowed", "history is read with GET")
    check_topic_name(name)  # raises InvalidTopic: 400 invalid_topic
    raise APIError(404, "not_found", "no such endpoint")  # unreachable: "/" is never valid


routes = [
    Route("/topics/{topic}", publish, methods=["POST"]),
    Route("/topics/{topic}", subscribe_topic, methods=["GET"]),
    Route("/topics/{topic}/history", history, methods=["GET"]),
    # Last: a path below /topics/ that no route above takes has a "/" in the topic's place.
    Route("/topics/{topic:path}", slashed_topic, methods=["GET", "POST", "HEAD"]),
    Route("/events", subscribe_many, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
