"""Mercure topic matchers: the reserved wildcard ``*``, ``exact`` and ``urlpattern``.

Sans-I/O: strings in, booleans out. This follows the Mercure draft (draft-dunglas-mercure-08 as
revised in dunglas/mercure, "Matcher Types"):

* ``*`` matches every topic, whatever the matcher type (it is recognised before the type).
* ``exact``: a case-sensitive, code-point-for-code-point comparison; no resolution against the
  hub's URL, no Unicode or IRI normalisation.
* ``urlpattern``: the WHATWG URL Pattern standard, case-sensitive (``ignoreCase`` is never
  enabled). A relative pattern, and a relative topic, is resolved against the hub's URL.

Earlier revisions spelled the types ``Exact`` and ``URLPattern`` and the subscribe parameters
``matchExact`` and ``matchURLPattern``: those spellings are accepted too.

>>> compile_selector("https://example.com/books/:id", MatchType.URL_PATTERN).matches(
...     "https://example.com/books/1")
True
>>> compile_selector("https://example.com/books/1").matches("https://example.com/books/01")
False
>>> compile_selector("*", MatchType.URL_PATTERN).matches("anything at all")
True

URL patterns are compiled and matched by the ``urlpattern`` package (a binding of Deno's
``urlpattern`` crate, tested against the standard's web-platform-tests); topics are parsed by its
WHATWG URL parser (the ``url`` crate). Its regular expressions are those of Rust's ``regex``
crate, which runs in time linear in the length of the topic: no catastrophic backtracking, as
the draft asks ("a regular expression engine that guarantees linear-time matching, or an
evaluation cost limit"). So regexp groups follow that dialect: lookarounds, backreferences and
``\\cX`` are refused, while a few things ECMAScript's ``v`` flag would refuse are accepted
(``[^/]``, POSIX classes, ``(?i)``). Every topic component is ASCII by the time it is matched
(the URL parser percent-encodes or punycodes the rest), so the Unicode classes of Rust (``\\w``,
``\\d``) and ECMAScript's ASCII ones give the same answers.

Linear in the topic is not yet cheap: the constant grows with the size of the compiled pattern
(a pattern of a hundred wildcards takes tens of milliseconds per matching 3,000-character topic;
``\\w`` or ``\\p{L}`` compile into hundreds of states each, half a millisecond). So a matcher
is refused, before it is compiled, when it holds more than :data:`MAX_GROUPS` groups (``:name``,
``*``, ``(regexp)`` and the named captures inside regexps) or when its regexp groups weigh more
than :data:`MAX_REGEXP_COST` (see ``_regexp_cost``). Within those bounds the worst patterns we
found compile in about 10 ms and match a 3,000-character topic in about 4 ms; ordinary ones
take microseconds.

Where we depart from the package (and the letter of the standard):

* An absolute pattern is compiled without the hub's URL: the standard would resolve the opaque
  path of ``urn\\:uuid\\:*`` against the hub's directory; only relative patterns inherit.
* Hosts of non-special schemes (``foo://Host/``) are compared case-insensitively (the draft:
  "Host components remain case-insensitive"): the package lower-cases the pattern's, we
  lower-case the topic's.
"""

from __future__ import annotations

import contextlib
import functools
import re
import unicodedata
from collections.abc import Iterable
from enum import StrEnum
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

from urlpattern import URLPattern

if TYPE_CHECKING:
    from urlpattern import URLPatternInit

from sluiceway.urls import normalize_path

__all__ = [
    "DEFAULT_MAX_MATCHERS",
    "MAX_GROUPS",
    "MAX_PATTERN_LENGTH",
    "MAX_REGEXP_COST",
    "RESERVED_PATH",
    "WILDCARD",
    "MatchType",
    "Selector",
    "SelectorError",
    "check_topic",
    "compile_selector",
    "is_reserved_topic",
    "parse_subscribe_query",
]

