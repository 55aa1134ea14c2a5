"""Admission: who may do what, decided in one place for every path into the server.

Every request — an ASGI route, the native stream path (:mod:`sluiceway.server.native`), a
WebSocket handshake, Mercure, the LLM faces — is described once by :class:`RequestFacts`, read
from its ASGI scope, and judged by the same :class:`Admission`, in three steps:

1. **The request itself** (:meth:`Admission.check_request`): its ``Host`` (while bound to
   loopback only loopback names and ``allowed_hosts`` are answered, so that DNS rebinding
   cannot make a hostile page same-origin), and, for writes and WebSocket handshakes, the web
   page it comes from (``Origin``/``Sec-Fetch-Site``: other origins only as CORS allows).
2. **Who sent it** (:meth:`Admission.grants`): the publish key (everything), an access token
   (its ``mercure`` authorization details), or nothing (the anonymous settings).
3. **What it touches**: a topic, a named resource, or a run (generation, job) and its owner,
   under the rules of :mod:`sluiceway.auth.resources`.

Sans-I/O: facts in, grants or a refusal out. A fast path asks the same questions and, when the
answer is anything but a plain yes, leaves the request to the ASGI route, which refuses it with
the same answer: no path carries its own copy of the rules.

>>> admission = Admission(AdmissionPolicy(loopback_only=True))
>>> facts = RequestFacts.from_scope({"type": "http", "method": "GET", "path": "/topics/a",
...     "query_string": b"", "headers": [(b"host", b"evil.example:8000")]})
>>> admission.check_request(facts).status
421
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

from starlette.requests import cookie_parser

from sluiceway.auth.grants import (
    ACCESS_TOKEN_COOKIE,
    ACCESS_TOKEN_QUERY,
    PUBLISH,
    SUBSCRIBE,
    AuthError,
    Grants,
    authenticate,
    token_from,
)
from sluiceway.auth.resources import (
    METRICS,
    is_internal_topic,
    may_act_on_run,
    may_publish_topic,
    may_read_topic,
    may_use,
)
from sluiceway.auth.tokens import TokenVerifier

__all__ = [
    "TOKEN_PARAMETERS",
    "Admission",
    "AdmissionPolicy",
    "Refusal",
    "RequestFacts",
    "redact_tokens",
]

#: The token's places in earlier Mercure revisions, read after the current ones: a cookie
#: (``mercureAccessToken``), and in draft 07 a parameter and a cookie.
OLDER_COOKIE = "mercureAccessToken"
LEGACY_COOKIE = "mercureAuthorization"
LEGACY_QUERY = "authorization"
#: Every query parameter a token may come in (their values are never logged).
TOKEN_PARAMETERS = (ACCESS_TOKEN_QUERY, LEGACY_QUERY)

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Headers a proxy adds to say whom it forwards for.
_FORWARDING_HEADERS = frozenset({b"x-forwarded-for", b"forwarded", b"x-real-ip"})


class Refusal(Exception):
    """A request refused before any resource is looked at: ``status`` (400, 403, 421),
    ``code`` and ``detail`` for the JSON error body.

    >>> Refusal(421, "host_not_allowed", "no").status
    421
    """

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


# -- facts -------------------------------------------------------------------------------------


@dataclass(slots=True)
class RequestFacts:
    """What admission needs to know of a request, read from its ASGI scope in one pass over
    its headers (the query string and cookies are parsed only when asked for)."""

    kind: str  # "http" or "websocket"
    method: str
    path: str
    host: str | None = None
    origin: str | None = None
    fetch_site: str | None = None
    referer: str | None = None
    authorization: str | None = None
    api_key: str | None = None
    cookie: str | None = None
    #: It came through a proxy: it says whom the proxy forwards for (``X-Forwarded-For``,
    #: ``Forwarded``, ``X-Real-IP``).
    forwarded: bool = False
    query_string: bytes = b""
    _query: list[tuple[str, str]] | None = field(default=None, repr=False)
    _cookies: dict[str, str] | None = field(default=None, repr=False)

    @classmethod
    def from_scope(cls, scope: Mapping[str, Any]) -> RequestFacts:
        facts = cls(
            kind=scope["type"],
            method=scope.get("method", "GET"),
            path=scope.get("path", ""),
            query_string=scope.get("query_string", b""),
        )
        for name, value in scope.get("headers", ()):
            if name == b"host":
                facts.host = value.decode("latin-1")
            elif name == b"origin":
                facts.origin = value.decode("latin-1")
            elif name == b"sec-fetch-site":
                facts.fetch_site = value.decode("latin-1")
            elif name == b"referer":
                facts.referer = value.decode("latin-1")
            elif name == b"authorization":
                facts.authorization = value.decode("latin-1")
            elif name == b"x-api-key":
                facts.api_key = value.decode("latin-1")
            elif name == b"cookie":
                text = value.decode("latin-1")
                facts.cookie = text if facts.cookie is None else f"{facts.cookie}; {text}"
            elif name in _FORWARDING_HEADERS:
                facts.forwarded = True
        return facts

    @property
    def query(self) -> list[tuple[str, str]]:
        """The query's (name, value) pairs, percent-decoded, as Starlette reads them."""
        if self._query is None:
            text = self.query_string.decode("latin-1")
            self._query = parse_qsl(text, keep_blank_values=True) if text else []
        return self._query

    @property
    def from_a_page(self) -> bool:
        """Does the request say which web page it comes from?"""
        return self.origin is not None or self.referer is not None or self.fetch_site is not None

    @property
    def cookies(self) -> dict[str, str]:
        if self._cookies is None:
            self._cookies = cookie_parser(self.cookie) if self.cookie else {}
        return self._cookies

    def parameter(self, name: str) -> str | None:
        """The one value of a query parameter; a repeated token parameter is ambiguous
        (:class:`AuthError`, 400)."""
        values = [value for key, value in self.query if key == name]
        if len(values) > 1:
            raise AuthError("invalid_request", f"the {name} parameter is repeated")
        return values[0] if values else None


