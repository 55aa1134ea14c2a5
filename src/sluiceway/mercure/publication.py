"""Mercure publications, sans-I/O: the publish form, an update on the SSE wire, reconnection
ids, and the documents of "Active Subscriptions" (draft-dunglas-mercure-08 as revised in
dunglas/mercure).

>>> update = parse_publish_form([("topic", "https://example.com/books/1"), ("data", "{}")],
...                             hub_url="https://hub.example/.well-known/mercure")
>>> update.topics, update.private
(('https://example.com/books/1',), False)
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
    WILDCARD,
    MatchType,
    SelectorError,
    check_topic,
    is_reserved_topic,
)
from sluiceway.sse import encode_event

__all__ = [
    "EARLIEST",
    "HUB_EVENT_TYPE",
    "MAX_TOPICS",
    "SUBSCRIPTIONS_PATH",
    "MercureUpdate",
    "PublishError",
    "ResumeFrom",
    "SubscriptionsPath",
    "encode_update",
    "hub_event_id",
    "hub_link",
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
#: The SSE event type of the hub's own updates (subscription events); publishers may not use it.
HUB_EVENT_TYPE = "mercure"
#: Most ``topic`` fields in one update (413 beyond).
MAX_TOPICS = 100
#: The collection of active subscriptions (and the prefix of their topics).
SUBSCRIPTIONS_PATH = RESERVED_PATH + "/subscriptions"


# -- publishing --------------------------------------------------------------------------------


class PublishError(ValueError):
    """A publish request the hub must refuse: ``status`` is 400 (malformed, a topic in the
    hub's reserved namespace) or 413 (a field over the size limit, too many topics); ``field``
    names the form field at fault.

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
    """One update, as published. ``topics``: the canonical topic, then the alternate ones
    (subscribers matching any of them receive it). ``id`` is the publisher's id (None: the
    hub makes one)."""

    topics: tuple[str, ...]
    data: str = ""
    private: bool = False
    id: str | None = None
    type: str | None = None
    retry: int | None = None

    @property
    def topic(self) -> str:
        """The canonical topic."""
        return self.topics[0]

    def to_json(self) -> dict[str, Any]:
        return {
            "topics": list(self.topics),
            "data": self.data,
            "private": self.private,
            "id": self.id,
            "type": self.type,
            "retry": self.retry,
        }

    @classmethod
    def from_json(cls, fields: Mapping[str, Any]) -> MercureUpdate:
        """An update as :meth:`to_json` stored it (or, with one ``topic``, as earlier
        versions did)."""
        topics = fields.get("topics")
        return cls(
            topics=tuple(topics) if topics is not None else (fields["topic"],),
            data=fields.get("data", ""),
            private=bool(fields.get("private")),
            id=fields.get("id"),
            type=fields.get("type"),
            retry=fields.get("retry"),
        )


_SINGLE_FIELDS = ("data", "id", "type", "retry")


def parse_publish_form(
    fields: Iterable[tuple[str, str]],
    *,
    hub_url: str,
    max_field_length: int | None = None,
    max_topics: int = MAX_TOPICS,
) -> MercureUpdate:
    """Validate a publish request's form fields (already decoded as UTF-8 ``(name, value)``
    pairs, in order) and return the update. Raises :class:`PublishError`.

    The rules of the draft: one ``topic`` or more (the first is the canonical topic, the
    others alternate topics), each valid UTF-8 without control or format characters, not
    exactly ``*``, and not in the hub's ``/.well-known/mercure`` namespace; ``private`` marks
    the update private whenever it is present, whatever its value (even ``private=false``);
    ``id`` must not start with ``#``, be ``earliest``, or hold control or format characters;
    ``type`` must not hold them either, nor be ``mercure`` (the hub's own); ``retry`` is ASCII
    digits only. Each violation is a 400. Fields the draft does not define are ignored.

    Sluiceway's own rules on top (each a 400): a repeated ``data``, ``id``, ``type`` or
    ``retry`` is ambiguous and refused; an empty ``id`` (a browser cannot resume from it) is
    refused; ``type`` may not start with ``sluiceway.`` (the hub's control events); an empty
    ``type`` means none. ``max_field_length`` (characters) and ``max_topics`` answer 413.

    >>> hub = "https://hub.example/.well-known/mercure"
    >>> parse_publish_form([("topic", "a"), ("private", "")], hub_url=hub).private
    True
    >>> parse_publish_form([("topic", "a"), ("topic", "b")], hub_url=hub).topics
    ('a', 'b')
    >>> parse_publish_form([("topic", "*")], hub_url=hub)
    Traceback (most recent call last):
      ...
    sluiceway.mercure.publication.PublishError: topic: '*' is the wildcard, not a topic
    """
    topics: list[str] = []
    single: dict[str, str] = {}
    private = False
    for name, value in fields:
        if max_field_length is not None and len(value) > max_field_length:
            raise PublishError(name[:40], f"longer than {max_field_length} characters", 413)
        if name == "topic":
            topics.append(value)
            if len(topics) > max_topics:
                raise PublishError("topic", f"more than {max_topics} topics", 413)
        elif name == "private":
            private = True  # presence alone: the value is never interpreted
        elif name in _SINGLE_FIELDS:
            if name in single:
                raise PublishError(name, "must appear at most once")
            single[name] = value
    if not topics:
        raise PublishError("topic", "is required")
    for topic in topics:
        _check_topic(topic, hub_url)
    data = single.get("data", "")
    _check_utf8("data", data)
    return MercureUpdate(
        topics=tuple(dict.fromkeys(topics)),  # a topic given twice is one topic
        data=data,
        private=private,
        id=_check_id(single["id"]) if "id" in single else None,
        type=_check_type(single["type"]) if "type" in single else None,
        retry=_check_retry(single["retry"]) if "retry" in single else None,
    )


def _check_topic(topic: str, hub_url: str) -> None:
    try:
        check_topic(topic)
    except ValueError as exc:
        raise PublishError("topic", str(exc).removeprefix("topic ")) from None
    if topic == WILDCARD:
        raise PublishError("topic", "'*' is the wildcard, not a topic")
    try:
        reserved = is_reserved_topic(topic, hub_url)
    except SelectorError as exc:  # the hub URL itself is wrong: a configuration error
        raise ValueError(str(exc)) from None
    if reserved:
        raise PublishError("topic", f"{RESERVED_PATH} and below are reserved for the hub's events")


def _check_utf8(field: str, value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: the form was not valid UTF-8
        raise PublishError(field, "is not valid UTF-8") from None


def _check_text(field: str, value: str) -> None:
    try:
        check_topic(value, field)
    except ValueError as exc:
        raise PublishError(field, str(exc).removeprefix(f"{field} ")) from None


def _check_id(value: str) -> str:
    if not value:
        raise PublishError("id", "must not be empty")
    if value.startswith("#"):
        # Ids starting with "#" are the hub's own (see hub_event_id): no collision possible.
        raise PublishError("id", "must not start with '#' (reserved for ids the hub makes)")
    if value == EARLIEST:
        raise PublishError("id", "'earliest' is the reserved value for resuming from the start")
    _check_text("id", value)  # it travels in Last-Event-ID headers too
    return value


def _check_type(value: str) -> str | None:
    _check_text("type", value)
    if value == HUB_EVENT_TYPE:
        raise PublishError("type", f"{HUB_EVENT_TYPE!r} is reserved for the hub's own events")
    if value.startswith(RESERVED_EVENT_PREFIX):
        raise PublishError("type", f"types starting with {RESERVED_EVENT_PREFIX!r} are reserved")
    return value or None


#: The longest ``retry`` (ms) accepted: what a browser's timer can wait (about 24 days).
MAX_RETRY_MS = 2**31 - 1


def _check_retry(value: str) -> int:
    # Not int(): it also takes "+5", " 5", "5_0" and non-ASCII digits.
    if not re.fullmatch(r"[0-9]+", value):
        raise PublishError("retry", "must be one or more ASCII digits (milliseconds)")
    if len(value) > 10 or int(value) > MAX_RETRY_MS:
        raise PublishError("retry", f"must be at most {MAX_RETRY_MS} (milliseconds)")
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


def requested_last_event_id(header: str | None, query: Iterable[tuple[str, str]]) -> str | None:
    """The id a subscriber resumes from: the ``Last-Event-ID`` header (``header``, as the
    client sent it), which wins over the ``last_event_id`` query parameter (and
    ``lastEventID``, as earlier revisions named it). An empty value counts as absent.

    Browsers send the header's value as UTF-8; ASGI servers hand it over decoded as
    Latin-1, so ``header`` is read back as UTF-8 where it is that.

    >>> requested_last_event_id("a", [("last_event_id", "b")])
    'a'
    >>> requested_last_event_id(None, [("lastEventID", "x"), ("last_event_id", "earliest")])
    'earliest'
    >>> requested_last_event_id("urn:\xe2\x98\x83", [])
    'urn:☃'
    """
    if header:
        try:
            return header.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            return header
    values = dict(reversed(list(query)))  # the first value of each name
    return values.get("last_event_id") or values.get("lastEventID") or None


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
    candidates: Iterable[tuple[str, tuple[str, ...], bool]],
    may_receive: Callable[[tuple[str, ...], bool], bool],
    *,
    scan_limit: int = 1000,
) -> str:
    """The ``Mercure-Last-Event-ID`` response field of a resumed subscription.

    ``candidates``: ``(id, topics, private)`` of the events that precede the first event sent,
    newest first (so the requested event itself first, when the hub still has it). The
    answer is the id of the first one this subscriber may receive (``may_receive(topics,
    private)``, see :meth:`sluiceway.auth.grants.Grants.may_receive_any`), looking at no more
    than ``scan_limit`` of them; otherwise ``earliest``. It never names an event the
    subscriber may not receive (the draft allows that; we tell nothing of private updates).

    >>> response_last_event_id([("b", ("t",), True), ("a", ("t",), False)], lambda t, p: not p)
    'a'
    >>> response_last_event_id([], lambda t, p: True)
    'earliest'
    """
    for scanned, (event_id, topics, private) in enumerate(candidates):
        if scanned >= scan_limit:
            break
        if may_receive(topics, private):
            return event_id
    return EARLIEST


# -- active subscriptions ----------------------------------------------------------------------


def _expand(value: str) -> str:
    # RFC 6570 simple expansion: percent-encode everything but unreserved characters, once
    # (a "%" already in the value is itself encoded).
    return quote(value, safe="")


def _match_type(match_type: MatchType | str) -> MatchType:
    kind = match_type if isinstance(match_type, MatchType) else MatchType.parse(match_type)
    if kind is None:
        raise ValueError(f"unknown matcher type {match_type!r}")
    return kind


def subscription_topic(match_type: MatchType | str, match: str, subscriber: str) -> str:
    """The topic of a subscription's events and its API resource:
    ``/.well-known/mercure/subscriptions/{match_type}/{match}/{subscriber}``, the matcher
    type in its canonical name.

    >>> subscription_topic("urlpattern", "https://example.com/:selector", "urn:uuid:bb3d")
    '/.well-known/mercure/subscriptions/urlpattern/https%3A%2F%2Fexample.com%2F%3Aselector/urn%3Auuid%3Abb3d'
    """
    kind = _match_type(match_type)
    return f"{SUBSCRIPTIONS_PATH}/{_expand(kind.value)}/{_expand(match)}/{_expand(subscriber)}"


def subscription_document(
    match_type: MatchType | str,
    match: str,
    subscriber: str,
    *,
    active: bool,
    payload: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON document describing one subscription (its events and its API resource).

    >>> subscription_document("exact", "a", "s", active=True)  # doctest: +NORMALIZE_WHITESPACE
    {'id': '/.well-known/mercure/subscriptions/exact/a/s', 'type': 'subscription',
     'match_type': 'exact', 'match': 'a', 'subscriber': 's', 'active': True}
    """
    kind = _match_type(match_type)
    document: dict[str, Any] = {
        "id": subscription_topic(kind, match, subscriber),
        "type": "subscription",
        "match_type": kind.value,
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
    """The private update the hub publishes when a subscription starts or ends, of the
    hub's own event type (``mercure``).

    >>> update = subscription_update("exact", "a", "s", active=False)
    >>> update.topic, update.private, update.type
    ('/.well-known/mercure/subscriptions/exact/a/s', True, 'mercure')
    """
    document = subscription_document(match_type, match, subscriber, active=active, payload=payload)
    return MercureUpdate(
        topics=(document["id"],),
        data=orjson.dumps(document).decode(),
        private=True,
        type=HUB_EVENT_TYPE,
    )


def subscriptions_collection(
    request_path: str, subscriptions: Iterable[Mapping[str, Any]]
) -> dict[str, Any]:
    """A collection document of the subscriptions API (``type: subscriptions``).

    ``subscriptions``: documents from :func:`subscription_document`. (Its cursor, the id of
    the last event the hub dispatched, travels in the ``Link`` header: see
    :func:`hub_link`.)
    """
    return {"id": request_path, "type": "subscriptions", "subscriptions": list(subscriptions)}


def hub_link(hub_url: str, last_event_id: str) -> str:
    """The ``rel="mercure"`` ``Link`` header of the subscriptions API, carrying its cursor
    (with its ``type`` and ``content-type``: the subscription events' own).

    >>> print(hub_link("https://hub.example/.well-known/mercure", 'a"b'))  # doctest: +ELLIPSIS
    <https://hub.example/.well-known/mercure>; rel="mercure"; last-event-id="a\\"b"; ...
    """
    quoted = last_event_id.replace("\\", "\\\\").replace('"', '\\"')
    return (
        f'<{hub_url}>; rel="mercure"; last-event-id="{quoted}"; type="{HUB_EVENT_TYPE}"; '
        'content-type="application/json"'
    )


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

    The matcher type may be spelled as earlier revisions did (``Exact``, ``URLPattern``).

    >>> found = parse_subscriptions_path(
    ...     "/.well-known/mercure/subscriptions/exact/https%3A%2F%2Fexample.com%2Fa")
    >>> found.match_type.value, found.match, found.subscriber
    ('exact', 'https://example.com/a', None)
    """
    if raw_path.rstrip("/") == SUBSCRIPTIONS_PATH:
        return SubscriptionsPath()
    if not raw_path.startswith(SUBSCRIPTIONS_PATH + "/"):
        raise LookupError("not a subscriptions API path")
    segments = raw_path[len(SUBSCRIPTIONS_PATH) + 1 :].split("/")
    if len(segments) not in (2, 3) or not all(segments):
        raise LookupError("expected /{match_type}/{match}[/{subscriber}]")
    try:
        kind = MatchType.parse(unquote(segments[0], errors="strict"))
        values = [unquote(segment, errors="strict") for segment in segments[1:]]
    except UnicodeDecodeError:
        raise LookupError("no such subscriptions resource") from None
    if kind is None:
        raise LookupError("no such matcher type")
    return SubscriptionsPath(kind, values[0], values[1] if len(values) == 2 else None)


def new_subscriber_id() -> str:
    """The ``{subscriber}`` of a connection's subscriptions: random, so that it is unique per
    connection (two tabs with one token are two subscribers), discloses no ``sub`` to the
    other subscribers of subscription events, and is never anything the client chose.

    >>> new_subscriber_id().startswith("urn:uuid:")
    True
    """
    return f"urn:uuid:{uuid.uuid4()}"
