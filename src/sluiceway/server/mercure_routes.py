"""``/.well-known/mercure``: the Mercure protocol over the hub (draft-dunglas-mercure-08, as
revised in dunglas/mercure).

``GET`` subscribes (``match``, ``match_exact``, ``match_urlpattern`` matchers, and the earlier
``matchExact`` / ``matchURLPattern``); it resumes from the ``Last-Event-ID`` header, or the
``last_event_id`` (earlier: ``lastEventID``) query parameter, ``earliest`` included, and then
answers ``Mercure-Last-Event-ID`` (and ``Last-Event-ID``, as earlier revisions did): the last
update before the first one sent; without an id, the stream starts with an ``id:`` line alone
naming that update (see :func:`_starting_at`). ``POST`` publishes a form (``topic``, once or
more: the canonical topic then alternate ones; ``data``, ``private``, ``id``, ``type``,
``retry``) and answers the update's id as text. Access tokens (JWT) come from
``Authorization: Bearer``, the ``access_token`` query parameter or the token cookie (see
:mod:`sluiceway.server.admission`); their grants decide who publishes where and who receives
private updates. Every query and form must be valid UTF-8 (400).

``GET /.well-known/mercure/subscriptions[/{match_type}/{match}[/{subscriber}]]`` is the
subscriptions API ("Active Subscriptions"): JSON documents of the active subscriptions (of
this process, see :mod:`sluiceway.server.mercure_face`), for clients holding a ``subscribe``
grant on the requested path (in its canonical form, the topic of the subscription events), with the
cursor on the ``rel="mercure"`` ``Link`` header.

``GET /.well-known/oauth-protected-resource/.well-known/mercure`` is the hub's protected
resource metadata (RFC 9728), which every refusal's ``WWW-Authenticate`` points to.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from sluiceway.asgi import EventStreamResponse
from sluiceway.asgi.eventstream import header_value
from sluiceway.auth.grants import AUTHORIZATION_DETAIL_TYPE, AuthError
from sluiceway.mercure.publication import (
    SUBSCRIPTIONS_PATH,
    PublishError,
    SubscriptionsPath,
    hub_link,
    parse_publish_form,
    parse_subscriptions_path,
    requested_last_event_id,
    subscription_topic,
    subscriptions_collection,
)
from sluiceway.mercure.selectors import SelectorError, parse_subscribe_query
from sluiceway.server.access import request_grants
from sluiceway.server.errors import APIError, JSONResponse
from sluiceway.server.mercure_face import MercureFace
from sluiceway.server.routes import read_body
from sluiceway.server.services import services_of
from sluiceway.server.settings import Settings
from sluiceway.sse import encode_event

PATH = "/.well-known/mercure"


METADATA_PREFIX = "/.well-known/oauth-protected-resource"


def _face(request: Request) -> MercureFace:
    return services_of(request).mercure


def metadata_url(hub_url: str) -> str:
    """Where RFC 9728 puts the metadata of the resource ``hub_url``.

    >>> metadata_url("https://example.com/.well-known/mercure")
    'https://example.com/.well-known/oauth-protected-resource/.well-known/mercure'
    """
    parts = urlsplit(hub_url)
    return f"{parts.scheme}://{parts.netloc}{METADATA_PREFIX}{parts.path}"


def _refused(request: Request, error: AuthError) -> Response:
    """RFC 6750: the status, ``WWW-Authenticate`` pointing at the hub's metadata, and a JSON
    body saying why."""
    settings: Settings = services_of(request).settings
    challenge = error.header(resource_metadata=metadata_url(settings.mercure_hub_url))
    return JSONResponse(
        error.json(), status_code=error.status, headers={"www-authenticate": challenge}
    )


def _form(raw: bytes) -> list[tuple[str, str]]:
    """An ``application/x-www-form-urlencoded`` body or query as (name, value) pairs; raises
    :class:`APIError` (400) unless every name and value is UTF-8 (the draft), escaped or
    not."""
    try:
        return parse_qsl(
            raw.decode("utf-8"), keep_blank_values=True, encoding="utf-8", errors="strict"
        )
    except UnicodeDecodeError:
        raise APIError(400, "invalid_form", "names and values must be UTF-8") from None


async def subscribe(request: Request) -> Response:
    settings: Settings = services_of(request).settings
    try:
        grants = request_grants(request)
        grants.require_subscriber()
    except AuthError as error:
        return _refused(request, error)
    query = _form(request.scope["query_string"])
    try:
        selectors = parse_subscribe_query(query, hub_url=settings.mercure_hub_url)
    except SelectorError as exc:
        raise APIError(400, "invalid_matcher", str(exc)) from None
    if request.method == "HEAD":
        # Nothing would read the stream: open no subscription (it would never be released).
        return Response(headers={"content-type": "text/event-stream; charset=utf-8"})
    last_event_id = requested_last_event_id(request.headers.get("last-event-id"), query)
    face = _face(request)
    subscription, last = await face.open(last_event_id, grants)
    updates = face.updates(subscription, selectors, grants)
    # Only when a cursor was asked for (the draft), under its current name and the old one.
    headers = {"mercure-last-event-id": last, "last-event-id": last} if last_event_id else {}
    return EventStreamResponse(
        updates if last_event_id else _starting_at(last, updates),
        headers=headers,
        ping_interval=settings.ping_interval,
        ends_at=grants.expires_at,  # no later than the token's exp (the draft)
        on_close=subscription.release,  # even if the response fails before it streams
    )


async def _starting_at(last: str, updates: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """``updates`` after an ``id:`` line alone, naming ``last``: a subscriber that came without
    an id resumes from where its stream started, even if cut before its first update. Not the
    ``sluiceway.position`` event of the hub's own streams: the draft has every event's ``data``
    be a topic's new version, and a publisher may use any event type; a block without data is
    no event (nothing is dispatched), so it is the one way the draft leaves. Browsers'
    ``EventSource`` takes its id; clients that ignore an id without data (the npm
    ``eventsource`` package) resume as the draft says instead, from the ``last-event-id`` of
    the discovery ``Link``, sent as ``last_event_id``."""
    try:
        yield encode_event(None, id=last)
        async for chunk in updates:
            yield chunk
    finally:
        aclose = getattr(updates, "aclose", None)
        if aclose is not None:
            await aclose()  # its finally announces the subscription's end


async def publish(request: Request) -> Response:
    settings: Settings = services_of(request).settings
    try:
        grants = request_grants(request)
    except AuthError as error:
        return _refused(request, error)
    body = await read_body(request, settings.max_body_bytes)
    try:
        fields = _form(body)
        update = parse_publish_form(fields, hub_url=settings.mercure_hub_url)
    except PublishError as exc:
        raise APIError(exc.status, "invalid_update", str(exc)) from None
    try:
        for topic in update.topics:  # every topic, canonical and alternate (the draft)
            grants.require_publish(topic)
    except AuthError as error:
        return _refused(request, error)
    try:
        update_id = await _face(request).publish(update)
    except PublishError as exc:
        raise APIError(exc.status, "duplicate_id", str(exc)) from None
    return PlainTextResponse(update_id)


async def resource_metadata(request: Request) -> Response:
    """RFC 9728 protected resource metadata, as the draft fills it."""
    settings: Settings = services_of(request).settings
    document = {
        "resource": settings.mercure_hub_url,
        "authorization_details_types_supported": [AUTHORIZATION_DETAIL_TYPE],
        "bearer_methods_supported": ["header", "query"],
        "mercure_cookie": settings.token_cookie,
        "mercure_subscriptions": True,
    }
    return JSONResponse(document, headers={"cache-control": "public, max-age=3600"})


def _resource_topic(found: SubscriptionsPath) -> str:
    """The canonical path of a subscriptions-API resource: the topic its grant must match."""
    if found.match_type is None or found.match is None:
        return SUBSCRIPTIONS_PATH
    if found.subscriber is None:
        return f"{SUBSCRIPTIONS_PATH}/{found.match_type.value}/{quote(found.match, safe='')}"
    return subscription_topic(found.match_type, found.match, found.subscriber)


async def subscriptions(request: Request) -> Response:
    """The subscriptions API: the collection, one matcher's collection, or one subscription."""
    settings: Settings = services_of(request).settings
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
        return _refused(request, error)
    if found is None:
        raise APIError(404, "not_found", "no such subscriptions resource")
    face = _face(request)
    last_event_id = await face.last_event_id(grants)
    # Read after the id: the face records a change before it announces it, so the list holds
    # every change announced up to that id, and the changes it misses are announced after it.
    active = face.subscriptions(found.match_type, found.match, found.subscriber)
    document: dict[str, Any]
    if found.subscriber is not None:
        if not active:
            raise APIError(404, "not_found", "no such active subscription")
        document = active[0].document()
    else:
        documents = (entry.document() for entry in active)
        document = subscriptions_collection(_resource_topic(found), documents)
    response = JSONResponse(document, headers={"cache-control": "private, no-cache"})
    # The cursor is a publisher's id: any text, written as UTF-8.
    response.raw_headers.append(
        (b"link", header_value(hub_link(settings.mercure_hub_url, last_event_id)))
    )
    return response


routes = [
    Route(PATH, subscribe, methods=["GET"]),
    Route(PATH, publish, methods=["POST"]),
    Route(SUBSCRIPTIONS_PATH, subscriptions, methods=["GET"]),
    Route(SUBSCRIPTIONS_PATH + "/{rest:path}", subscriptions, methods=["GET"]),
    Route(METADATA_PREFIX + PATH, resource_metadata, methods=["GET"]),
]