# -- the policy ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AdmissionPolicy:
    """The settings admission follows (see :class:`~sluiceway.server.settings.Settings`).

    ``loopback_only``: the server is bound to loopback, so only loopback host names and
    ``allowed_hosts`` are answered. ``allowed_hosts``: more names (``example.com``, with a
    port ``example.com:8443``, a domain and its subdomains ``.example.com``, or ``*``).
    """

    verifier: TokenVerifier = field(default_factory=TokenVerifier)
    publish_key: str | None = None
    hub_url: str | None = None
    #: The cookie a browser's token comes in (the draft's recommended name by default).
    token_cookie: str = ACCESS_TOKEN_COOKIE
    anonymous_subscribe: bool = True
    anonymous_publish: bool = False
    #: ``anonymous_publish`` for requests that came through a proxy (:attr:`RequestFacts.
    #: forwarded`): a proxy may forward anyone's.
    anonymous_publish_via_proxy: bool = False
    loopback_only: bool = True
    allowed_hosts: Sequence[str] = ()
    cors_origins: Sequence[str] = ()
    #: ``/metrics`` and the counts of ``/healthz`` for anyone (else: a grant on ``/metrics``).
    status_public: bool = True


class Admission:
    """The one admission check (see the module doc), built once per app from its policy."""

    def __init__(self, policy: AdmissionPolicy) -> None:
        self.policy = policy
        self._publish_key = policy.publish_key.encode() if policy.publish_key else None
        # Immutable: one object serves every request of its kind.
        self._anonymous = Grants.anonymous(
            subscribe=policy.anonymous_subscribe, publish=policy.anonymous_publish
        )
        self._anonymous_forwarded = Grants.anonymous(
            subscribe=policy.anonymous_subscribe,
            publish=policy.anonymous_publish and policy.anonymous_publish_via_proxy,
        )
        self._everything = Grants.full()
        self._hosts = _HostRule(policy.allowed_hosts, loopback_only=policy.loopback_only)
        self._cors = frozenset(policy.cors_origins)

    # -- 1. the request itself -------------------------------------------------------------

    def check_request(self, facts: RequestFacts) -> Refusal | None:
        """A refusal for a request no route may answer (a foreign ``Host``; a write or a
        WebSocket handshake from a page of another origin), else None."""
        if facts.host is not None and not self._hosts.allows(facts.host):
            shown = facts.host[:100]
            return Refusal(
                421,
                "host_not_allowed",
                f"this server does not answer for host {shown!r} (see allowed_hosts)",
            )
        if facts.kind == "websocket" or facts.method not in _SAFE_METHODS:
            origin = self._foreign_origin(facts)
            if origin is not None:
                action = "connections" if facts.kind == "websocket" else "writes"
                return Refusal(
                    403,
                    "cross_origin",
                    f"{action} from {origin[:100]!r} are not allowed (see cors_allow_origins)",
                )
        return None

    def _foreign_origin(self, facts: RequestFacts) -> str | None:
        """The requesting page's origin when it is another one and not allowed, else None.
        Browsers say where a request comes from (``Sec-Fetch-Site``, and ``Origin`` on every
        POST and WebSocket handshake); other clients send neither and are not affected."""
        origin, fetch_site = facts.origin, facts.fetch_site
        if origin is None and fetch_site is None:
            if facts.referer is None:
                return None  # not a browser page (or a browser's own navigation)
            origin = _origin_of(facts.referer)  # what an old client says of its page
        if fetch_site in ("same-origin", "none"):
            return None
        # No Sec-Fetch-Site (an older browser; WebSocket handshakes): compare host and port.
        if fetch_site is None and origin is not None and _netloc(origin) == facts.host:
            return None
        if "*" in self._cors or (origin is not None and origin in self._cors):
            return None
        return origin or "another site"

    # -- 2. who sent it ----------------------------------------------------------------------

    def token(self, facts: RequestFacts, *, api_keys: bool = False) -> str | None:
        """The request's access token from its first place, or None (see :meth:`credentials`)."""
        return self.credentials(facts, api_keys=api_keys)[0]

    def credentials(
        self, facts: RequestFacts, *, api_keys: bool = False
    ) -> tuple[str | None, bool]:
        """The request's access token from its first place, or None, and whether it came in a
        cookie: the Mercure draft's places and precedence (:func:`~sluiceway.auth.token_from`:
        the ``Authorization: Bearer`` header, the ``access_token`` parameter, the
        ``token_cookie``), then earlier revisions' (the ``mercureAccessToken`` cookie; the
        ``authorization`` parameter, the ``mercureAuthorization`` cookie). ``api_keys``: last,
        ``x-api-key`` (the Anthropic SDK's header). Raises :class:`AuthError` (400) for a
        malformed Bearer header or an empty or repeated token parameter."""
        headers = {"Authorization": facts.authorization} if facts.authorization else {}
        query: dict[str, str] = {}
        if facts.query_string:
            for name in TOKEN_PARAMETERS:
                if (value := facts.parameter(name)) is not None:
                    query[name] = value
        token = token_from(headers, {}, query)
        if token is not None:
            return token, False
        cookies = facts.cookies
        token = cookies.get(self.policy.token_cookie) or cookies.get(OLDER_COOKIE)
        if token:  # an empty cookie is a browser's cleared one: none
            return token, True
        token = token_from({}, {}, query, query_name=LEGACY_QUERY)
        if token is not None:
            return token, False
        token = cookies.get(LEGACY_COOKIE)
        if token:
            return token, True
        return (facts.api_key or None) if api_keys else None, False

    def grants(self, facts: RequestFacts, *, api_keys: bool = False) -> Grants:
        """The grants of this request; raises :class:`AuthError` for a bad token (401) or a
        malformed one (400). A token that is presented must be valid, even where none is
        needed.

        ``api_keys``: the request comes from an LLM SDK, which always sends an API key: one
        that is not a JWT (or any, while no token key is configured) counts as no token.
        """
        anonymous = self._anonymous_forwarded if facts.forwarded else self._anonymous
        if not (facts.authorization or facts.cookie or facts.query_string or facts.api_key):
            return anonymous  # nothing could carry a token: the common case, fast
        token, from_cookie = self.credentials(facts, api_keys=api_keys)
        if token is None:
            return anonymous
        if from_cookie and facts.method not in _SAFE_METHODS and not facts.from_a_page:
            # A cookie rides along with any request a browser makes: a write it authorizes
            # must say which page it comes from (the draft; CSRF).
            raise AuthError(
                "invalid_request", "a write authorized by a cookie must come with Origin"
            )
        if self._publish_key is not None and hmac.compare_digest(token.encode(), self._publish_key):
            return self._everything
        verifier = self.policy.verifier
        if api_keys and (token.count(".") != 2 or not verifier.configured):
            return anonymous  # an API key for the upstream's SDK, not a token of ours
        return authenticate(
            token,
            verifier,
            hub_url=self.policy.hub_url,
            legacy_claims=True,  # the mercure.publish / mercure.subscribe claims
            anonymous_subscribe=self.policy.anonymous_subscribe,
            anonymous_publish=anonymous.anonymous_publish,
        )

    # -- 3. what it touches ----------------------------------------------------------------

    @staticmethod
    def check_topic_names(topics: Iterable[str]) -> None:
        """The server's own topics (``sluiceway.*``) are not for the topic API (403)."""
        for topic in topics:
            if is_internal_topic(topic):
                raise Refusal(403, "internal_topic", f"{topic[:80]!r} is kept by the server")

    def require_topics_read(self, grants: Grants, topics: Iterable[str]) -> None:
        """Raise unless ``grants`` may read every one of ``topics`` (private ones included:
        see :func:`~sluiceway.auth.resources.may_read_topic`)."""
        topics = list(topics)
        self.check_topic_names(topics)
        for topic in topics:
            if not may_read_topic(grants, topic):
                raise _denied(grants, SUBSCRIBE)

    def may_read_topics(self, grants: Grants, topics: Iterable[str]) -> bool:
        return all(may_read_topic(grants, topic) for topic in topics)

    def require_topic_publish(self, grants: Grants, topic: str) -> None:
        self.check_topic_names([topic])
        if not may_publish_topic(grants, topic):
            raise _denied(grants, PUBLISH)

    @staticmethod
    def require(grants: Grants, action: str, resource: str, *alternatives: str) -> None:
        """Raise unless ``grants`` may ``action`` on a named resource (or on one of the
        ``alternatives``): files, exports, the proxy, the collections of runs."""
        if not any(may_use(grants, action, name) for name in (resource, *alternatives)):
            raise _denied(grants, action)

    @staticmethod
    def may_act_on_run(
        grants: Grants, action: str, collection: str, run_id: str, owner: str | None
    ) -> bool:
        return may_act_on_run(grants, action, collection, run_id, owner)

    @staticmethod
    def require_run(
        grants: Grants,
        action: str,
        collection: str,
        run_id: str,
        owner: str | None,
        *,
        exists: bool = True,
    ) -> None:
        """Raise unless ``grants`` may read (``subscribe``) or cancel (``publish``) a
        generation or job (see :func:`~sluiceway.auth.resources.may_act_on_run`)."""
        if not may_act_on_run(grants, action, collection, run_id, owner, exists=exists):
            raise _denied(grants, action)

    def may_see_status(self, grants: Grants) -> bool:
        """May ``grants`` see the server's status (``/metrics``, the counts of ``/healthz``)?
        Anyone while it is public; otherwise only a grant naming ``/metrics`` (anonymous
        reading does not open it)."""
        return self.policy.status_public or grants.names(SUBSCRIBE, METRICS)

    def require_status(self, grants: Grants) -> None:
        if not self.may_see_status(grants):
            raise _denied(grants, SUBSCRIBE)


