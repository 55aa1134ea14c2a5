"""The names grants use for Sluiceway's own API: each resource is named by its path.

A token's ``mercure`` authorization details list topic selectors; for the API, the "topic" of
a resource is its path on this server, so a grant reads like the URL it opens. Exact
selectors compare the path as written here; URL patterns (relative ones resolve against the
hub's URL, as do these paths) cover families of resources:

====================================  ===========  =============================================
resource                              action       what it allows
====================================  ===========  =============================================
``/topics/{topic}``                   subscribe    ``GET /topics/{topic}``, its history, and
                                                   ``/events?topic=…``; WebSocket subscriptions
``/topics/{topic}``                   publish      ``POST /topics/{topic}``; WebSocket publish
``/generations``                      publish      start a generation (every LLM face), cancel
                                                   any
``/generations/{id}``                 subscribe    read it (stream, resume, describe, retrieve)
``/generations/{id}``                 publish      cancel it
``/jobs``                             publish      start a job, cancel any
``/jobs`` / ``/jobs/{id}``            subscribe    list jobs / read one (status and events)
``/jobs/{id}``                        publish      cancel it
``/exports/{table}``                  subscribe    ``GET /exports/{table}.csv|.ndjson``
``/files/{path}``                     subscribe    download
``/files/{path}``                     publish      upload (``PUT``, or ``POST /uploads`` for
                                                   each part's file name)
``/proxy``                            subscribe    ``GET /proxy?url=…``
====================================  ===========  =============================================

A token granting ``subscribe`` on ``{"match": "/topics/*", "matchType": "URLPattern"}`` reads
every topic; ``{"match": "*"}`` grants everything.

Names are URL paths: what a path cannot hold literally is percent-encoded, ``#`` above all, so
that a pattern for ``/topics/room-42`` cannot also match the topic ``room-42#alice`` (the
``#`` would start a URL fragment).

Private topics, as Centrifugo names its channels: ``$name`` and ``name#user1,user2``. Reading
one (over HTTP as over WebSocket) needs more than anonymous access: a ``subscribe`` grant on it,
or, for a user channel, a token whose ``sub`` is one of its users.

>>> topic_resource("chat")
'/topics/chat'
>>> topic_resource("room-42#alice")
'/topics/room-42%23alice'
>>> generation_resource("gen_abc")
'/generations/gen_abc'
>>> topic_users("chat#alice,bob"), is_private_topic("$admin"), is_private_topic("chat")
(['alice', 'bob'], True, False)
"""

from __future__ import annotations

from urllib.parse import quote

__all__ = [
    "GENERATIONS",
    "JOBS",
    "PROXY",
    "export_resource",
    "file_resource",
    "generation_resource",
    "is_private_topic",
    "job_resource",
    "topic_resource",
    "topic_users",
]

GENERATIONS = "/generations"
JOBS = "/jobs"
PROXY = "/proxy"


# Kept literal: what a URL path segment may hold as it is (RFC 3986 pchar), minus "/".
_SEGMENT_SAFE = "!$&'()*+,;=:@~"


def _segment(value: str) -> str:
    return quote(value, safe=_SEGMENT_SAFE)


def topic_resource(topic: str) -> str:
    return f"/topics/{_segment(topic)}"


def generation_resource(generation_id: str) -> str:
    return f"{GENERATIONS}/{_segment(generation_id)}"


def job_resource(job_id: str) -> str:
    return f"{JOBS}/{_segment(job_id)}"


def export_resource(table: str) -> str:
    return f"/exports/{_segment(table)}"


def file_resource(path: str) -> str:
    return "/files/" + "/".join(_segment(part) for part in path.lstrip("/").split("/"))


def topic_users(topic: str) -> list[str] | None:
    """The users a ``name#u1,u2`` topic is limited to; ``None`` for other topics."""
    _, mark, users = topic.rpartition("#")
    return users.split(",") if mark else None


def is_private_topic(topic: str) -> bool:
    """``$name`` or ``name#users``: never readable anonymously."""
    return topic.startswith("$") or "#" in topic