#: The reserved matcher value that matches every topic, whatever the matcher type.
WILDCARD = "*"
#: Longest matcher accepted (query parameter or token entry); the draft asks for a limit.
MAX_PATTERN_LENGTH = 2048
#: Most matchers accepted in one subscribe request.
DEFAULT_MAX_MATCHERS = 100
#: Most groups in one URL pattern: ``:name``, ``*``, ``(regexp)`` and named captures in regexps.
MAX_GROUPS = 16
#: Most weight of the regexp groups of one URL pattern (see ``_regexp_cost``).
MAX_REGEXP_COST = 500
#: Topics whose path is this, or below it, belong to the hub (subscription events).
RESERVED_PATH = "/.well-known/mercure"


class SelectorError(ValueError):
    """A matcher that cannot be used: malformed, unsupported or over a limit."""


class MatchType(StrEnum):
    """The matcher types of the draft, spelled in their canonical (case-sensitive) form."""

    EXACT = "exact"
    URL_PATTERN = "urlpattern"

    @classmethod
    def parse(cls, name: str) -> MatchType | None:
        """The type a name stands for: the canonical one, or the spelling of earlier
        revisions (``Exact``, ``URLPattern``); None for anything else (names are
        case-sensitive).

        >>> MatchType.parse("urlpattern"), MatchType.parse("URLPattern"), MatchType.parse("Url")
        (<MatchType.URL_PATTERN: 'urlpattern'>, <MatchType.URL_PATTERN: 'urlpattern'>, None)
        """
        return _MATCH_TYPE_NAMES.get(name)


_MATCH_TYPE_NAMES = {
    "exact": MatchType.EXACT,
    "urlpattern": MatchType.URL_PATTERN,
    "Exact": MatchType.EXACT,  # draft revisions before the current one
    "URLPattern": MatchType.URL_PATTERN,
}


# -- topics ------------------------------------------------------------------------------------

# C0 (U+0000-U+001F), DEL (U+007F) and C1 (U+0080-U+009F): forbidden in topics and matchers.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# Format characters (Cf) that Unicode 15 added after the tables of Python 3.11 (14.0).
_NEWER_FORMAT = frozenset(range(0x13439, 0x13440))


def _is_format(char: str) -> bool:
    return unicodedata.category(char) == "Cf" or ord(char) in _NEWER_FORMAT