def _denied(grants: Grants, action: str) -> AuthError:
    verb = "publish" if action == PUBLISH else "subscribe"
    if not grants.authenticated:
        return AuthError(None, f"an access token is required to {verb} here")
    return AuthError("insufficient_scope", f"the access token does not grant {verb} here")


# -- hosts -------------------------------------------------------------------------------------


def _netloc(origin: str) -> str:
    return origin.partition("://")[2].rstrip("/")


def _origin_of(url: str) -> str:
    """The origin (``scheme://host[:port]``) a URL such as a ``Referer`` names.

    >>> _origin_of("http://evil.example:8080/a/b?c")
    'http://evil.example:8080'
    """
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0].split('?', 1)[0]}"


def split_host(host: str) -> tuple[str, str | None]:
    """A ``Host`` value as (lower-case name without a trailing dot, port or None).

    >>> split_host("[::1]:8000"), split_host("LocalHost.:80"), split_host("example.com")
    (('::1', '8000'), ('localhost', '80'), ('example.com', None))
    """
    host = host.strip()
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
    else:
        name, colon, port_text = host.rpartition(":")
        if not colon:
            name, port_text = host, ""
        port = port_text if colon else None
    return name.lower().rstrip("."), port


def is_loopback_name(name: str) -> bool:
    """``localhost`` or a loopback address (``127.0.0.0/8``, ``::1``): never a name a hostile
    DNS server answers for. (Any other host name is taken to be reachable from elsewhere.)"""
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class _HostRule:
    """Which ``Host`` values are answered (see :class:`AdmissionPolicy`)."""

    #: Answers remembered (a server sees few distinct Host values; every connection asks).
    CACHE_SIZE = 256

    def __init__(self, allowed: Sequence[str], *, loopback_only: bool) -> None:
        self.any = "*" in allowed or (not loopback_only and not allowed)
        self.exact: set[tuple[str, str | None]] = set()
        self.domains: list[str] = []
        self._answers: dict[str, bool] = {}
        for entry in allowed:
            if entry == "*":
                continue
            name, port = split_host(entry)
            if name.startswith("."):
                self.domains.append(name)
            else:
                self.exact.add((name, port))

    def allows(self, host: str) -> bool:
        if self.any:
            return True
        answer = self._answers.get(host)
        if answer is None:
            answer = self._judge(host)
            if len(self._answers) >= self.CACHE_SIZE:
                self._answers.clear()  # a scan of made-up names: start again
            self._answers[host] = answer
        return answer

    def _judge(self, host: str) -> bool:
        name, port = split_host(host)
        if port is not None and not port.isdigit():
            return False
        if is_loopback_name(name):
            return True
        if (name, None) in self.exact or (name, port) in self.exact:
            return True
        return any(name == domain[1:] or name.endswith(domain) for domain in self.domains)


# -- logs --------------------------------------------------------------------------------------

_TOKEN_PARAMETER = re.compile(r"(?P<name>[^&=?#]+)=(?P<value>[^&#]*)")


def redact_tokens(target: str) -> str:
    """A request target as it may be logged: the values of token parameters (names compared
    percent-decoded, as routes read them) replaced, so access logs hold no credentials.

    >>> redact_tokens("/topics/a?access_token=eyJ.x.y&last_event_id=1")
    '/topics/a?access_token=[redacted]&last_event_id=1'
    >>> redact_tokens("/.well-known/mercure?%61uthorization=k")
    '/.well-known/mercure?%61uthorization=[redacted]'
    """
    path, mark, query = target.partition("?")
    if not mark:
        return target

    def replace(match: re.Match[str]) -> str:
        name = unquote(match["name"].replace("+", " "))
        if name in TOKEN_PARAMETERS:
            return f"{match['name']}=[redacted]"
        return match[0]

    return path + "?" + _TOKEN_PARAMETER.sub(replace, query)
