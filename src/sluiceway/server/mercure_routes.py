"""``/.well-known/mercure``: the Mercure protocol (draft-dunglas-mercure-08) over the hub.

``GET`` subscribes (``match`` / ``matchURLPattern`` selectors; resume with ``Last-Event-ID`` or
``lastEventID``, ``earliest`` included; the ``Last-Event-ID`` response header names the last
update before the first one sent). ``POST`` publishes a form (``topic``, ``data``, ``private``,
``id``, ``type``, ``retry``) and answers the update's id as text. Access tokens (JWT) come from
``Authorization: Bearer``, the ``access_token`` query parameter or the ``mercureAccessToken``
cookie; their grants decide who publishes where and who receives private updates.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from sluiceway.asgi import EventStreamResponse
from sluiceway.auth.grants import AuthError, Grants, authenticate, token_from
from sluiceway.hub import BackendUnavailable, HubClosed
from sluiceway.mercure.face import MercureFace
from sluiceway.mercure.publication import PublishError, parse_publish_form, requested_last_event_id
from sluiceway.mercure.selectors import SelectorError, parse_subscribe_query
from sluiceway.server.errors import APIError, JSONResponse
from sluiceway.server.routes import read_body
from sluiceway.server.settings import Settings

PATH = "/.well-known/mercure"


def _face(request: Request) -> MercureFace:
    return request.app.state.mercure  # type: ignore[no-any-return]


def _grants(request: Request, settings: Settings) -> Grants:
    token = token_from(request.headers, request.cookies, request.query_params)
    return authenticate(
        token,
        request.app.state.token_verifier,
        hub_url=settings.mercure_hub_url,
        anonymous_subscribe=settings.mercure_anonymous_subscribe,
        anonymous_publish=settings.mercure_anonymous_publish_allowed,
    )


def _refused(error: AuthError) -> Response:
    """RFC 6750: the status, ``WWW-Authenticate``, and a JSON body saying why."""
    return JSONResponse(
        error.json(), status_code=error.status, headers={"www-authenticate": error.header()}
    )


async def subscribe(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    try:
        grants = _grants(request, settings)
        grants.require_subscriber()
    except AuthError as error:
        return _refused(error)
    try:
        selectors = parse_subscribe_query(
            request.query_params.multi_items(), hub_url=settings.mercure_hub_url
        )
    except SelectorError as exc:
        raise APIError(400, "invalid_matcher", str(exc)) from None
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
        grants = _grants(request, settings)
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


routes = [Route(PATH, subscribe, methods=["GET"]), Route(PATH, publish, methods=["POST"])]
