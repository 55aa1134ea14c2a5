"""Who may publish and read what: the grants an access token carries, sans-I/O.

Follows the Mercure draft (draft-dunglas-mercure-08 as revised in dunglas/mercure, 2026):
a token grants an action (``publish`` or ``subscribe``) on a topic when one of its
``authorization_details`` of type ``https://mercure.rocks/authorization-detail`` (or
``mercure``, as earlier revisions named it) lists that action and one of its ``topics``
matchers matches the topic. A private update reaches a subscriber only when its token grants
``subscribe`` on the update's topic; public updates reach every subscriber. What a subscriber
*listens to* (its ``match`` query parameters) never widens what it may read.

>>> grants = Grants.from_claims({"authorization_details": [
...     {"type": "https://mercure.rocks/authorization-detail", "actions": ["subscribe"],
...      "topics": [{"match": "https://example.com/books/1"}]}]}, hub_url="https://hub.example/")
>>> grants.may_receive("https://example.com/books/1", private=True)
True
>>> grants.may_receive("https://example.com/books/2", private=True)
False
>>> grants.may_receive("https://example.com/books/2", private=False)
True

Errors follow RFC 6750: :class:`AuthError` carries the status (400, 401 or 403), the error
code and the ``WWW-Authenticate`` header value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sluiceway.auth.tokens import TokenError, TokenVerifier
from sluiceway.mercure.selectors import (
    MAX_PATTERN_LENGTH,
    MatchType,
    Selector,
    SelectorError,
    compile_selector,
)

__all__ = [
    "ACCESS_TOKEN_COOKIE",
    "ACCESS_TOKEN_QUERY",
    "AUTHORIZATION_DETAIL_TYPE",
    "AuthError",
    "Detail",
    "GrantLimits",
    "Grants",
    "authenticate",
    "token_from",
    "www_authenticate",
]

#: The ``type`` of the authorization details this module reads (RFC 9396), as the current
#: draft names it; ``mercure``, its name in earlier revisions, is read too.
AUTHORIZATION_DETAIL_TYPE = "https://mercure.rocks/authorization-detail"
_DETAIL_TYPES = frozenset({AUTHORIZATION_DETAIL_TYPE, "mercure"})
#: The cookie name the draft recommends (it allows another; earlier revisions said
#: ``mercureAccessToken``, and draft 07 ``mercureAuthorization``).
ACCESS_TOKEN_COOKIE = "__Secure-mercure_access_token"
#: The RFC 6750 query parameter (older hubs read ``authorization``).
ACCESS_TOKEN_QUERY = "access_token"

PUBLISH = "publish"
SUBSCRIBE = "subscribe"
_ACTIONS = frozenset({PUBLISH, SUBSCRIBE})

#: RFC 6750 error codes and their status codes.
_STATUS = {"invalid_request": 400, "invalid_token": 401, "insufficient_scope": 403}


# -- errors ------------------------------------------------------------------------------------


def _quoted(value: str) -> str:
    # RFC 6750 3: error_description is %x20-21 / %x23-5B / %x5D-7E: no '"', no '\'.
    return '"' + re.sub(r"[^\x20-\x21\x23-\x5b\x5d-\x7e]", "?", value)[:300] + '"'


def www_authenticate(
    error: str | None,
    description: str | None = None,
    *,
    realm: str | None = None,
    resource_metadata: str | None = None,
) -> str:
    """A ``WWW-Authenticate`` value for a Bearer challenge (RFC 6750 section 3).

    ``error=None``: the request had no token; the draft then forbids an error code, and
    suggests ``resource_metadata`` (RFC 9728) pointing at the protected resource metadata.

    >>> www_authenticate("invalid_token", "the access token expired")
    'Bearer error="invalid_token", error_description="the access token expired"'
    >>> www_authenticate(None, resource_metadata="https://hub.example/.well-known/x")
    'Bearer resource_metadata="https://hub.example/.well-known/x"'
    >>> www_authenticate("insufficient_scope", 'no "publish" grant')
    'Bearer error="insufficient_scope", error_description="no ?publish? grant"'
    """
    if error is not None and error not in _STATUS:
        raise ValueError(f"not an RFC 6750 error code: {error!r}")
    params: list[str] = []
    if realm is not None:
        params.append(f"realm={_quoted(realm)}")
    if error is not None:
        params.append(f"error={_quoted(error)}")
        if description:
            params.append(f"error_description={_quoted(description)}")
    if resource_metadata is not None:
        params.append(f"resource_metadata={_quoted(resource_metadata)}")
    return "Bearer " + ", ".join(params) if params else "Bearer"


class AuthError(Exception):
    """A request refused for authorization reasons.

    ``status``: 400 (``invalid_request``), 401 (``invalid_token``, or ``error=None`` when a
    token is needed and none came) or 403 (``insufficient_scope``). ``description`` is safe to
    send; ``detail`` (logs only) may say more, e.g. why a token failed, which the draft says
    not to disclose.

    >>> error = AuthError("insufficient_scope", "no publish grant for this topic")
    >>> error.status, error.header()
    (403, 'Bearer error="insufficient_scope", error_description="no publish grant for this topic"')
    """

    def __init__(self, error: str | None, description: str, *, detail: str | None = None) -> None:
        super().__init__(description)
        if error is not None and error not in _STATUS:
            raise ValueError(f"not an RFC 6750 error code: {error!r}")
        self.error = error
        self.description = description
        self.detail = detail or description
        self.status = _STATUS[error] if error is not None else 401

    def header(self, *, realm: str | None = None, resource_metadata: str | None = None) -> str:
        """The ``WWW-Authenticate`` value to send with :attr:`status`."""
        return www_authenticate(
            self.error, self.description, realm=realm, resource_metadata=resource_metadata
        )

    def json(self) -> dict[str, str]:
        """A JSON body for endpoints that answer in JSON."""
        body = {"error": self.error or "unauthorized", "error_description": self.description}
        return body


def _invalid_token(detail: str) -> AuthError:
    # One description for every token failure: the draft says not to tell why.
    return AuthError("invalid_token", "the access token is not valid", detail=detail)


# -- token extraction --------------------------------------------------------------------------


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value


def token_from(
    headers: Mapping[str, str],
    cookies: Mapping[str, str],
    query: Mapping[str, str],
    *,
    cookie_name: str = ACCESS_TOKEN_COOKIE,
    query_name: str = ACCESS_TOKEN_QUERY,
) -> str | None:
    """The one access token of a request, or None.

    The draft's precedence, highest first, using only the first mechanism present: the
    ``Authorization: Bearer`` header, then the ``access_token`` query parameter, then the
    cookie. The others are ignored, even when the chosen one turns out invalid.

    Raises :class:`AuthError` (400, ``invalid_request``) for a ``Bearer`` header that is not
    ``Bearer <token>`` and for an empty ``access_token`` parameter. An ``Authorization`` header
    of another scheme (``Basic``...) is not a Bearer token at all: as if no credentials came
    (RFC 6750 3.1: then no error code, a bare challenge). An empty cookie counts as none (a
    browser's cleared cookie).

    >>> cookies = {"__Secure-mercure_access_token": "c"}
    >>> token_from({"Authorization": "Bearer h"}, cookies, {"access_token": "q"})
    'h'
    >>> token_from({}, cookies, {"access_token": "q"})
    'q'
    >>> token_from({}, cookies, {})
    'c'
    """
    authorization = _header(headers, "Authorization")
    if authorization is not None:
        scheme, _, credentials = authorization.strip().partition(" ")
        credentials = credentials.strip()
        if scheme.lower() == "bearer":
            if not credentials or " " in credentials:
                raise AuthError(
                    "invalid_request", "the Authorization header must be 'Bearer <access token>'"
                )
            return credentials
    token = query.get(query_name)
    if token is not None:
        if not token:
            raise AuthError("invalid_request", f"the {query_name} parameter is empty")
        return token
    return cookies.get(cookie_name) or None


# -- grants ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GrantLimits:
    """Bounds on what one token may carry; a token over them is invalid (401), as the draft
    asks, so that a huge token cannot make every update cost a long scan."""

    max_details: int = 100
    max_topics: int = 100
    max_pattern_length: int = MAX_PATTERN_LENGTH


@dataclass(frozen=True, slots=True)
class Detail:
    """One ``mercure`` authorization detail: actions on the topics its selectors match.

    ``payload``: the detail's ``payload`` (subscription events show it), or None.
    ``legacy``: it comes from the ``mercure`` claim of earlier drafts, which was written for
    Mercure topics only (see :meth:`Grants.names`).
    """

    actions: frozenset[str]
    selectors: tuple[Selector, ...]
    payload: Any = None
    legacy: bool = False

    def matches(self, topic: str) -> bool:
        return any(selector.matches(topic) for selector in self.selectors)


class _Index:
    """The selectors of one action, arranged for quick checks: ``*``, a set of exact topics,
    then the URL patterns one by one. ``named`` keeps apart the selectors that name what
    they match (see :meth:`Grants.names`)."""

    __slots__ = ("any", "exact", "named_exact", "named_patterns", "patterns")

    def __init__(self, details: Iterable[Detail], action: str) -> None:
        self.any = False
        exact: set[str] = set()
        named_exact: set[str] = set()
        patterns: dict[Selector, None] = {}
        named_patterns: dict[Selector, str] = {}
        for detail in details:
            if action not in detail.actions:
                continue
            for selector in detail.selectors:
                if selector.is_wildcard:
                    self.any = True
                elif selector.match_type is MatchType.EXACT:
                    exact.add(selector.pattern)
                    if not detail.legacy:
                        named_exact.add(selector.pattern)
                else:
                    patterns[selector] = None
                    if not detail.legacy and (prefix := selector.path_prefix) is not None:
                        named_patterns[selector] = prefix
        self.exact = frozenset(exact)
        self.patterns = tuple(patterns)
        self.named_exact = frozenset(named_exact)
        self.named_patterns = tuple(named_patterns.items())

    def matches(self, topic: str) -> bool:
        return (
            self.any
            or topic in self.exact
            or any(selector.matches(topic) for selector in self.patterns)
        )

    def names(self, resource: str) -> bool:
        if resource in self.named_exact:
            return True
        family = _family(resource)
        return any(
            _within(prefix, family) and selector.matches(resource)
            for selector, prefix in self.named_patterns
        )


def _family(resource: str) -> str:
    """``/files`` for ``/files/a/b.txt``: the first segment of a resource's path."""
    end = resource.find("/", 1)
    return resource if end < 0 else resource[:end]


def _within(prefix: str, family: str) -> bool:
    # A pattern's literal path prefix names a family when it is the family or below it:
    # "/files/docs/" and "/files" do, "/fil" and "/" do not.
    return prefix == family or prefix.startswith(family + "/")


class Grants:
    """What one request may do. Build it with :meth:`from_claims` (a verified token),
    :meth:`anonymous` (no token), or :func:`authenticate` (either, from a raw token).

    ``anonymous_publish`` / ``anonymous_subscribe``: the hub's settings for clients without a
    token (publishing without a token is for trusted networks only, says the draft).
    """

    __slots__ = (
        "_publish",
        "_subscribe",
        "anonymous_publish",
        "anonymous_subscribe",
        "authenticated",
        "details",
        "everything",
        "expires_at",
        "subject",
    )

    def __init__(
        self,
        details: Sequence[Detail] = (),
        *,
        authenticated: bool,
        subject: str | None = None,
        expires_at: float | None = None,
        anonymous_subscribe: bool = False,
        anonymous_publish: bool = False,
        everything: bool = False,
    ) -> None:
        self.details = tuple(details)
        self.authenticated = authenticated
        self.subject = subject
        self.expires_at = expires_at
        self.anonymous_subscribe = anonymous_subscribe
        self.anonymous_publish = anonymous_publish
        #: Every action on every resource, named or not: the server's publish key.
        self.everything = everything
        self._publish = _Index(self.details, PUBLISH)
        self._subscribe = _Index(self.details, SUBSCRIBE)

    @classmethod
    def anonymous(cls, *, subscribe: bool = False, publish: bool = False) -> Grants:
        """The grants of a request without a token, under the hub's two settings.

        >>> Grants.anonymous(subscribe=True).can_subscribe
        True
        >>> Grants.anonymous(subscribe=True).may_receive("t", private=True)
        False
        """
        return cls(authenticated=False, anonymous_subscribe=subscribe, anonymous_publish=publish)

    @classmethod
    def full(cls, *, subject: str | None = None) -> Grants:
        """Every action on every resource: what the server's publish key grants.

        >>> Grants.full().may_publish("/topics/anything"), Grants.full().names("publish", "/x/y")
        (True, True)
        """
        wildcard = Detail(frozenset(_ACTIONS), (compile_selector("*"),))
        return cls([wildcard], authenticated=True, subject=subject, everything=True)

    @classmethod
    def from_claims(
        cls,
        claims: Mapping[str, Any],
        *,
        hub_url: str | None = None,
        legacy_claims: bool = False,
        limits: GrantLimits = GrantLimits(),  # frozen: one shared default is safe
        anonymous_subscribe: bool = False,
        anonymous_publish: bool = False,
    ) -> Grants:
        """The grants of a verified token's claims. Raises :class:`AuthError` (401,
        ``invalid_token``) when a ``mercure`` detail does not parse or validate, or is over
        ``limits``: the whole token is refused, never acted on in part (the draft).

        ``hub_url`` is needed for relative URL patterns. Details of other types are ignored.

        ``legacy_claims``: in a token without ``authorization_details``, read the ``mercure:
        {publish, subscribe, payload}`` claim of draft 07 and earlier, each string an exact
        matcher or ``*``. Its URI Templates are not supported: a token using one is refused.
        Such grants reach Mercure topics and the topic API only (see :meth:`names`).
        """
        details: list[Detail] = []
        raw = claims.get("authorization_details")
        if raw is not None:
            if not isinstance(raw, list):
                raise _invalid_token("authorization_details must be an array")
            for index, entry in enumerate(raw):
                if not isinstance(entry, dict) or not isinstance(entry.get("type"), str):
                    raise _invalid_token(f"authorization_details[{index}] has no string type")
                if entry["type"] in _DETAIL_TYPES:
                    details.append(_parse_detail(entry, index, hub_url, limits))
        elif legacy_claims and "mercure" in claims:
            # Only in tokens without authorization_details (as the reference hub reads it).
            details.extend(_parse_legacy(claims["mercure"], limits))
        if len(details) > limits.max_details:
            raise _invalid_token(f"more than {limits.max_details} mercure authorization details")
        subject = claims.get("sub")
        expires = claims.get("exp")
        return cls(
            details,
            authenticated=True,
            subject=subject if isinstance(subject, str) else None,
            expires_at=float(expires) if isinstance(expires, int | float) else None,
            anonymous_subscribe=anonymous_subscribe,
            anonymous_publish=anonymous_publish,
        )

    # -- questions ---------------------------------------------------------------------------

    @property
    def can_subscribe(self) -> bool:
        """May this client open a subscription at all (it then receives public updates)?"""
        return self.authenticated or self.anonymous_subscribe

    @property
    def can_publish(self) -> bool:
        """May it publish anywhere at all (anonymously, or with some ``publish`` grant)?"""
        index = self._publish
        return self.anonymous_publish or index.any or bool(index.exact or index.patterns)

    def may_publish(self, topic: str) -> bool:
        """Does it hold ``publish`` on ``topic``? (The same for public and private updates:
        an update has one topic, and that is what is checked.)

        >>> Grants.anonymous(publish=True).may_publish("anything")
        True
        """
        return self.anonymous_publish or self._publish.matches(topic)

    def may_subscribe_to(self, topic: str) -> bool:
        """Does it hold ``subscribe`` on ``topic``: may it read private updates of that topic
        and the subscriptions-API resource at that path? Anonymous clients never do."""
        return self._subscribe.matches(topic)

    def names(self, action: str, resource: str) -> bool:
        """Does a grant that *names* ``resource`` allow ``action`` on it? For resources that a
        token written for Mercure topics must not reach by accident (files, exports, jobs,
        generations, the proxy): only ``authorization_details`` count, not the legacy
        ``mercure`` claim; an exact selector naming the resource, or a URL pattern whose
        literal path names its family (``/files/docs/*`` names ``/files/docs/a``; ``*`` and
        ``/*`` name nothing). Anonymous settings do not count either.

        >>> grants = Grants.from_claims({"authorization_details": [{"type": "mercure",
        ...     "actions": ["subscribe"], "topics": [{"match": "*"},
        ...     {"match": "/files/pub/*", "match_type": "urlpattern"}]}]},
        ...     hub_url="http://127.0.0.1:8000/.well-known/mercure")
        >>> grants.names("subscribe", "/files/pub/a.txt"), grants.names("subscribe", "/jobs")
        (True, False)
        """
        if self.everything:
            return True
        index = self._publish if action == PUBLISH else self._subscribe
        return index.names(resource)

    def holds_exact(self, action: str, resource: str) -> bool:
        """Does a selector equal to ``resource`` (not a pattern, not ``*``) allow ``action``?"""
        index = self._publish if action == PUBLISH else self._subscribe
        return self.everything or resource in index.exact

    def may_read(self, resource: str) -> bool:
        """May it read ``resource`` (a topic of the API, see :mod:`sluiceway.auth.resources`)?
        Yes when anonymous subscribing is on, otherwise with a ``subscribe`` grant on it.

        >>> Grants.anonymous(subscribe=True).may_read("/topics/chat")
        True
        >>> Grants.anonymous().may_read("/topics/chat")
        False
        """
        return self.anonymous_subscribe or self._subscribe.matches(resource)

    @property
    def read_deadline(self) -> float | None:
        """When reads that rest on the token must end (its ``exp``, a Unix time); None when
        anonymous subscribing makes the token unnecessary, or it never expires."""
        return None if self.anonymous_subscribe else self.expires_at

    def may_receive(self, topic: str, private: bool) -> bool:
        """May an update of ``topic`` be sent to this subscriber? Public: yes. Private: only
        with a ``subscribe`` grant on that very topic. (The subscriber's own ``match``
        parameters decide what it listens to; check them separately.)"""
        return not private or self._subscribe.matches(topic)

    def may_receive_any(self, topics: Sequence[str], private: bool) -> bool:
        """May an update of these topics (its canonical and alternate ones) be sent to this
        subscriber? Public: yes. Private: with a ``subscribe`` grant on one of them."""
        return not private or any(self._subscribe.matches(topic) for topic in topics)

    def payload_for(self, match: str) -> Any:
        """The ``payload`` shown with a subscription whose matcher is ``match``: that of the
        first ``subscribe`` detail with a selector matching ``match`` read as a topic (the
        draft: order matters, the first match wins). None when there is none."""
        for detail in self.details:
            if SUBSCRIBE in detail.actions and detail.matches(match):
                return detail.payload
        return None

    # -- the same, as errors -----------------------------------------------------------------

    def require_subscriber(self) -> None:
        """Raise :class:`AuthError` (401) unless this client may subscribe at all."""
        if not self.can_subscribe:
            raise AuthError(None, "an access token is required to subscribe")

    def require_publish(self, topic: str, *alternatives: str) -> None:
        """Raise :class:`AuthError` unless publishing to ``topic`` (or to one of the
        ``alternatives``) is allowed: 401 without a token, 403 ``insufficient_scope`` with one."""
        if self.may_publish(topic) or any(self.may_publish(t) for t in alternatives):
            return
        if not self.authenticated:
            raise AuthError(None, "an access token is required to publish")
        raise AuthError("insufficient_scope", "the access token does not grant publish here")

    def require_publisher(self) -> None:
        """Raise :class:`AuthError` unless :attr:`can_publish`: 401 without a token, 403 with
        one (checked before reading a body whose every part needs a grant)."""
        if self.can_publish:
            return
        if not self.authenticated:
            raise AuthError(None, "an access token is required to publish")
        raise AuthError("insufficient_scope", "the access token grants no publish")

    def require_read(self, resource: str) -> None:
        """Raise :class:`AuthError` unless :meth:`may_read`: 401 without a token, 403 with one."""
        if self.may_read(resource):
            return
        if not self.authenticated:
            raise AuthError(None, "an access token is required to read this")
        raise AuthError("insufficient_scope", "the access token does not grant subscribe here")

    def require_subscribe_to(self, topic: str) -> None:
        """Raise :class:`AuthError` unless ``subscribe`` is granted on ``topic`` (e.g. a
        subscriptions-API path): 401 without a token, 403 with one."""
        if self.may_subscribe_to(topic):
            return
        if not self.authenticated:
            raise AuthError(None, "an access token is required")
        raise AuthError("insufficient_scope", "the access token does not grant subscribe here")

    def __repr__(self) -> str:
        who = self.subject or ("token" if self.authenticated else "anonymous")
        return f"<Grants {who}: {len(self.details)} detail(s)>"


def _parse_detail(
    entry: Mapping[str, Any], index: int, hub_url: str | None, limits: GrantLimits
) -> Detail:
    where = f"authorization_details[{index}]"
    actions = entry.get("actions")
    if not isinstance(actions, list) or not actions or not all(isinstance(a, str) for a in actions):
        raise _invalid_token(f"{where}.actions must be a non-empty array of strings")
    # The draft: an action this hub does not know grants nothing, and spoils nothing.
    known = frozenset(actions) & _ACTIONS
    topics = entry.get("topics")
    if not isinstance(topics, list) or not topics:
        raise _invalid_token(f"{where}.topics must be a non-empty array")
    if len(topics) > limits.max_topics:
        raise _invalid_token(f"{where}.topics has more than {limits.max_topics} entries")
    selectors: list[Selector] = []
    for position, matcher in enumerate(topics):
        if not isinstance(matcher, dict) or not isinstance(matcher.get("match"), str):
            raise _invalid_token(f"{where}.topics[{position}] must be an object with a match")
        kind = _matcher_type(matcher, f"{where}.topics[{position}]")
        try:
            selectors.append(
                compile_selector(
                    matcher["match"], kind, hub_url=hub_url, max_length=limits.max_pattern_length
                )
            )
        except SelectorError as exc:
            raise _invalid_token(f"{where}.topics[{position}]: {exc}") from None
    payload = entry.get("payload")
    if payload is not None and not isinstance(payload, dict):
        raise _invalid_token(f"{where}.payload must be an object")
    return Detail(known, tuple(selectors), payload)


def _matcher_type(matcher: Mapping[str, Any], where: str) -> MatchType:
    """A topic matcher's type: ``match_type`` (the current draft: ``exact`` or ``urlpattern``,
    case-sensitive), or ``matchType`` of earlier revisions (``Exact``, ``URLPattern``);
    ``exact`` when absent. An unknown type refuses the whole token: ignoring it would change
    what the token grants."""
    if "match_type" in matcher:
        if "matchType" in matcher:
            raise _invalid_token(f"{where} has both match_type and matchType")
        kind = matcher["match_type"]
        if kind not in (MatchType.EXACT.value, MatchType.URL_PATTERN.value):
            raise _invalid_token(f"{where}.match_type is {str(kind)[:40]!r}")
        return MatchType(kind)
    kind = matcher.get("matchType", MatchType.EXACT.value)
    found = MatchType.parse(kind) if isinstance(kind, str) else None
    if found is None:
        raise _invalid_token(f"{where}.matchType is {str(kind)[:40]!r}")
    return found


def _parse_legacy(claim: Any, limits: GrantLimits) -> list[Detail]:
    if not isinstance(claim, dict):
        raise _invalid_token("the mercure claim must be an object")
    details: list[Detail] = []
    for action in (PUBLISH, SUBSCRIBE):
        values = claim.get(action)
        if values is None:
            continue
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise _invalid_token(f"mercure.{action} must be an array of strings")
        if len(values) > limits.max_topics:
            raise _invalid_token(f"mercure.{action} has more than {limits.max_topics} entries")
        if not values:
            continue
        if any(re.search(r"\{[^}]*\}", v) for v in values):
            raise _invalid_token(f"mercure.{action}: URI Templates are not supported")
        try:
            selectors = tuple(
                compile_selector(v, MatchType.EXACT, max_length=limits.max_pattern_length)
                for v in values
            )
        except SelectorError as exc:
            raise _invalid_token(f"mercure.{action}: {exc}") from None
        payload = claim.get("payload") if action == SUBSCRIBE else None
        details.append(Detail(frozenset({action}), selectors, payload, legacy=True))
    return details


def authenticate(
    token: str | None,
    verifier: TokenVerifier,
    *,
    hub_url: str | None = None,
    anonymous_subscribe: bool = False,
    anonymous_publish: bool = False,
    legacy_claims: bool = False,
    limits: GrantLimits = GrantLimits(),  # frozen: one shared default is safe
) -> Grants:
    """The grants of a request: anonymous ones without a token (see :meth:`Grants.anonymous`),
    the token's otherwise. A token that is presented must be valid, even where none is needed:
    raises :class:`AuthError` (401 ``invalid_token``) for any token failure, with the reason
    in ``detail`` only. ``AuthError.detail`` says ``expired`` when the token expired.
    """
    if token is None:
        return Grants.anonymous(subscribe=anonymous_subscribe, publish=anonymous_publish)
    try:
        claims = verifier.verify(token)
    except TokenError as exc:
        raise _invalid_token(("expired: " if exc.expired else "") + str(exc)) from None
    return Grants.from_claims(
        claims,
        hub_url=hub_url,
        legacy_claims=legacy_claims,
        limits=limits,
        anonymous_subscribe=anonymous_subscribe,
        anonymous_publish=anonymous_publish,
    )
