"""What a stream request asks for, read the same way by the ASGI route and the native path."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from starlette.datastructures import QueryParams

from sluiceway.hub import check_delta
from sluiceway.server.errors import APIError
from sluiceway.server.settings import Settings

TOPIC_PREFIX = "/topics/"


@dataclass(frozen=True, slots=True)
class StreamRequest:
    topics: list[str]
    last_event_id: str | None
    #: The delta format asked for (``?delta=fossil``), where the topic allows it.
    delta: str | None = None


def stream_topics_from_path(path: str) -> list[str] | None:
    """The topics a stream path names (``/topics/{topic}`` or ``/events``), else ``None``."""
    if path.startswith(TOPIC_PREFIX):
        topic = path[len(TOPIC_PREFIX) :]
        return [topic] if topic and "/" not in topic else None
    return [] if path == "/events" else None


def read_stream_request(
    settings: Settings,
    path_topics: list[str],
    query: QueryParams,
    headers: Mapping[str, str],
) -> StreamRequest:
    """Topics to follow, where to resume, and whether with deltas; raises :class:`APIError`
    for a bad request.

    ``path_topics`` is empty for ``/events``, whose topics come from ``?topic=``. A stream
    asks for deltas with ``?delta=fossil`` (one topic); on a topic outside ``delta_topics`` it
    is sent whole events, which its client reads all the same.
    """
    topics = path_topics or query.getlist("topic")
    if not topics:
        raise APIError(400, "missing_topic", "name at least one ?topic=")
    if len(set(topics)) > settings.max_topics_per_stream:
        raise APIError(
            400,
            "too_many_topics",
            f"one stream may follow at most {settings.max_topics_per_stream} topics",
        )
    # The header wins: EventSource sends it on reconnect, while the URL keeps the first value.
    last_event_id = headers.get("last-event-id") or query.get("last_event_id") or None
    delta = query.get("delta")
    if delta is not None:
        try:
            check_delta(delta, len(set(topics)))
        except ValueError as exc:
            raise APIError(400, "invalid_delta", str(exc)) from None
        if not settings.allows_delta(topics[0]):
            delta = None
    return StreamRequest(topics, last_event_id, delta)
