"""Who may do what on the server's API: one request's grants, and the checks routes make.

Every endpoint asks the same question of the same :class:`~sluiceway.auth.Grants`: may this
request read (``subscribe``) or write (``publish``) this resource, named as in
:mod:`sluiceway.auth.resources`? The grants come from, in order:

* the server's publish key as ``Authorization: Bearer <key>``: everything;
* an access token (JWT) from ``Authorization: Bearer``, the ``access_token`` query parameter
  or the ``mercureAccessToken`` cookie (and, from earlier Mercure drafts, the ``authorization``
  parameter and the ``mercureAuthorization`` cookie): its ``mercure`` authorization details;
* nothing: the anonymous grants of the settings ``anonymous_subscribe`` and
  ``anonymous_publish``.

A token that is presented must be valid, even where none is needed (401). The LLM faces are
the exception: the OpenAI and Anthropic SDKs always send an API key, so there a key that is not
a JWT (or any key, while no token key is configured) counts as no token.

Refusals follow RFC 6750: 401 (no token, or an invalid one) or 403 (``insufficient_scope``),
with ``WWW-Authenticate`` and a JSON body.
"""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import Iterator

from starlette.requests import HTTPConnection

from sluiceway.auth.grants import (
    ACCESS_TOKEN_COOKIE,
    ACCESS_TOKEN_QUERY,
    AuthError,
    Grants,
    authenticate,
    token_from,
)
from sluiceway.auth.resources import is_private_topic, topic_resource, topic_users
from sluiceway.server.errors import APIError
from sluiceway.server.settings import Settings

#: The token's places in Mercure drafts before 08, read after the current ones.
LEGACY_COOKIE = "mercureAuthorization"
LEGACY_QUERY = "authorization"
#: Every query parameter and cookie a token may come in.
TOKEN_PARAMETERS = (ACCESS_TOKEN_QUERY, LEGACY_QUERY)
TOKEN_COOKIES = (ACCESS_TOKEN_COOKIE, LEGACY_COOKIE)
#: What the publish key grants: everything (immutable, so one object serves every request).
_PUBLISH_KEY_GRANTS = Grants.full(subject="publish key")


def presented_token(connection: HTTPConnection, *, api_key_header: bool = False) -> str | None:
    """The request's access token from its first place (see the module doc), or None.
    ``api_key_header``: also read ``x-api-key`` (what the Anthropic SDK sends)."""
    token = token_from(connection.headers, connection.cookies, connection.query_params)
    if token is None:
        token = token_from(
            {},
            connection.cookies,
            connection.query_params,
            cookie_name=LEGACY_COOKIE,
            query_name=LEGACY_QUERY,
        )
    if token is None and api_key_header:
        token = connection.headers.get("x-api-key") or None
    return token


def _is_publish_key(settings: Settings, token: str) -> bool:
    key = settings.publish_key
    return key is not None and hmac.compare_digest(token.encode(), key.get_secret_value().encode())


def request_grants(connection: HTTPConnection, *, api_keys: bool = False) -> Grants:
    """The grants of this request; raises :class:`AuthError` for a bad token.

    ``api_keys``: the request comes from an LLM SDK, whose API key is not a token (see the
    module doc).
    """
    settings: Settings = connection.app.state.settings
    token = presented_token(connection, api_key_header=api_keys)
    if token is not None and _is_publish_key(settings, token):
        return _PUBLISH_KEY_GRANTS
    verifier = connection.app.state.token_verifier
    if token is not None and api_keys and (token.count(".") != 2 or not verifier.configured):
        token = None  # an API key for the upstream's SDK, not a token of ours
    return authenticate(
        token,
        verifier,
        hub_url=settings.mercure_hub_url,
        legacy_claims=True,  # the mercure.publish / mercure.subscribe claims
        anonymous_subscribe=settings.anonymous_subscribe,
        anonymous_publish=settings.anonymous_publish_allowed,
    )


def refusal(error: AuthError) -> APIError:
    """An :class:`AuthError` as the API's JSON error, with its ``WWW-Authenticate``."""
    return APIError(
        error.status,
        error.error or "unauthorized",
        error.description,
        headers={"www-authenticate": error.header()},
    )


@contextlib.contextmanager
def refused_as_api_error() -> Iterator[None]:
    """Turn an :class:`AuthError` raised inside into the API's refusal (:func:`refusal`).

    >>> with refused_as_api_error():
    ...     Grants.full().require_publish("/files/a.txt")
    """
    try:
        yield
    except AuthError as error:
        raise refusal(error) from None


def request_grants_or_refuse(connection: HTTPConnection, *, api_keys: bool = False) -> Grants:
    """:func:`request_grants`, raising :class:`APIError` (401) for a bad token."""
    with refused_as_api_error():
        return request_grants(connection, api_keys=api_keys)


def require_reader(connection: HTTPConnection) -> Grants:
    """The request's grants, if it may read anything at all (anonymously or with a token);
    else raises :class:`APIError` (401). For checks made before the resource is known."""
    grants = request_grants_or_refuse(connection)
    with refused_as_api_error():
        grants.require_subscriber()
    return grants


def require_publisher(connection: HTTPConnection) -> Grants:
    """The request's grants, if it may publish somewhere (anonymously or with some
    ``publish`` grant); else raises :class:`APIError` (401/403)."""
    grants = request_grants_or_refuse(connection)
    with refused_as_api_error():
        grants.require_publisher()
    return grants


def require_read(connection: HTTPConnection, *resources: str, api_keys: bool = False) -> Grants:
    """The request's grants, if they allow reading every one of ``resources``; else raises
    :class:`APIError` (401/403)."""
    grants = request_grants_or_refuse(connection, api_keys=api_keys)
    with refused_as_api_error():
        for resource in resources:
            grants.require_read(resource)
    return grants


def require_topic_read(connection: HTTPConnection, topics: list[str]) -> Grants:
    """:func:`require_read` for topics, private ones included (``$name``, ``name#users``):
    those need a ``subscribe`` grant on them, or a token whose ``sub`` is one of the users;
    anonymous reading never reaches them."""
    grants = request_grants_or_refuse(connection)
    with refused_as_api_error():
        for topic in topics:
            resource = topic_resource(topic)
            if not is_private_topic(topic):
                grants.require_read(resource)
            elif grants.subject is None or grants.subject not in (topic_users(topic) or ()):
                grants.require_subscribe_to(resource)
    return grants


def require_write(
    connection: HTTPConnection, resource: str, *alternatives: str, api_keys: bool = False
) -> Grants:
    """The request's grants, if they allow publishing to ``resource`` (or to one of the
    ``alternatives``); else raises :class:`APIError` (401/403)."""
    grants = request_grants_or_refuse(connection, api_keys=api_keys)
    with refused_as_api_error():
        grants.require_publish(resource, *alternatives)
    return grants