def check_topic(value: str, what: str = "topic") -> str:
    """Return ``value`` if it is a valid topic (or matcher, id, type) string, else raise
    ValueError.

    The draft: valid UTF-8; no C0 or C1 control character, no DEL, and no format character
    (general category ``Cf``: the bidirectional and zero-width controls, which are invisible
    and make identifiers that look alike).

    >>> check_topic("https://example.com/books/1")
    'https://example.com/books/1'
    >>> check_topic("a\\nb")
    Traceback (most recent call last):
      ...
    ValueError: topic must not contain control characters (found U+000A)
    >>> check_topic("books\\u200b/1")
    Traceback (most recent call last):
      ...
    ValueError: topic must not contain format characters (found U+200B)
    """
    found = _CONTROL.search(value)
    if found is not None:
        raise ValueError(
            f"{what} must not contain control characters (found U+{ord(found[0]):04X})"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: not UTF-8
        raise ValueError(f"{what} is not valid UTF-8") from None
    if not value.isascii():
        invisible = next((char for char in value if _is_format(char)), None)
        if invisible is not None:
            raise ValueError(
                f"{what} must not contain format characters (found U+{ord(invisible):04X})"
            )
    return value


def is_reserved_topic(topic: str, hub_url: str) -> bool:
    """True when ``topic``, resolved against the hub's URL, addresses the hub's own namespace.

    The draft refuses such publications (403): the path is ``/.well-known/mercure`` or below it,
    whatever the scheme or authority. We check the path as a WHATWG URL parser sees it (the way
    URL patterns see topics) and as RFC 3986 resolution sees it, after decoding percent-escaped
    unreserved characters; if either lands in the namespace, the topic is reserved.

    >>> hub = "https://hub.example/.well-known/mercure"
    >>> is_reserved_topic("/.well-known/mercure/subscriptions/exact/a/b", hub)
    True
    >>> is_reserved_topic("https://other.example/.well-known/%6Dercure/x", hub)
    True
    >>> is_reserved_topic("https://example.com/.well-known/mercure-fake", hub)
    False
    """
    paths: list[str] = []
    components = _url_components(topic, _check_hub_url(hub_url))
    if components is not None:
        paths.append(components.get("pathname", ""))
    # ValueError: e.g. an invalid IPv6 literal; the WHATWG view above still counts.
    with contextlib.suppress(ValueError):
        paths.append(urlsplit(urljoin(hub_url, topic)).path)
    for path in paths:
        path = normalize_path(path)
        if path == RESERVED_PATH or path.startswith(RESERVED_PATH + "/"):
            return True
    return False


# -- selectors ---------------------------------------------------------------------------------


class Selector:
    """A compiled topic matcher. Use :func:`compile_selector` (cached) to make one.

    >>> selector = compile_selector("/.well-known/mercure/subscriptions/exact/:topic/:sub",
    ...                             MatchType.URL_PATTERN, hub_url="https://hub.example/")
    >>> selector.matches("/.well-known/mercure/subscriptions/exact/a/b")
    True
    >>> selector.matches("https://hub.example/.well-known/mercure/subscriptions/exact/a/b")
    True
    """

    __slots__ = ("match_type", "pattern")

    def __init__(self, match_type: MatchType, pattern: str) -> None:
        self.match_type = match_type
        self.pattern = pattern

    @property
    def is_wildcard(self) -> bool:
        return False

    @property
    def path_prefix(self) -> str | None:
        """The literal beginning of the paths this selector can match: the exact path, or a
        URL pattern's pathname up to its first group or modifier (``/files/*`` → ``/files/``);
        None for ``*`` and for exact topics that are not paths."""
        return self.pattern if self.pattern.startswith("/") else None

    def matches(self, topic: str) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<Selector {self.match_type.value} {self.pattern!r}>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Selector):
            return NotImplemented
        return (self.match_type, self.pattern) == (other.match_type, other.pattern)

    def __hash__(self) -> int:
        return hash((self.match_type, self.pattern))


class _AnySelector(Selector):
    __slots__ = ()

    @property
    def is_wildcard(self) -> bool:
        return True

    @property
    def path_prefix(self) -> str | None:
        return None

    def matches(self, topic: str) -> bool:
        return True


class _ExactSelector(Selector):
    __slots__ = ()

    def matches(self, topic: str) -> bool:
        return topic == self.pattern


class _URLPatternSelector(Selector):
    __slots__ = ("_compiled", "_hub_url")

    def __init__(self, pattern: str, compiled: URLPattern, hub_url: str | None) -> None:
        super().__init__(MatchType.URL_PATTERN, pattern)
        self._compiled = compiled
        self._hub_url = hub_url

    @property
    def path_prefix(self) -> str | None:
        return _literal_prefix(self._compiled.pathname)

    def matches(self, topic: str) -> bool:
        # A topic that is not a URL (even relative to the hub) matches nothing: test() says False.
        if self._compiled.test(topic, self._hub_url):
            return True
        if not _MAYBE_UPPER_CASE_HOST.match(topic):
            return False
        # A non-special scheme's host keeps its case in a URL; compare it in lower case.
        components = _url_components(topic, self._hub_url)
        if components is None:
            return False
        hostname = components.get("hostname", "")
        if hostname == hostname.lower():
            return False
        components["hostname"] = hostname.lower()
        return self._compiled.test(components)


# What ends the literal text of a URL pattern component: a group, a wildcard, a modifier.
_PATTERN_SYNTAX = frozenset(":*({}?+")


