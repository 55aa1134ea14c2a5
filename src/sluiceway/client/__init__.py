"""An SSE client that never loses its place.

>>> from sluiceway.client import EventSource
>>> for event in EventSource("http://127.0.0.1:8000/topics/news"):   # doctest: +SKIP
...     print(event.id, event.data)

See :class:`EventSource` for reconnection, resume, errors and the async form.
"""

from sluiceway.client.errors import (
    ContentTypeError,
    DeltaMismatch,
    HTTPStatusError,
    ReconnectExhausted,
    SSEClientError,
    StreamInterrupted,
)
from sluiceway.client.policy import ReconnectState, RetryInfo, Verdict, classify
from sluiceway.client.source import EventSource
from sluiceway.control import Reset, TopicReset, is_control, parse_reset
from sluiceway.sse import Event

__all__ = [
    "ContentTypeError",
    "DeltaMismatch",
    "Event",
    "EventSource",
    "HTTPStatusError",
    "ReconnectExhausted",
    "ReconnectState",
    "Reset",
    "RetryInfo",
    "SSEClientError",
    "StreamInterrupted",
    "TopicReset",
    "Verdict",
    "classify",
    "is_control",
    "parse_reset",
]
