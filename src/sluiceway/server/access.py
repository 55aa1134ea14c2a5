"""The routes' side of admission: a Starlette request's grants, and the checks routes make.

Every decision is :class:`~sluiceway.server.admission.Admission`'s (the one check every path
asks, the native fast path included); this module only reads the request's facts once, from
its scope, and turns a refusal into the API's JSON error:

* RFC 6750 for who-may-what: 401 (no token, or an invalid one) or 403 (``insufficient_scope``),
  with ``WWW-Authenticate``;
* 400, 403 or 421 for a request refused before any resource is looked at (see
  :meth:`Admission.check_request`).

The LLM faces pass ``api_keys=True``: the OpenAI and Anthropic SDKs always send an API key,
and one that is not a JWT counts as no token there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

from starlette.requests import HTTPConnection

from sluiceway.auth.grants import PUBLISH, SUBSCRIBE, AuthError, Grants
from sluiceway.server.admission import Admission, Refusal, RequestFacts
from sluiceway.server.errors import APIError
from sluiceway.server.services import services_of

__all__ = [
    "PUBLISH",
    "SUBSCRIBE",
    "admission_of",
    "facts_of",
    "refusal",
    "refused_as_api_error",
    "request_grants",
    "require",
    "require_publisher",
    "require_reader",
    "require_run",
    "require_status",
    "require_topic_publish",
    "require_topics_read",
]

#: Where the request's facts are kept in its scope, read once per request.
FACTS_KEY = "sluiceway.facts"


def admission_of(connection: HTTPConnection) -> Admission:
    return services_of(connection).admission


def facts_of(connection: HTTPConnection) -> RequestFacts:
    """The request's :class:`RequestFacts`, read from its scope once (the admission gate
    middleware reads them first)."""
    scope = connection.scope
    facts = scope.get(FACTS_KEY)
    if facts is None:
        facts = scope[FACTS_KEY] = RequestFacts.from_scope(scope)
    return facts


def refusal(error: AuthError | Refusal) -> APIError:
    """A refusal as the API's JSON error (RFC 6750 ones with their ``WWW-Authenticate``)."""
    if isinstance(error, Refusal):
        return APIError(error.status, error.code, error.detail)
    return APIError(
        error.status,
        error.error or "unauthorized",
        error.description,
        headers={"www-authenticate": error.header()},
    )


@contextlib.contextmanager
def refused_as_api_error() -> Iterator[None]:
    """Turn an :class:`AuthError` or :class:`Refusal` raised inside into the API's error.

    >>> with refused_as_api_error():
    ...     Grants.full().require_publish("/files/a.txt")
    """
    try:
        yield
    except (AuthError, Refusal) as error:
        raise refusal(error) from None


def request_grants(connection: HTTPConnection, *, api_keys: bool = False) -> Grants:
    """The grants of this request; raises :class:`AuthError` for a bad or malformed token."""
    return admission_of(connection).grants(facts_of(connection), api_keys=api_keys)


def _grants(connection: HTTPConnection, *, api_keys: bool = False) -> Grants:
    with refused_as_api_error():
        return request_grants(connection, api_keys=api_keys)


def require_reader(connection: HTTPConnection) -> Grants:
    """The request's grants, if it may read anything at all (anonymously or with a token);
    else raises :class:`APIError` (401). For checks made before the resource is known, so
    that a refusal tells nothing of what exists."""
    grants = _grants(connection)
    with refused_as_api_error():
        grants.require_subscriber()
    return grants


def require_publisher(connection: HTTPConnection) -> Grants:
    """The request's grants, if it may publish somewhere (anonymously or with some
    ``publish`` grant); else raises :class:`APIError` (401/403)."""
    grants = _grants(connection)
    with refused_as_api_error():
        grants.require_publisher()
    return grants


def require_topics_read(connection: HTTPConnection, topics: Iterable[str]) -> Grants:
    """The request's grants, if they may read every one of ``topics`` (private ones
    included); else raises :class:`APIError` (401/403; 403 ``internal_topic``)."""
    grants = _grants(connection)
    with refused_as_api_error():
        admission_of(connection).require_topics_read(grants, topics)
    return grants


def require_topic_publish(connection: HTTPConnection, topic: str) -> Grants:
    grants = _grants(connection)
    with refused_as_api_error():
        admission_of(connection).require_topic_publish(grants, topic)
    return grants


def require(
    connection: HTTPConnection,
    action: str,
    resource: str,
    *alternatives: str,
    api_keys: bool = False,
) -> Grants:
    """The request's grants, if they allow ``action`` (``subscribe`` or ``publish``) on the
    named resource (or one of the ``alternatives``); else raises :class:`APIError`."""
    grants = _grants(connection, api_keys=api_keys)
    with refused_as_api_error():
        admission_of(connection).require(grants, action, resource, *alternatives)
    return grants


def require_run(
    connection: HTTPConnection,
    action: str,
    collection: str,
    run_id: str,
    owner: str | None,
    *,
    exists: bool = True,
    api_keys: bool = False,
) -> Grants:
    """The request's grants, if they may read (``subscribe``) or cancel (``publish``) the
    generation or job ``run_id`` that ``owner`` started (``exists=False``: there is no such
    run, judged as the caller's own); else raises :class:`APIError`."""
    grants = _grants(connection, api_keys=api_keys)
    with refused_as_api_error():
        admission_of(connection).require_run(
            grants, action, collection, run_id, owner, exists=exists
        )
    return grants


def require_status(connection: HTTPConnection) -> Grants:
    """The request's grants, if they may see the server's status (``/metrics``); else
    raises :class:`APIError` (401/403)."""
    grants = _grants(connection)
    with refused_as_api_error():
        admission_of(connection).require_status(grants)
    return grants