def _literal_prefix(component: str) -> str:
    """The fixed text a URL pattern component starts with (``\\`` escapes resolved).

    >>> _literal_prefix("/files/:name"), _literal_prefix(r"/a\\:b/*"), _literal_prefix("*")
    ('/files/', '/a:b/', '')
    """
    out: list[str] = []
    index = 0
    while index < len(component):
        char = component[index]
        if char == "\\":
            out.append(component[index + 1 : index + 2])
            index += 2
            continue
        if char in _PATTERN_SYNTAX:
            break
        out.append(char)
        index += 1
    # To be safe, a modifier right after fixed text is taken to make its last character
    # optional ("/files?" then names "/file..."): that character is left out.
    if index < len(component) and component[index] in "?+" and out:
        out.pop()
    return "".join(out)


def compile_selector(
    pattern: str,
    match_type: MatchType | str = MatchType.EXACT,
    *,
    hub_url: str | None = None,
    max_length: int = MAX_PATTERN_LENGTH,
) -> Selector:
    """Compile a matcher (cached: a bounded LRU of 4,096 selectors).

    ``hub_url`` (the hub's absolute URL) is needed for relative URL patterns and to match
    relative topics against URL patterns. Raises :class:`SelectorError`.

    >>> compile_selector("https://example.com/:category/*", "urlpattern").matches(
    ...     "https://example.com/products/")
    True
    >>> compile_selector("/x/*", "urlpattern")
    Traceback (most recent call last):
      ...
    sluiceway.mercure.selectors.SelectorError: a relative URL pattern needs the hub's URL (hub_url)
    """
    kind = match_type if isinstance(match_type, MatchType) else MatchType.parse(match_type)
    if kind is None:
        raise SelectorError(
            f"unknown matcher type {str(match_type)[:40]!r}: use 'exact' or 'urlpattern'"
        )
    if len(pattern) > max_length:
        raise SelectorError(f"matcher is longer than {max_length} characters")
    return _compile_cached(pattern, kind, hub_url)


@functools.lru_cache(maxsize=4096)
def _compile_cached(pattern: str, kind: MatchType, hub_url: str | None) -> Selector:
    try:
        check_topic(pattern, "matcher")
    except ValueError as exc:
        raise SelectorError(str(exc)) from None
    if pattern == WILDCARD:  # reserved before the matcher type is looked at
        return _AnySelector(kind, pattern)
    if kind is MatchType.EXACT:
        return _ExactSelector(kind, pattern)
    if hub_url is not None:
        _check_hub_url(hub_url)
    _check_cost(pattern)
    try:
        compiled = URLPattern(pattern)
    except ValueError as exc:
        # Only a relative pattern (one without a scheme) inherits from the hub's URL.
        if not str(exc).startswith("a relative input"):
            raise SelectorError(_error_message(str(exc))) from None
        if hub_url is None:
            raise SelectorError("a relative URL pattern needs the hub's URL (hub_url)") from None
        try:
            compiled = URLPattern(pattern, hub_url)
        except ValueError as error:
            raise SelectorError(_error_message(str(error))) from None
    return _URLPatternSelector(pattern, compiled, hub_url)


