"""Mercure publications, sans-I/O: the publish form, an update on the SSE wire, reconnection
ids, and the documents of "Active Subscriptions" (draft-dunglas-mercure-08).

>>> update = parse_publish_form([("topic", "https://example.com/books/1"), ("data", "{}")],
...                             hub_url="https://hub.example/.well-known/mercure")
>>> update.topic, update.private
('https://example.com/books/1', False)
>>> encode_update(update, "urn:uuid:1")
b'id: urn:uuid:1\\ndata: {}\\n\\n'
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

import orjson

from sluiceway.control import RESERVED_EVENT_PREFIX
from sluiceway.ids import Position
from sluiceway.mercure.selectors import (
    RESERVED_PATH,
    MatchType,
    SelectorError,
    check_topic,
    is_reserved_topic,
)
from sluiceway.sse import encode_event

__all__ = [
    "EARLIEST",
    "JSONLD_CONTEXT",
    "SUBSCRIPTIONS_PATH",
    "MercureUpdate",
    "PublishError",
    "ResumeFrom",
    "SubscriptionsPath",
    "encode_update",
    "hub_event_id",
    "new_subscriber_id",
    "parse_last_event_id",
    "parse_publish_form",
    "parse_subscriptions_path",
    "requested_last_event_id",
    "response_last_event_id",
    "subscription_document",
    "subscription_topic",
    "subscription_update",
    "subscriptions_collection",
]

#: The reserved ``Last-Event-ID`` value asking for every update the hub still has.
EARLIEST = "earliest"
#: The fixed JSON-LD context of the hub's documents.
JSONLD_CONTEXT = "https://mercure.rocks/"
#: The collection of active subscriptions (and the prefix of their topics).
SUBSCRIPTIONS_PATH = RESERVED_PATH + "/subscriptions"


# -- publishing --------------------------------------------------------------------------------


class PublishError(ValueError):
    """A publish request the hub must refuse: ``status`` is 400 (malformed), 403 (a topic in
    the hub's reserved namespace) or 413 (a field over the size limit); ``field`` names the
    form field at fault.

    >>> str(PublishError("retry", "must be ASCII digits"))
    'retry: must be ASCII digits'
    """

    def __init__(self, field: str | None, message: str, status: int = 400) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message
        self.status = status


@dataclass(frozen=True, slots=True)
class MercureUpdate:
    """One update, as published. ``id`` is the publisher's id (None: the hub makes one)."""

    topic: str
    data: str = ""
    private: bool = False
    id: str | None = None
    type: str | None = None
    retry: int | None = None


_SINGLE_FIELDS = ("data", "id", "type", "retry")


def parse_publish_form(
    fields: Iterable[tuple[str, str]],
    *,
    hub_url: str,
    max_field_length: int | None = None,
) -> MercureUpdate:
    """Validate a publish request's form fields (already decoded as UTF-8 ``(name, value)``
    pairs, in order) and return the update. Raises :class:`PublishError`.

    The rules of the draft: exactly one ``topic`` (valid UTF-8, no control characters, not in
    the hub's ``/.well-known/mercure`` namespace: 403); ``private`` marks the update private
    whenever it is present, whatever its value (even ``private=false``); ``id`` must not start
    with ``#`` nor hold CR, LF or NUL; ``type`` must not hold CR or LF; ``retry`` is ASCII
    digits only. Fields the draft does not define are ignored.

    Sluiceway's own rules on top (each a 400): a repeated ``data``, ``id``, ``type`` or
    ``retry`` is ambiguous and refused; an empty ``id`` (a browser cannot resume from it) and
    ``id=earliest`` (the reserved resume value) are refused; ``type`` may not start with
    ``sluiceway.`` (the hub's control events); an empty ``type`` means none.
    ``max_field_length`` (characters) answers 413.

    >>> hub = "https://hub.example/.well-known/mercure"
    >>> parse_publish_form([("topic", "a"), ("private", "")], hub_url=hub).private
    True
    >>> parse_publish_form([("topic", "a"), ("topic", "b")], hub_url=hub)
    Traceback (most recent call last):
      ...
    sluiceway.mercure.publication.PublishError: topic: must appear exactly once (found 2)
    """
    topics: list[str] = []
    single: dict[str, str] = {}
    private = False
    for name, value in fields:
        if max_field_length is not None and len(value) > max_field_length:
            raise PublishError(name[:40], f"longer than {max_field_length} characters", 413)
        if name == "topic":
            topics.append(value)
        elif name == "private":
            private = True  # presence alone: the value is never interpreted
        elif name in _SINGLE_FIELDS:
            if name in single:
                raise PublishError(name, "must appear at most once")
            single[name] = value
    if len(topics) != 1:
        raise PublishError("topic", f"must appear exactly once (found {len(topics)})")
    topic = topics[0]
    try:
        check_topic(topic)
    except ValueError as exc:
        raise PublishError("topic", str(exc).removeprefix("topic ")) from None
    try:
        reserved = is_reserved_topic(topic, hub_url)
    except SelectorError as exc:  # the hub URL itself is wrong: a configuration error
        raise ValueError(str(exc)) from None
    if reserved:
        raise PublishError(
            "topic", f"{RESERVED_PATH} and below are reserved for the hub's own events", 403
        )
    data = single.get("data", "")
    _check_utf8("data", data)
    return MercureUpdate(
        topic=topic,
        data=data,
        private=private,
        id=_check_id(single["id"]) if "id" in single else None,
        type=_check_type(single["type"]) if "type" in single else None,
        retry=_check_retry(single["retry"]) if "retry" in single else None,
    )


def _check_utf8(field: str, value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: the form was not valid UTF-8
        raise PublishError(field, "is not valid UTF-8") from None


def _check_id(value: str) -> str:
    _check_utf8("id", value)
    if not value:
        raise PublishError("id", "must not be empty")
    if value.startswith("#"):
        # Ids starting with "#" are the hub's own (see hub_event_id): no collision possible.
        raise PublishError("id", "must not start with '#' (reserved for ids the hub makes)")
    if value == EARLIEST:
        raise PublishError("id", "'earliest' is the reserved value for resuming from the start")
    if any(c in value for c in "\r\n\0"):
        raise PublishError("id", "must not contain CR, LF or NUL")
    return value


def _check_type(value: str) -> str | None:
    _check_utf8("type", value)
    if "\r" in value or "\n" in value:
        raise PublishError("type", "must not contain CR or LF")
    if value.startswith(RESERVED_EVENT_PREFIX):
        raise PublishError("type", f"types starting with {RESERVED_EVENT_PREFIX!r} are reserved")
    return value or None


def _check_retry(value: str) -> int:
    # Not int(): it also takes "+5", " 5", "5_0" and non-ASCII digits.
    if not re.fullmatch(r"[0-9]+", value):
        raise PublishError("retry", "must be one or more ASCII digits (milliseconds)")
    return int(value)


def encode_update(update: MercureUpdate, event_id: str) -> bytes:
    """The update as one SSE event: ``id``, ``event`` (the type), ``retry``, then ``data``.

    There is always a ``data`` line, even for empty data, so that browsers dispatch the event
    (an event without one only moves the last event id).

    >>> encode_update(MercureUpdate("t", "a\\nb", type="book", retry=500), "#e1-4")
    b'id: #e1-4\\nevent: book\\nretry: 500\\ndata: a\\ndata: b\\n\\n'
    >>> encode_update(MercureUpdate("t"), "x")
    b'id: x\\ndata: \\n\\n'
    """
    return encode_event(update.data, event=update.type, id=event_id, retry=update.retry)


# -- reconnection ------------------------------------------------------------------------------


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value


def requested_last_event_id(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """The id a subscriber resumes from: the ``Last-Event-ID`` header, which wins over the
    ``lastEventID`` query parameter (the draft). An empty value counts as absent.

    >>> requested_last_event_id({"last-event-id": "a"}, {"lastEventID": "b"})
    'a'
    >>> requested_last_event_id({}, {"lastEventID": "earliest"})
    'earliest'
    """
    return _header(headers, "Last-Event-ID") or query.get("lastEventID") or None


@dataclass(frozen=True, slots=True)
class ResumeFrom:
    """Where a subscriber asked to resume: the start (``earliest``), a position the hub made
    (``#<epoch>-<offset>``), or a publisher's id, to look up."""

    earliest: bool = False
    position: Position | None = None
    external_id: str | None = None


def hub_event_id(position: Position) -> str:
    """The Mercure id of an update whose publisher gave none: ``#`` and the hub position.

    The draft lets a hub make ids that are fragments (``#...``) and forbids publishers to
    start theirs with ``#``: the two kinds can never collide.

    >>> hub_event_id(Position("3f9a1c07", 42))
    '#3f9a1c07-42'
    """
    return f"#{position}"


def parse_last_event_id(value: str) -> ResumeFrom:
    """Classify a requested last event id.

    >>> parse_last_event_id("earliest")
    ResumeFrom(earliest=True, position=None, external_id=None)
    >>> parse_last_event_id("#3f9a1c07-42").position
    Position(epoch='3f9a1c07', offset=42)
    >>> parse_last_event_id("urn:uuid:1").external_id
    'urn:uuid:1'

    A ``#`` id that is not one of ours raises :class:`~sluiceway.ids.InvalidEventId`: no
    publisher id can start with ``#``, so it names nothing (answer ``earliest``).
    """
    if value == EARLIEST:
        return ResumeFrom(earliest=True)
    if value.startswith("#"):
        return ResumeFrom(position=Position.parse(value[1:]))
    return ResumeFrom(external_id=value)


def response_last_event_id(
    candidates: Iterable[tuple[str, str, bool]],
    may_receive: Callable[[str, bool], bool],
    *,
    scan_limit: int = 1000,
) -> str:
    """The ``Last-Event-ID`` response header of a resumed subscription.

    ``candidates``: ``(id, topic, private)`` of the events that precede the first event sent,
    newest first (so the requested event itself first, when the hub still has it). The
    answer is the id of the first one this subscriber may receive (``may_receive(topic,
    private)``, see :meth:`sluiceway.auth.grants.Grants.may_receive`), looking at no more than
    ``scan_limit`` of them; otherwise ``earliest``. It never names an event the subscriber may
    not receive.

    >>> response_last_event_id([("b", "t", True), ("a", "t", False)], lambda t, p: not p)
    'a'
    >>> response_last_event_id([], lambda t, p: True)
    'earliest'
    """
    for scanned, (event_id, topic, private) in enumerate(candidates):
        if scanned >= scan_limit:
            break
        if may_receive(topic, private):
            return event_id
    return EARLIEST


# -- active subscriptions ----------------------------------------------------------------------


def _expand(value: str) -> str:
    # RFC 6570 simple expansion: percent-encode everything but unreserved characters, once
    # (a "%" already in the value is itself encoded).
    return quote(value, safe="")


def subscription_topic(match_type: MatchType | str, match: str, subscriber: str) -> str:
    """The topic of a subscription's events and its API resource:
    ``/.well-known/mercure/subscriptions/{matchType}/{match}/{subscriber}``.

    >>> subscription_topic("URLPattern", "https://example.com/:selector", "urn:uuid:bb3d")
    '/.well-known/mercure/subscriptions/URLPattern/https%3A%2F%2Fexample.com%2F%3Aselector/urn%3Auuid%3Abb3d'
    """
    kind = MatchType(match_type)
    return f"{SUBSCRIPTIONS_PATH}/{_expand(kind.value)}/{_expand(match)}/{_expand(subscriber)}"


def subscription_document(
    match_type: MatchType | str,
    match: str,
    subscriber: str,
    *,
    active: bool,
    payload: Mapping[str, Any] | None = None,
    context: bool = True,
) -> dict[str, Any]:
    """The JSON-LD document describing one subscription (its events and its API resource).

    ``context=False`` leaves out ``@context``, for documents nested in a collection.

    >>> subscription_document("Exact", "a", "s", active=True)["id"]
    '/.well-known/mercure/subscriptions/Exact/a/s'
    """
    kind = MatchType(match_type)
    document: dict[str, Any] = {"@context": JSONLD_CONTEXT} if context else {}
    document |= {
        "id": subscription_topic(kind, match, subscriber),
        "type": "Subscription",
        "matchType": kind.value,
        "match": match,
        "subscriber": subscriber,
        "active": active,
    }
    if payload is not None:
        document["payload"] = payload
    return document


def subscription_update(
    match_type: MatchType | str,
    match: str,
    subscriber: str,
    *,
    active: bool,
    payload: Mapping[str, Any] | None = None,
) -> MercureUpdate:
    """The private update the hub publishes when a subscription starts or ends.

    >>> update = subscription_update("Exact", "a", "s", active=False)
    >>> update.topic, update.private
    ('/.well-known/mercure/subscriptions/Exact/a/s', True)
    """
    document = subscription_document(match_type, match, subscriber, active=active, payload=payload)
    return MercureUpdate(topic=document["id"], data=orjson.dumps(document).decode(), private=True)


def subscriptions_collection(
    request_path: str, subscriptions: Iterable[Mapping[str, Any]], last_event_id: str
) -> dict[str, Any]:
    """A collection document of the subscriptions API (``type: Subscriptions``).

    ``subscriptions``: documents from :func:`subscription_document` with ``context=False``.
    ``last_event_id``: the id of the last event the hub dispatched (``earliest`` if none).
    """
    return {
        "@context": JSONLD_CONTEXT,
        "id": request_path,
        "type": "Subscriptions",
        "lastEventID": last_event_id,
        "subscriptions": list(subscriptions),
    }


@dataclass(frozen=True, slots=True)
class SubscriptionsPath:
    """What a subscriptions-API URL names: all, one matcher's, or one subscription."""

    match_type: MatchType | None = None
    match: str | None = None
    subscriber: str | None = None


def parse_subscriptions_path(raw_path: str) -> SubscriptionsPath:
    """Decode a subscriptions-API path. Pass the *raw* (still percent-encoded) path, e.g.
    ASGI's ``scope["raw_path"]``: a decoded path has lost the ``%2F`` inside a matcher.

    Raises LookupError (answer 404) for any other path under the prefix.

    >>> found = parse_subscriptions_path(
    ...     "/.well-known/mercure/subscriptions/Exact/https%3A%2F%2Fexample.com%2Fa")
    >>> found.match_type.value, found.match, found.subscriber
    ('Exact', 'https://example.com/a', None)
    """
    if raw_path.rstrip("/") == SUBSCRIPTIONS_PATH:
        return SubscriptionsPath()
    if not raw_path.startswith(SUBSCRIPTIONS_PATH + "/"):
        raise LookupError("not a subscriptions API path")
    segments = raw_path[len(SUBSCRIPTIONS_PATH) + 1 :].split("/")
    if len(segments) not in (2, 3) or not all(segments):
        raise LookupError("expected /{matchType}/{match}[/{subscriber}]")
    try:
        kind = MatchType(unquote(segments[0], errors="strict"))
        values = [unquote(segment, errors="strict") for segment in segments[1:]]
    except (ValueError, UnicodeDecodeError):
        raise LookupError("no such subscriptions resource") from None
    return SubscriptionsPath(kind, values[0], values[1] if len(values) == 2 else None)


def new_subscriber_id(subject: str | None = None) -> str:
    """The ``{subscriber}`` of a subscription: the verified token's ``sub``, or a random URN
    for an anonymous subscriber. Never anything the client could choose otherwise.

    >>> new_subscriber_id("https://example.com/users/1")
    'https://example.com/users/1'
    >>> new_subscriber_id().startswith("urn:uuid:")
    True
    """
    return subject if subject else f"urn:uuid:{uuid.uuid4()}"
