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

>>> topic_resource("chat")
'/topics/chat'
>>> generation_resource("gen_abc")
'/generations/gen_abc'
"""

from __future__ import annotations

__all__ = [
    "GENERATIONS",
    "JOBS",
    "PROXY",
    "export_resource",
    "file_resource",
    "generation_resource",
    "job_resource",
    "topic_resource",
]

GENERATIONS = "/generations"
JOBS = "/jobs"
PROXY = "/proxy"


def topic_resource(topic: str) -> str:
    return f"/topics/{topic}"


def generation_resource(generation_id: str) -> str:
    return f"{GENERATIONS}/{generation_id}"


def job_resource(job_id: str) -> str:
    return f"{JOBS}/{job_id}"


def export_resource(table: str) -> str:
    return f"/exports/{table}"


def file_resource(path: str) -> str:
    return f"/files/{path.lstrip('/')}"