def parse_subscribe_query(
    params: Iterable[tuple[str, str]],
    *,
    hub_url: str | None = None,
    max_matchers: int = DEFAULT_MAX_MATCHERS,
    max_length: int = MAX_PATTERN_LENGTH,
    legacy_topic: bool = False,
) -> list[Selector]:
    """The matchers of a subscribe request, from its query parameters (name, value) in order.

    ``match`` and ``match_exact`` give exact matchers, ``match_urlpattern`` URL patterns (and
    ``matchExact`` / ``matchURLPattern``, as earlier revisions named them). Any other name in
    the reserved ``match`` namespace (beginning with "match", in any case) is an error, as are
    values with control or format characters, more than ``max_matchers`` matchers, or none at
    all. Identical matchers are kept once. Raises :class:`SelectorError` (400).

    ``legacy_topic``: also accept the ``topic`` parameter of draft 07 and earlier as an
    exact matcher (or ``*``). Its URI Templates are no longer part of Mercure: a value with
    a ``{`` expression is refused rather than silently compared as text.

    >>> [str(s.pattern) for s in parse_subscribe_query(
    ...     [("match", "https://example.com/foo"), ("match_urlpattern", "https://example.com/bar/:id"),
    ...      ("last_event_id", "x")])]
    ['https://example.com/foo', 'https://example.com/bar/:id']
    >>> parse_subscribe_query([("match_regexp", "x")])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
      ...
    sluiceway.mercure.selectors.SelectorError: unknown matcher parameter 'match_regexp': ...
    """
    selectors: dict[Selector, None] = {}
    count = 0
    for name, value in params:
        if name.lower().startswith("match"):
            kind = _PARAMETERS.get(name)
            if kind is None:
                raise SelectorError(
                    f"unknown matcher parameter {name[:40]!r}: "
                    "use match, match_exact or match_urlpattern"
                )
        elif legacy_topic and name == "topic":
            if re.search(r"\{[^}]*\}", value):
                raise SelectorError(
                    "URI Templates in 'topic' are not supported (removed from Mercure); "
                    "use match_urlpattern"
                )
            kind = MatchType.EXACT
        else:
            continue
        count += 1
        if count > max_matchers:
            raise SelectorError(f"too many matchers: at most {max_matchers} per request")
        try:
            selector = compile_selector(value, kind, hub_url=hub_url, max_length=max_length)
        except SelectorError as exc:
            raise SelectorError(f"{name}={value[:80]!r}: {exc}") from None
        selectors[selector] = None
    if not selectors:
        raise SelectorError("at least one match (or match_urlpattern) parameter is required")
    return list(selectors)


_PARAMETERS = {
    "match": MatchType.EXACT,
    "match_exact": MatchType.EXACT,
    "match_urlpattern": MatchType.URL_PATTERN,
    # As earlier revisions of the draft named them.
    "matchExact": MatchType.EXACT,
    "matchURLPattern": MatchType.URL_PATTERN,
}


# -- the package's URL parser ------------------------------------------------------------------

_ANY_URL = URLPattern({})  # every component "*": exec() hands back a URL's parsed components
# An absolute URL with a non-special scheme and an upper-case letter in its authority.
_MAYBE_UPPER_CASE_HOST = re.compile(
    r"[\x00-\x20]*(?!(?i:https?|wss?|ftp|file):)[A-Za-z][A-Za-z0-9+.\-]*://[^/?#]*[A-Z]"
)


def _url_components(url: str, base: str | None) -> URLPatternInit | None:
    """The components of ``url`` (resolved against ``base``) as the WHATWG URL parser sees
    them, or None if it is not a URL."""
    result = _ANY_URL.exec(url, base)
    if result is None:
        return None
    return {
        "protocol": result["protocol"]["input"],
        "username": result["username"]["input"],
        "password": result["password"]["input"],
        "hostname": result["hostname"]["input"],
        "port": result["port"]["input"],
        "pathname": result["pathname"]["input"],
        "search": result["search"]["input"],
        "hash": result["hash"]["input"],
    }


@functools.lru_cache(maxsize=64)
def _check_hub_url(hub_url: str) -> str:
    components = _url_components(hub_url, None)
    if components is None or components.get("protocol") not in ("http", "https"):
        raise SelectorError(f"the hub URL must be an absolute http(s) URL: {hub_url[:100]!r}")
    return hub_url


def _error_message(message: str) -> str:
    if message == "regexp error":  # all the package says
        return (
            "invalid or unsupported regular expression in a regexp group (the syntax is that "
            "of Rust's regex crate: no lookarounds or backreferences)"
        )
    return f"invalid URL pattern: {message}"


# -- cost limits -------------------------------------------------------------------------------

_WIDE = 50  # \w \W \D \S \p{..} \P{..}: hundreds of UTF-8 automaton states each
_CLASS = 10  # . \d \s [^...]: a few dozen
_WIDE_ESCAPES = frozenset("wWDSpP")
_CLASS_ESCAPES = frozenset("ds")
_BOUNDS = re.compile(r"\{\s*(\d*)\s*(?:(,)\s*(\d*))?\s*\}")


def _number(digits: str) -> int:
    return int(digits) if len(digits) <= 6 else 10**6


