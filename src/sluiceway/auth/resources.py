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
``/generations``                      publish      start a generation (every LLM face); read
                                                   and cancel one's own
``/generations``                      subscribe    read one's own generations
``/generations/{id}``                 subscribe    read it (stream, resume, describe, retrieve)
``/generations/{id}``                 publish      cancel it
``/jobs``                             publish      start a job; read and cancel one's own
``/jobs``                             subscribe    read one's own jobs
``/jobs/{id}``                        subscribe    read it (status and events)
``/jobs/{id}``                        publish      cancel it
``/exports/{table}``                  subscribe    ``GET /exports/{table}.csv|.ndjson``
``/files/{path}``                     subscribe    download
``/files/{path}``                     publish      upload (``PUT``, or ``POST /uploads`` for
                                                   each part's file name)
``/proxy``                            subscribe    ``GET /proxy?url=…``
``/metrics``                          subscribe    ``GET /metrics`` and the counts of
                                                   ``/healthz``, when status is not public
====================================  ===========  =============================================

A token granting ``subscribe`` on ``{"match": "/topics/*", "match_type": "urlpattern"}`` reads
every topic; ``{"match": "*"}`` reads and writes every topic and every Mercure topic.

**Named resources.** Everything but topics (generations, jobs, exports, files, the proxy,
metrics) needs a grant that names it: an exact selector, or a URL pattern whose fixed path
names its family (``/files/docs/*``). ``*``, patterns like ``/*``, and the legacy ``mercure``
claim are written for Mercure topics and do not reach them (see
:meth:`~sluiceway.auth.Grants.names`): a browser's Mercure token must not read the server's
files.

**Owned runs.** A generation (and its chat) or a job belongs to whoever started it
(:func:`owner_of`): the ``sub`` of the token, the server for the publish key, nobody in
particular without a ``sub``. A grant on the collection (``/generations``, ``/jobs``) acts on
the caller's own runs only; others' need a grant naming their path (``/generations/{id}``, or
a pattern such as ``/generations/*``). A run of nobody in particular is everyone's only where
anyone may start one (anonymous publishing: the key-free loopback default). See
:func:`may_act_on_run`.

Names are URL paths: what a path cannot hold literally is percent-encoded, ``#`` above all, so
that a pattern for ``/topics/room-42`` cannot also match the topic ``room-42#alice`` (the
``#`` would start a URL fragment).

Private topics, as Centrifugo names its channels: ``$name`` and ``name#user1,user2``. Reading
one (over HTTP as over WebSocket, see :func:`may_read_topic`) needs more than anonymous access:
``$name`` a ``subscribe`` grant on it; ``name#users`` a token whose ``sub`` is one of its users,
or a grant naming that very topic (an exact selector: a pattern for ``room-:id`` does not reach
``room-42#alice``).

Internal topics (``sluiceway.*``: the Mercure log, generations' and jobs' streams) are the
server's own: no grant reaches them through the topic API or WebSocket channels; they are read
through their own endpoints.

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

from sluiceway.auth.grants import PUBLISH, SUBSCRIBE, Grants

__all__ = [
    "GENERATIONS",
    "INTERNAL_TOPIC_PREFIX",
    "JOBS",
    "METRICS",
    "PROXY",
    "export_resource",
    "file_resource",
    "generation_resource",
    "is_internal_topic",
    "is_private_topic",
    "job_resource",
    "may_act_on_run",
    "may_publish_topic",
    "may_read_topic",
    "may_use",
    "owner_of",
    "topic_resource",
    "topic_users",
]

GENERATIONS = "/generations"
JOBS = "/jobs"
PROXY = "/proxy"
METRICS = "/metrics"

#: Topics the server keeps for itself (see the module doc).
INTERNAL_TOPIC_PREFIX = "sluiceway."


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
    """The users a ``name#u1,u2`` topic is limited to (empty names are nobody); ``None`` for
    other topics.

    >>> topic_users("room#"), topic_users("room#,bob")
    ([], ['bob'])
    """
    _, mark, users = topic.rpartition("#")
    return [user for user in users.split(",") if user] if mark else None


def is_private_topic(topic: str) -> bool:
    """``$name`` or ``name#users``: never readable anonymously."""
    return topic.startswith("$") or "#" in topic


def is_internal_topic(topic: str) -> bool:
    """``sluiceway.*``: kept by the server (see the module doc)."""
    return topic.startswith(INTERNAL_TOPIC_PREFIX)


# -- the rules ---------------------------------------------------------------------------------


def may_read_topic(grants: Grants, topic: str) -> bool:
    """May ``grants`` read ``topic`` through the topic API or a WebSocket channel?

    >>> anonymous = Grants.anonymous(subscribe=True)
    >>> may_read_topic(anonymous, "news"), may_read_topic(anonymous, "chat#alice")
    (True, False)
    >>> may_read_topic(anonymous, "sluiceway.mercure")
    False
    """
    if is_internal_topic(topic):
        return False
    users = topic_users(topic)
    if users is not None:
        subject = grants.subject
        resource = topic_resource(topic)
        return (bool(subject) and subject in users) or grants.holds_exact(SUBSCRIBE, resource)
    if topic.startswith("$"):
        return grants.may_subscribe_to(topic_resource(topic))
    # Anonymous reading first: no resource name to build for every reader of a public topic.
    return grants.anonymous_subscribe or grants.may_read(topic_resource(topic))


def may_publish_topic(grants: Grants, topic: str) -> bool:
    """May ``grants`` publish to ``topic`` through the topic API or a WebSocket channel? A
    ``name#users`` topic takes writes from its users, a grant naming it exactly, or anyone
    where anonymous publishing is on: a pattern does not reach it, as for reading."""
    if is_internal_topic(topic):
        return False
    resource = topic_resource(topic)
    users = topic_users(topic)
    if users is not None and not grants.anonymous_publish:
        subject = grants.subject
        return (bool(subject) and subject in users) or grants.holds_exact(PUBLISH, resource)
    return grants.may_publish(resource)


def may_use(grants: Grants, action: str, resource: str) -> bool:
    """May ``grants`` act on a named resource (not a topic: see the module doc)? Anonymous
    clients may read while anonymous reading is on, and write while anonymous writing is."""
    anonymous = grants.anonymous_subscribe if action == SUBSCRIBE else grants.anonymous_publish
    return anonymous or grants.names(action, resource)


#: The owner of runs started with the publish key.
SERVER = "server"


def owner_of(grants: Grants) -> str | None:
    """Whose a run started with ``grants`` is: ``sub:<sub>`` for a token with a ``sub``,
    :data:`SERVER` for the publish key, None for nobody in particular (no token, or a token
    without a ``sub``).

    >>> owner_of(Grants.from_claims({"sub": "alice"})), owner_of(Grants.full())
    ('sub:alice', 'server')
    >>> owner_of(Grants.anonymous()) is None
    True
    """
    if grants.everything:
        return SERVER
    return f"sub:{grants.subject}" if grants.subject else None


def may_act_on_run(
    grants: Grants,
    action: str,
    collection: str,
    run_id: str,
    owner: str | None,
    *,
    exists: bool = True,
) -> bool:
    """May ``grants`` read (``subscribe``: describe, stream, resume) or cancel (``publish``)
    the generation or job ``run_id`` of ``collection``, whose :func:`owner_of` is ``owner``?

    Yes with a grant naming its path (the publish key names everything); or, for the caller's
    own run, with a grant on the collection or the anonymous setting for that action. A run of
    nobody in particular (``owner`` None) is the caller's own only where anyone may start one
    (anonymous publishing). ``exists=False`` (no such run): judged as the caller's own, so
    that whoever may act on their own runs learns that it does not exist (a 404), and nobody
    else anything; run ids are random, so a 404 tells nothing of others' runs.

    >>> alice = Grants.from_claims({"sub": "alice", "authorization_details": [{
    ...     "type": "mercure", "actions": ["publish"], "topics": [{"match": "/jobs"}]}]})
    >>> may_act_on_run(alice, "publish", "/jobs", "job_1", "sub:alice")
    True
    >>> may_act_on_run(alice, "publish", "/jobs", "job_2", "sub:bob")
    False
    >>> may_act_on_run(Grants.anonymous(subscribe=True), "subscribe", "/jobs", "job_3", None)
    False
    >>> may_act_on_run(Grants.anonymous(subscribe=True, publish=True), "subscribe", "/jobs",
    ...                "job_3", None)
    True
    """
    resource = f"{collection}/{_segment(run_id)}"
    if grants.names(action, resource):
        return True
    caller = owner_of(grants)
    if exists and owner != caller:
        return False
    if caller is None and not grants.anonymous_publish:
        return False  # nobody in particular: everyone's only where anyone may start runs
    anonymous = grants.anonymous_subscribe if action == SUBSCRIBE else grants.anonymous_publish
    return anonymous or grants.names(PUBLISH, collection) or grants.names(SUBSCRIBE, collection)
