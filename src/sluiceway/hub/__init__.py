"""The hub: topics with bounded, resumable history, and the subscriptions that follow them.

>>> from sluiceway.hub import Hub
>>> hub = Hub()
>>> event_id = await hub.publish("news", {"title": "hello"})   # doctest: +SKIP
>>> async with await hub.subscribe(["news"], last_event_id=event_id) as sub:  # doctest: +SKIP
...     async for chunk in sub:
...         ...
"""

from sluiceway.hub.config import HubConfig, OverflowPolicy, TopicBounds
from sluiceway.hub.core import (
    RESET_EVENT,
    TOPIC_NAME,
    HistoryPage,
    Hub,
    check_delta,
    check_tags,
    check_topic_name,
    to_data,
)
from sluiceway.hub.errors import (
    BackendUnavailable,
    ClaimTaken,
    HistoryGone,
    HubClosed,
    HubError,
    InvalidDelta,
    InvalidEventId,
    InvalidTopic,
    TooManyTopics,
    TopicFinished,
    TopicNotReady,
)
from sluiceway.hub.stats import HubStats
from sluiceway.hub.subscription import CloseReason, StreamState, Subscription
from sluiceway.hub.topic import RetainedTopic, StoredEvent

__all__ = [
    "RESET_EVENT",
    "TOPIC_NAME",
    "BackendUnavailable",
    "ClaimTaken",
    "CloseReason",
    "HistoryGone",
    "HistoryPage",
    "Hub",
    "HubClosed",
    "HubConfig",
    "HubError",
    "HubStats",
    "InvalidDelta",
    "InvalidEventId",
    "InvalidTopic",
    "OverflowPolicy",
    "RetainedTopic",
    "StoredEvent",
    "StreamState",
    "Subscription",
    "TooManyTopics",
    "TopicBounds",
    "TopicFinished",
    "TopicNotReady",
    "check_delta",
    "check_tags",
    "check_topic_name",
    "to_data",
]
