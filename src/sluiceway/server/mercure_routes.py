"""``/.well-known/mercure``: the Mercure protocol (draft-dunglas-mercure-08) over the hub.

``GET`` subscribes (``match`` / ``matchURLPattern`` selectors; resume with ``Last-Event-ID`` or
``lastEventID``, ``earliest`` included; the ``Last-Event-ID`` response header names the last
update before the first one sent). ``POST`` publishes a form (``topic``, ``data``, ``private``,
``id``, ``type``, ``retry``) and answers the update's id as text. Access tokens (JWT) come from
``Authorization: Bearer``, the ``access_token`` query parameter or the ``mercureAccessToken``
cookie; their grants decide who publishes where and who receives private updates.

``GET /.well-known/mercure/subscriptions[/{matchType}/{match}[/{subscriber}]]`` is the
subscriptions API ("Active Subscriptions"): JSON-LD documents of the active subscriptions (of
this process, see :mod:`sluiceway.mercure.face`), for clients holding a ``subscribe`` grant on
the requested path (in its canonical form, the topic of the subscription events).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, quote

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from sluiceway.asgi import EventStreamResponse
from sluiceway.auth.grants import AuthError
from sluiceway.hub import BackendUnavailable, HubClosed
from sluiceway.mercure.face import MercureFace
from sluiceway.mercure.publication import (
    SUBSCRIPTIONS_PATH,
    PublishError,
    SubscriptionsPath,
    parse_publish_form,
    parse_subscriptions_path,
    requested_last_event_id,
    subscription_topic,
    subscriptions_collection,
)
from sluiceway.mercure.selectors import SelectorError, parse_subscribe_query
from sluiceway.server.access import request_grants
from sluiceway.server.errors import APIError, JSONResponse
from sluiceway.server.routes import read_body
from sluiceway.server.settings import Settings

PATH = "/.well-known/mercure"


def _face(request: Request) -> MercureFace:
    return request.app.state.mercure  # type: ignore[no-any-return]


def _refused(error: AuthError) -> Response:
    """RFC 6750: the status, ``WWW-Authenticate``, and a JSON body saying why."""
    return JSONResponse(
        error.json(), status_code=error.status, headers={"www-authenticate": error.header()}
    )


async def subscribe(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    try:
        grants = request_grants(request)
        grants.require_subscriber()
    except AuthError as error:
        return _refused(error)
    try:
        selectors = parse_subscribe_query(
            request.query_params.multi_items(), hub_url=settings.mercure_hub_url
        )
    except SelectorError as exc:
        raise APIError(400, "invalid_matcher", str(exc)) from None
    if request.method == "HEAD":
        # Nothing would read the stream: open no subscription (it would never be released).
        return Response(headers={"content-type": "text/event-stream; charset=utf-8"})
    last_event_id = requested_last_event_id(request.headers, request.query_params)
    face = _face(request)
    try:
        subscription, last = await face.open(last_event_id, grants)
    except HubClosed as exc:
        raise APIError(503, "shutting_down", str(exc)) from None
    except BackendUnavailable as exc:
        raise APIError(503, "backend_unavailable", str(exc)) from None
    return EventStreamResponse(  # type: ignore[return-value]
        face.updates(subscription, selectors, grants),
        headers={"last-event-id": last},
        ping_interval=settings.ping_interval,
    )


async def publish(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    try:
        grants = request_grants(request)
    except AuthError as error:
        return _refused(error)
    body = await read_body(request, settings.max_body_bytes)
    try:
        fields = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=False)
        update = parse_publish_form(fields, hub_url=settings.mercure_hub_url)
    except UnicodeDecodeError:
        raise APIError(400, "invalid_form", "the form is not UTF-8") from None
    except PublishError as exc:
        raise APIError(exc.status, "invalid_update", str(exc)) from None
    try:
        grants.require_publish(update.topic)
    except AuthError as error:
        return _refused(error)
    try:
        update_id = await _face(request).publish(update)
    except PublishError as exc:
        raise APIError(exc.status, "duplicate_id", str(exc)) from None
    except HubClosed as exc:
        raise APIError(503, "shutting_down", str(exc)) from None
    except BackendUnavailable as exc:
        raise APIError(503, "backend_unavailable", str(exc)) from None
    return PlainTextResponse(update_id)


def _resource_topic(found: SubscriptionsPath) -> str:
    """The canonical path of a subscriptions-API resource: the topic its grant must match."""
    if found.match_type is None or found.match is None:
        return SUBSCRIPTIONS_PATH
    if found.subscriber is None:
        return f"{SUBSCRIPTIONS_PATH}/{found.match_type.value}/{quote(found.match, safe='')}"
    return subscription_topic(found.match_type, found.match, found.subscriber)


class JSONLDResponse(JSONResponse):
    media_type = "application/ld+json"


async def subscriptions(request: Request) -> Response:
    """The subscriptions API: the collection, one matcher's collection, or one subscription."""
    settings: Settings = request.app.state.settings
    raw_path: bytes = request.scope.get("raw_path") or request.url.path.encode()
    try:
        found: SubscriptionsPath | None = parse_subscriptions_path(raw_path.decode("ascii"))
    except (LookupError, UnicodeDecodeError):
        found = None
    try:
        grants = request_grants(request)
        # An unknown path is checked as it came: a client without a grant learns nothing.
        grants.require_subscribe_to(_resource_topic(found) if found else raw_path.decode("latin-1"))
    except AuthError as error:
        return _refused(error)
    if found is None:
        raise APIError(404, "not_found", "no such subscriptions resource")
    face = _face(request)
    try:
        last_event_id = await face.last_event_id(grants)
    except BackendUnavailable as exc:
        raise APIError(503, "backend_unavailable", str(exc)) from None
    # Read after the id: the face records a change before it announces it, so the list holds
    # every change announced up to that id, and the changes it misses are announced after it.
    active = face.subscriptions(found.match_type, found.match, found.subscriber)
    document: dict[str, Any]
    if found.subscriber is not None:
        if not active:
            raise APIError(404, "not_found", "no such active subscription")
        document = active[0].document() | {"lastEventID": last_event_id}
    else:
        documents = (entry.document(context=False) for entry in active)
        document = subscriptions_collection(_resource_topic(found), documents, last_event_id)
    headers = {
        "cache-control": "private, no-cache",
        "link": f'<{settings.mercure_hub_url}>; rel="mercure"',
    }
    return JSONLDResponse(document, headers=headers)


routes = [
    Route(PATH, subscribe, methods=["GET"]),
    Route(PATH, publish, methods=["POST"]),
    Route(SUBSCRIPTIONS_PATH, subscriptions, methods=["GET"]),
    Route(SUBSCRIPTIONS_PATH + "/{rest:path}", subscriptions, methods=["GET"]),
]