def _check_cost(pattern: str) -> None:
    """Refuse a URL pattern that would be slow to compile or to match (see the module's notes).

    This scans the constructor string as the standard's tokenizer does: ``\\`` escapes the next
    code point, ``(`` opens a regexp group that ends at its balanced ``)``, ``:`` followed by a
    name is a named group and ``*`` a wildcard (or a modifier: counted too, it repeats a group).
    """
    groups = cost = 0
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            index += 2
            continue
        if char == "(":
            end = _regexp_end(pattern, index + 1)
            weight, captures = _regexp_cost(pattern[index + 1 : end])
            groups += 1 + captures
            cost += weight
            index = end + 1
            continue
        following = pattern[index + 1 : index + 2]
        if char == "*" or (char == ":" and (following.isidentifier() or following == "$")):
            groups += 1
        index += 1
    if groups > MAX_GROUPS:
        raise SelectorError(f"URL pattern has more than {MAX_GROUPS} groups")
    if cost > MAX_REGEXP_COST:
        raise SelectorError(
            "URL pattern is too complex: its regexp groups would compile into too large an "
            "automaton (fewer repetitions, \\w or \\p{...} classes)"
        )


def _regexp_end(pattern: str, index: int) -> int:
    depth = 1
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            index += 1
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return index
        index += 1
    return index  # unbalanced: the package refuses it


def _regexp_cost(regexp: str) -> tuple[int, int]:
    """An estimate of the size of the automaton a regexp compiles into, and its named captures.

    The size is the weight of each atom (1 for a literal, more for a class; see ``_WIDE`` and
    ``_CLASS``), multiplied by the bounds of the counted repetitions ``{n,m}`` around it.
    """
    stack = [[0, 0]]  # per open group: [its weight so far, the weight of its last atom]
    index = captures = 0
    while index < len(regexp):
        char = regexp[index]
        if char == "\\":
            escape = regexp[index + 1 : index + 2]
            atom = _WIDE if escape in _WIDE_ESCAPES else _CLASS if escape in _CLASS_ESCAPES else 1
            index += 2
        elif char == "[":
            index, atom = _class_cost(regexp, index)
        elif char == "(":
            stack.append([0, 0])
            captures += regexp.startswith(("?<", "?P<"), index + 1) and not regexp.startswith(
                ("?<=", "?<!"), index + 1
            )
            index += 1
            continue
        elif char == ")" and len(stack) > 1:
            atom = stack.pop()[0]
            index += 1
        elif char == "{" and (bounds := _BOUNDS.match(regexp, index)):
            low, comma, high = bounds.groups()
            count = max(_number(high) if high else _number(low or "0") + bool(comma), 1)
            frame = stack[-1]
            frame[0] += frame[1] * (count - 1)
            frame[1] *= count
            index = bounds.end()
            continue
        elif char in "*+?| ":  # " ": in (?x) mode "\\w {9}" is "\\w{9}", so no atom of its own
            index += 1
            continue
        else:
            atom = _CLASS if char == "." else 1
            index += 1
        frame = stack[-1]
        frame[0] += atom
        frame[1] = atom
    return sum(frame[0] for frame in stack), captures


def _class_cost(regexp: str, start: int) -> tuple[int, int]:
    """The end of the character class at ``start`` and its weight (one per code point written,
    plus its class escapes; at least ``_CLASS`` if negated). Like Rust's ``regex``, a ``]``
    right after ``[`` or ``[^`` is a literal, and classes nest."""
    index, depth, cost = start + 1, 1, 0
    negated = regexp[index : index + 1] == "^"
    index += negated
    if regexp[index : index + 1] == "]":
        index += 1
        cost += 1
    while index < len(regexp) and depth:
        char = regexp[index]
        if char == "\\":
            escape = regexp[index + 1 : index + 2]
            cost += _WIDE if escape in _WIDE_ESCAPES else _CLASS if escape in _CLASS_ESCAPES else 1
            index += 2
            continue
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        cost += 1
        index += 1
    return index, max(cost, _CLASS if negated else 1)
