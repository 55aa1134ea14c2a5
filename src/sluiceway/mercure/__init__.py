"""Mercure (draft-dunglas-mercure-08 as revised in dunglas/mercure), sans-I/O: topic
matchers, publications, reconnection ids and the documents of active subscriptions. The
authorization side (tokens, grants) lives in :mod:`sluiceway.auth`.

>>> from sluiceway.mercure import MatchType, compile_selector
>>> compile_selector("https://example.com/books/:id", MatchType.URL_PATTERN).matches(
...     "https://example.com/books/7")
True
"""

from sluiceway.mercure.publication import (
    EARLIEST,
    HUB_EVENT_TYPE,
    MAX_TOPICS,
    SUBSCRIPTIONS_PATH,
    MercureUpdate,
    PublishError,
    ResumeFrom,
    SubscriptionsPath,
    encode_update,
    hub_event_id,
    hub_link,
    new_subscriber_id,
    parse_last_event_id,
    parse_publish_form,
    parse_subscriptions_path,
    requested_last_event_id,
    response_last_event_id,
    subscription_document,
    subscription_topic,
    subscription_update,
    subscriptions_collection,
)
from sluiceway.mercure.selectors import (
    DEFAULT_MAX_MATCHERS,
    MAX_PATTERN_LENGTH,
    RESERVED_PATH,
    WILDCARD,
    MatchType,
    Selector,
    SelectorError,
    check_topic,
    compile_selector,
    is_reserved_topic,
    parse_subscribe_query,
)

__all__ = [
    "DEFAULT_MAX_MATCHERS",
    "EARLIEST",
    "HUB_EVENT_TYPE",
    "MAX_PATTERN_LENGTH",
    "MAX_TOPICS",
    "RESERVED_PATH",
    "SUBSCRIPTIONS_PATH",
    "WILDCARD",
    "MatchType",
    "MercureUpdate",
    "PublishError",
    "ResumeFrom",
    "Selector",
    "SelectorError",
    "SubscriptionsPath",
    "check_topic",
    "compile_selector",
    "encode_update",
    "hub_event_id",
    "hub_link",
    "is_reserved_topic",
    "new_subscriber_id",
    "parse_last_event_id",
    "parse_publish_form",
    "parse_subscribe_query",
    "parse_subscriptions_path",
    "requested_last_event_id",
    "response_last_event_id",
    "subscription_document",
    "subscription_topic",
    "subscription_update",
    "subscriptions_collection",
]
