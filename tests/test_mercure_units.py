"""Mercure, sans-I/O: topic matchers (exact, ``*``, URL Pattern), the publish form, the SSE
encoding of an update, reconnection ids and the documents of active subscriptions.

The URL Pattern cases come from the Mercure draft (draft-dunglas-mercure-08 as revised in
dunglas/mercure) and from the examples of the WHATWG URL Pattern standard itself.
"""

from __future__ import annotations

import re
import time

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluiceway.ids import InvalidEventId, Position
from sluiceway.mercure import (
    EARLIEST,
    MatchType,
    MercureUpdate,
    PublishError,
    SelectorError,
    check_topic,
    compile_selector,
    encode_update,
    hub_event_id,
    is_reserved_topic,
    new_subscriber_id,
    parse_last_event_id,
    parse_publish_form,
    parse_subscribe_query,
    parse_subscriptions_path,
    requested_last_event_id,
    response_last_event_id,
    subscription_document,
    subscription_topic,
    subscription_update,
    subscriptions_collection,
)
from sluiceway.mercure.publication import hub_link
from sluiceway.sse import Parser

HUB = "https://hub.example/.well-known/mercure"
URLP = MatchType.URL_PATTERN


def pattern(text: str, hub_url: str | None = HUB):
    return compile_selector(text, URLP, hub_url=hub_url)


# -- Exact and the wildcard --------------------------------------------------------------------


def test_exact_is_a_plain_code_point_comparison() -> None:
    selector = compile_selector("https://example.com/books/1")
    assert selector.matches("https://example.com/books/1")
    assert not selector.matches("https://EXAMPLE.com/books/1")  # no URL canonicalisation
    assert not selector.matches("https://example.com/books/1/")
    assert not selector.matches("https://example.com:443/books/1")
    # No Unicode normalisation: NFC and NFD spellings are different topics.
    assert not compile_selector("caf\u00e9").matches("cafe\u0301")
    # No resolution against the hub's URL.
    relative = compile_selector("/books/1", hub_url=HUB)
    assert relative.matches("/books/1")
    assert not relative.matches("https://hub.example/books/1")


@pytest.mark.parametrize("match_type", [MatchType.EXACT, MatchType.URL_PATTERN, "Exact"])
def test_the_reserved_wildcard_matches_everything_whatever_the_type(match_type) -> None:
    selector = compile_selector("*", match_type)
    assert selector.is_wildcard
    for topic in ("*", "", "urn:x", "https://example.com/a?b#c", "not a url"):
        assert selector.matches(topic)


def test_selectors_are_cached() -> None:
    first = compile_selector("https://example.com/:a", URLP)
    assert compile_selector("https://example.com/:a", "URLPattern") is first
    assert compile_selector("https://example.com/:a", URLP) == first
    assert first != compile_selector("https://example.com/:a", MatchType.EXACT)


def test_unknown_matcher_type_and_bad_matchers_are_refused() -> None:
    with pytest.raises(SelectorError, match="unknown matcher type"):
        compile_selector("a", "URLPATTERN")
    with pytest.raises(SelectorError, match="format characters"):
        compile_selector("a\u200bb")
    with pytest.raises(SelectorError, match="control characters"):
        compile_selector("a\x85b")
    with pytest.raises(SelectorError, match="longer than"):
        compile_selector("a" * 11, max_length=10)
    with pytest.raises(SelectorError, match="needs the hub's URL"):
        compile_selector("/books/:id", URLP)
    with pytest.raises(SelectorError, match="hub URL"):
        compile_selector("/books/:id", URLP, hub_url="urn:not-a-hub")


# -- URL Pattern -------------------------------------------------------------------------------

# (pattern, base, matching topics, non-matching topics)
SPEC_EXAMPLES = [
    # The Mercure draft.
    (
        "https://example.com/bar/:id",
        None,
        ["https://example.com/bar/1", "https://example.com/bar/abc?x=1#y"],
        ["https://example.com/bar/", "https://example.com/bar/1/2", "https://example.com/foo/1"],
    ),
    (
        "https://example.com/:selector",
        None,
        ["https://example.com/a-topic"],
        ["https://example.com/", "https://example.com/a/b"],
    ),
    (
        "/.well-known/mercure/subscriptions/Exact/:topic/:subscriber",
        HUB,
        [
            "/.well-known/mercure/subscriptions/Exact/https%3A%2F%2Fexample.com%2Fa/urn%3Auuid%3A1",
            "https://hub.example/.well-known/mercure/subscriptions/Exact/a/b",
        ],
        [
            "/.well-known/mercure/subscriptions/URLPattern/a/b",
            "https://other.example/.well-known/mercure/subscriptions/Exact/a/b",
            "/.well-known/mercure/subscriptions/Exact/a",
        ],
    ),
    # The URL Pattern standard's introduction.
    (
        "https://example.com/:category/*",
        None,
        ["https://example.com/products/", "https://example.com/blog/our-greatest-product-ever"],
        [
            "https://example.com/",
            "http://example.com/products/",
            "https://example.com:8443/blog/our-greatest-product-ever",
        ],
    ),
    (
        "http{s}?://{:subdomain.}?shop.example/products/:id([0-9]+)#reviews",
        None,
        [
            "https://shop.example/products/74205#reviews",
            "https://kathryn@voyager.shop.example/products/74656#reviews",
            "http://insecure.shop.example/products/1701#reviews",
        ],
        [
            "https://shop.example/products/2000",
            "http://shop.example:8080/products/0#reviews",
            "https://nx.shop.example/products/01?speed=5#reviews",
            "https://shop.example/products/chair#reviews",
        ],
    ),
    (
        "../admin/*",
        "https://discussion.example/forum/?page=2",
        [
            "https://discussion.example/admin/",
            "https://edd:librarian@discussion.example/admin/update?id=1",
        ],
        [
            "https://discussion.example/forum/admin/",
            "http://discussion.example:8080/admin/update?id=1",
        ],
    ),
    # Its pattern-string examples (pathname).
    ("/blog/:title", HUB, ["/blog/hello-world"], ["/blog/2012/02"]),
    ("/blog/:year(\\d+)/:month(\\d+)", HUB, ["/blog/2012/02"], ["/blog/x/02", "/blog/2012"]),
    ("/products/:id?", HUB, ["/products", "/products/2"], ["/products/", "/products/2/3"]),
    ("/products/{:id}?", HUB, ["/products/", "/products/2"], ["/products"]),
    ("/products/*", HUB, ["/products/", "/products/a/b"], ["/products", "/product"]),
]


@pytest.mark.parametrize(("text", "base", "matching", "other"), SPEC_EXAMPLES)
def test_url_pattern_examples(text, base, matching, other) -> None:
    selector = pattern(text, base)
    for topic in matching:
        assert selector.matches(topic), topic
    for topic in other:
        assert not selector.matches(topic), topic


def test_the_draft_book_example_routes_but_does_not_authorize() -> None:
    # "matchURLPattern=https://example.com/books/:id" selects every book.
    routing = pattern("https://example.com/books/:id")
    assert all(routing.matches(f"https://example.com/books/{n}") for n in (1, 2, 7))


@pytest.mark.parametrize(
    ("text", "matching", "other"),
    [
        # A pattern naming a host but no port means the default port; ":*" means any.
        ("https://example.com/*", ["https://example.com:443/a"], ["https://example.com:8443/a"]),
        ("https://*:*/*", ["https://a.b:8443/x", "https://a/"], ["http://a/"]),
        # Search and hash are wildcards unless a later component is named.
        ("https://example.com/a", ["https://example.com/a?q#h"], ["https://example.com/a/"]),
        ("https://example.com/a#x", ["https://example.com/a#x"], ["https://example.com/a?q#x"]),
        ("https://example.com/a?q", ["https://example.com/a?q#any"], ["https://example.com/a?r"]),
        # Hosts are case-insensitive, paths are not (no ignoreCase).
        ("https://EXAMPLE.com/A", ["https://example.COM/A"], ["https://example.com/a"]),
        # Canonical forms: percent-encoding, dot segments, backslashes, default ports.
        (
            "https://example.com/café",
            ["https://example.com/caf%C3%A9"],
            ["https://example.com/cafe"],
        ),
        (
            "https://example.com/a/:b",
            [
                "https://example.com/x/../a/b",
                "https://example.com\\a\\b",
                "https://example.com:443/a/b",
            ],
            ["https://example.com/a/b/../../c"],
        ),
        # IP hosts: every IPv4 spelling, IPv6 compressed (":" escaped in the pattern).
        (
            "https://127.0.0.1/*",
            ["https://0x7f.1/x", "https://2130706433/y"],
            ["https://127.0.0.2/"],
        ),
        ("https://[\\:\\:1]/*", ["https://[0:0::1]/x"], ["https://[::2]/x"]),
        # Repeated groups with the automatic "/" prefix.
        ("https://example.com/a/:rest+", ["https://example.com/a/x/y"], ["https://example.com/a"]),
        ("https://example.com/a{/:rest}*", ["https://example.com/a"], ["https://example.com/ab"]),
        (
            "https://example.com/:id((?:a|b)+[0-9]{2,3})",
            ["https://example.com/abab12", "https://example.com/a123"],
            ["https://example.com/c12", "https://example.com/ab1", "https://example.com/a1234"],
        ),
        # Regexp features: classes, escapes, alternation, lazy quantifiers, named groups.
        (
            "https://example.com/:id([a-f\\d]{2}-(?<tail>x|y)+?)",
            ["https://example.com/a9-xy"],
            ["https://example.com/g9-x", "https://example.com/a9-"],
        ),
        # Non-special schemes: authority, or an opaque path (":" must be escaped there).
        ("urn\\:uuid\\:*", ["urn:uuid:123"], ["urn:isbn:1"]),
        ("foo://Host/:x", ["foo://host/1", "foo://HOST/2", "foo://Host/3"], ["foo://other/1"]),
        # Username and password are wildcards unless named.
        ("https://u\\:p@example.com/*", ["https://u:p@example.com/x"], ["https://example.com/x"]),
    ],
)
def test_url_pattern_semantics(text, matching, other) -> None:
    selector = pattern(text)
    for topic in matching:
        assert selector.matches(topic), topic
    for topic in other:
        assert not selector.matches(topic), topic


def test_relative_topics_and_patterns_resolve_against_the_hub_url() -> None:
    absolute = pattern("https://hub.example/books/:id")
    assert absolute.matches("/books/1")  # a relative topic, resolved against the hub
    assert absolute.matches("../books/1")
    assert not pattern("https://hub.example/books/:id", None).matches("/books/1")
    relative = pattern("/books/:id")
    assert relative.matches("https://hub.example/books/1")
    assert not relative.matches("https://other.example/books/1")
    assert not relative.matches("http://hub.example/books/1")


def test_topics_that_are_not_urls_never_match_a_url_pattern() -> None:
    selector = pattern("https://example.com/*")
    for topic in ("http://[::1/x", "https://exa mple.com/", "https://:80/", "file:///etc/passwd"):
        assert not selector.matches(topic)
    # With the hub as base, a bare string is a relative URL under the hub's directory.
    assert pattern("/.well-known/bar").matches("bar")


REGEXP_ERROR = "invalid or unsupported regular expression in a regexp group"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # What a linear-time engine cannot run.
        ("https://example.com/:id(a(?=b))", REGEXP_ERROR),
        ("https://example.com/:id(a(?<=b))", REGEXP_ERROR),
        ("https://example.com/(\\1)", REGEXP_ERROR),
        ("https://example.com/(\\k<a>)", REGEXP_ERROR),
        # Malformed regular expressions, and ECMAScript syntax that Rust's regex lacks.
        ("https://example.com/(a{3,2})", REGEXP_ERROR),
        ("https://example.com/([z-a])", REGEXP_ERROR),
        ("https://example.com/(\\cJ)", REGEXP_ERROR),
        ("https://example.com/(\\q{ab})", REGEXP_ERROR),
        # What the URL Pattern standard itself rejects.
        ("https://example.com/:a/:a", "duplicate name"),
        ("https://example.com/{a", "expected token Close"),
        ("https://example.com/a}", "expected token End"),
        ("https://example.com/(é)", "may only contain ascii"),
        ("https://example.com/()", "length must be > 0"),
        ("https://example.com/(?<n>x)", "invalid regex"),
        ("https://example.com/:", "invalid name"),
        ("https://e/(", "missing closing )"),
        ("https://exa mple.com/*", "invalid domain character"),
        ("https://example.com:99999/*", "invalid port number"),
        ("ht~tp://example.com/*", "relative URL without a base"),
        # Our cost limits.
        ("https://example.com/((?:a{100}){50})", "too complex"),
        ("https://example.com/((?:.*a){50})", "too complex"),
        ("https://example.com/(\\w{11})", "too complex"),
        ("https://example.com/([\\p{L}\\p{N}]{6})", "too complex"),
        ("https://example.com/([]\\w]{10})", "too complex"),  # "]" first in a class: a literal
        ("https://example.com/(a{99999999999999})", "too complex"),
        ("https://example.com/((?x)\\w {20})", "too complex"),  # verbose mode: "\\w{20}"
        ("https://example.com/" + "*" * 17, "more than 16 groups"),
        ("https://example.com" + "".join(f"/:n{i}" for i in range(17)), "more than 16 groups"),
        ("https://example.com/" + "{*a}*" * 9, "more than 16 groups"),
        ("https://example.com/" + "".join(f"(a(?<n{i}>b))" for i in range(9)), "more than 16"),
    ],
)
def test_unsupported_or_malformed_patterns_are_refused_clearly(text: str, message: str) -> None:
    with pytest.raises(SelectorError, match=re.escape(message)):
        pattern(text)


@pytest.mark.parametrize(
    ("text", "matching", "other"),
    [
        # Regexp groups use the syntax of Rust's regex crate, which accepts these.
        ("https://example.com/([^/]+)", ["https://example.com/abc"], ["https://example.com/a/b"]),
        ("https://example.com/(a\\b)", ["https://example.com/a"], ["https://example.com/ab"]),
        ("https://example.com/(^a)", [], ["https://example.com/a"]),  # "^": the start of "/a"
        (
            "https://example.com/([[:digit:]]+)",
            ["https://example.com/42"],
            ["https://example.com/x"],
        ),
        (
            "https://example.com/([a-z&&[^aeiou]]+)",
            ["https://example.com/xyz"],
            ["https://e.com/xa"],
        ),
        ("https://example.com/((?i)ab)", ["https://example.com/aB"], ["https://example.com/ac"]),
        # Topic components are ASCII when matched: non-ASCII arrives percent-encoded.
        ("https://example.com/(\\p{L}+)", ["https://example.com/abc"], ["https://example.com/é"]),
        ("https://example.com/(\\w+)", ["https://example.com/a_1"], ["https://example.com/é"]),
        ("https://example.com/(a{100})", ["https://example.com/" + "a" * 100], []),
    ],
)
def test_regexp_groups_follow_the_rust_regex_dialect(text, matching, other) -> None:
    selector = pattern(text)
    for topic in matching:
        assert selector.matches(topic), topic
    for topic in other:
        assert not selector.matches(topic), topic


def best_time(function, repeat: int = 3) -> float:
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        timings.append(time.perf_counter() - started)
    return min(timings)


def test_matching_takes_linear_time_even_for_pathological_patterns() -> None:
    # Each would backtrack exponentially (or as n**k) in a backtracking engine such as re.
    topic = "https://example.com/" + "a" * 3000
    cases = [
        "https://example.com/((?:a|a)*)b",
        "https://example.com/((?:a*)*)b",
        "https://example.com/" + "*a" * 12 + "b",
        "https://example.com/:x([a]*[a]*[a]*[a]*[a]*[a]*b)",
    ]
    for text in cases:
        selector = pattern(text)
        assert not selector.matches(topic)
        assert best_time(lambda s=selector: s.matches(topic)) < 0.01, text  # about 10 us


def test_patterns_at_the_cost_limits_stay_cheap() -> None:
    # Near MAX_GROUPS and MAX_REGEXP_COST, against long topics that match (the slow case:
    # the engine then works out the groups); beyond them, the matching time of a topic grows
    # with the size of the pattern (tens of milliseconds with a hundred groups).
    topics = ["https://example.com/" + "a" * 3000, "https://example.com/" + "ab/" * 1000]
    cases = [
        "https://example.com/" + "{*a}*" * 8,
        "https://example.com/" + "*" * 16,
        "https://example.com/((?:.*a){40})",
        "https://example.com/" + "(\\w*)" * 10,
        "https://example.com/{*a}*([ab]{99})a{/:n0}*",
    ]
    for text in cases:
        started = time.perf_counter()
        selector = pattern(text)
        assert time.perf_counter() - started < 0.5, text  # compiled in a few milliseconds
        for topic in topics:
            assert best_time(lambda s=selector, t=topic: s.matches(t)) < 0.05, text  # < 5 ms


# A differential test of the package against Python's re, on the regular expression the
# standard's "generate a regular expression and name list" algorithm writes for a pathname
# pattern built of fixed text, named groups, wildcards and regexp groups.
PIECES = {
    "a": "a",
    "b": "b",
    "/": "/",
    "{NAME}": "([^/]+?)",
    "{*}": "(.*)",
    "(a|b)": "(a|b)",
    "([ab]+)": "([ab]+)",
    "(b*)": "(b*)",
    "\\*": "\\*",
}


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(st.sampled_from(sorted(PIECES)), max_size=9),
    paths=st.lists(st.text(alphabet="ab/*", max_size=8), min_size=1, max_size=10),
)
def test_url_patterns_agree_with_the_standard_regexp(pieces, paths) -> None:
    names = iter(range(len(pieces)))
    text = "".join(p.replace("NAME", f":n{next(names)}") if "NAME" in p else p for p in pieces)
    expected = re.compile("/" + "".join(PIECES[p] for p in pieces))
    selector = pattern("https://example.com/" + text)
    for path in paths:
        topic = "https://example.com/" + path
        assert selector.matches(topic) == bool(expected.fullmatch("/" + path)), (text, path)


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(alphabet=":*(){}?+\\/ab.[]^|", max_size=20),
    topics=st.lists(st.text(alphabet="ab/:?#%.", max_size=12), min_size=1, max_size=5),
)
def test_any_pattern_is_compiled_or_refused_and_matching_never_raises(text, topics) -> None:
    for base in ("https://example.com/", "urn:", ""):
        try:
            selector = pattern(base + text)
        except SelectorError:
            continue
        for topic in topics:
            assert selector.matches(topic) in (True, False)
            assert selector.matches("https://example.com/" + topic) in (True, False)


# -- topics ------------------------------------------------------------------------------------


def test_check_topic() -> None:
    assert check_topic("https://example.com/é") == "https://example.com/é"
    invisible = (
        "a\u200b",
        "a\u200e",
        "a\u202e",
        "a\ufeff",
        "a\u2066",
        "a\U00013439",
        "a\U000e0001",
    )
    for bad in ("a\x00", "a\x1f", "a\x7f", "a\x80", "a\x9f", "a\ud800", *invisible):
        with pytest.raises(ValueError):
            check_topic(bad)


@pytest.mark.parametrize(
    ("topic", "reserved"),
    [
        ("/.well-known/mercure", True),
        ("/.well-known/mercure/subscriptions/exact/a/b", True),
        ("https://hub.example/.well-known/mercure/subscriptions", True),
        ("https://elsewhere.example/.well-known/mercure/x", True),  # any authority
        ("wss://x/.well-known/mercure", True),  # any scheme
        ("foo:/.well-known/mercure/x", True),
        ("/.well-known/%6Dercure/x", True),  # an escaped unreserved character
        ("/a/../.well-known/mercure/x", True),  # dot segments
        ("/a/%2e%2e/.well-known/mercure/x", True),
        ("https://x.example/a\\..\\.well-known/mercure/x", True),  # "\" is "/" in http(s)
        ("subscriptions", False),  # resolves to /.well-known/subscriptions
        ("https://example.com/.well-known/mercure-fake", False),
        ("/.well-known/mercurex", False),
        ("/.WELL-KNOWN/mercure", False),  # paths are case-sensitive
        ("urn:uuid:/.well-known/mercure", False),
        ("https://example.com/books/1", False),
    ],
)
def test_reserved_namespace(topic: str, reserved: bool) -> None:
    assert is_reserved_topic(topic, HUB) is reserved


def test_reserved_namespace_resolves_relative_topics_against_the_hub_url() -> None:
    assert is_reserved_topic("subscriptions", HUB + "/")  # .../mercure/subscriptions
    assert is_reserved_topic("./x", HUB + "/")
    assert not is_reserved_topic("../x", HUB + "/")


# -- the subscribe query -----------------------------------------------------------------------


def test_subscribe_query_reads_the_matcher_parameters() -> None:
    selectors = parse_subscribe_query(
        [
            ("match", "https://example.com/foo"),
            ("match", "bar"),
            ("match_urlpattern", "https://example.com/bar/:id"),
            ("match_exact", "bar"),  # the same matcher as match=bar: kept once
            ("last_event_id", "x"),
            ("access_token", "t"),
        ],
        hub_url=HUB,
    )
    assert [(s.match_type, s.pattern) for s in selectors] == [
        (MatchType.EXACT, "https://example.com/foo"),
        (MatchType.EXACT, "bar"),
        (URLP, "https://example.com/bar/:id"),
    ]


def test_subscribe_query_reads_the_names_of_earlier_revisions() -> None:
    selectors = parse_subscribe_query(
        [("matchURLPattern", "https://example.com/bar/:id"), ("matchExact", "bar")], hub_url=HUB
    )
    assert [(s.match_type, s.pattern) for s in selectors] == [
        (URLP, "https://example.com/bar/:id"),
        (MatchType.EXACT, "bar"),
    ]


@pytest.mark.parametrize(
    "name",
    ["matchurlpattern", "match_URLPattern", "Match", "MATCH_EXACT", "matches", "match_regexp"],
)
def test_subscribe_query_refuses_the_rest_of_the_match_namespace(name: str) -> None:
    with pytest.raises(SelectorError, match="unknown matcher parameter"):
        parse_subscribe_query([("match", "a"), (name, "b")])


def test_subscribe_query_limits_and_errors() -> None:
    with pytest.raises(SelectorError, match="at least one"):
        parse_subscribe_query([("topic", "a")])
    with pytest.raises(SelectorError, match="too many"):
        parse_subscribe_query([("match", str(i)) for i in range(4)], max_matchers=3)
    with pytest.raises(SelectorError, match="longer than"):
        parse_subscribe_query([("match", "x" * 20)], max_length=10)
    with pytest.raises(SelectorError, match="control characters"):
        parse_subscribe_query([("match", "a\nb")])
    with pytest.raises(SelectorError, match=r"match_urlpattern='https://e/\(': "):
        parse_subscribe_query([("match_urlpattern", "https://e/(")])


def test_subscribe_query_legacy_topic_parameter() -> None:
    assert parse_subscribe_query([("topic", "a"), ("topic", "*")], legacy_topic=True)[1].is_wildcard
    with pytest.raises(SelectorError, match="URI Templates"):
        parse_subscribe_query([("topic", "https://example.com/books/{id}")], legacy_topic=True)


# -- the publish form --------------------------------------------------------------------------


def publish(*fields: tuple[str, str], **options) -> MercureUpdate:
    return parse_publish_form(list(fields), hub_url=HUB, **options)


def test_publish_form_with_every_field() -> None:
    update = publish(
        ("topic", "https://example.com/books/1"),
        ("data", "line 1\nline 2"),
        ("private", "on"),
        ("id", "urn:uuid:e1ee88e2-532a-4d6f-ba70-f0f8bd584022"),
        ("type", "book"),
        ("retry", "3000"),
        ("target", "ignored: not defined by the draft"),
    )
    assert update == MercureUpdate(
        topics=("https://example.com/books/1",),
        data="line 1\nline 2",
        private=True,
        id="urn:uuid:e1ee88e2-532a-4d6f-ba70-f0f8bd584022",
        type="book",
        retry=3000,
    )


def test_publish_form_defaults() -> None:
    assert publish(("topic", "t")) == MercureUpdate(("t",), "", False, None, None, None)
    assert publish(("topic", "t"), ("type", "")).type is None


@pytest.mark.parametrize("value", ["on", "", "false", "0", "off"])
def test_private_is_set_by_presence_alone(value: str) -> None:
    assert publish(("topic", "t"), ("private", value)).private


@pytest.mark.parametrize(
    ("fields", "field", "status", "message"),
    [
        ([], "topic", 400, "is required"),
        ([("topic", "a\x00")], "topic", 400, "control characters"),
        ([("topic", "a\u0085")], "topic", 400, "control characters"),
        ([("topic", "a\u200b")], "topic", 400, "format characters"),
        ([("topic", "a\ud800")], "topic", 400, "UTF-8"),
        ([("topic", "*")], "topic", 400, "wildcard"),
        ([("topic", "a"), ("topic", "*")], "topic", 400, "wildcard"),  # alternates too
        ([("topic", "/.well-known/mercure/subscriptions/exact/a/b")], "topic", 400, "reserved"),
        ([("topic", "https://hub.example/.well-known/mercure")], "topic", 400, "reserved"),
        ([("topic", "a"), ("topic", "/.well-known/mercure/x")], "topic", 400, "reserved"),
        ([("topic", str(n)) for n in range(101)], "topic", 413, "more than 100"),
        ([("topic", "t"), ("id", "#1")], "id", 400, "'#'"),
        ([("topic", "t"), ("id", "earliest")], "id", 400, "earliest"),
        ([("topic", "t"), ("id", "a\nb")], "id", 400, "control characters"),
        ([("topic", "t"), ("id", "a\rb")], "id", 400, "control characters"),
        ([("topic", "t"), ("id", "a\x00b")], "id", 400, "control characters"),
        ([("topic", "t"), ("id", "a\x01b")], "id", 400, "control characters"),
        ([("topic", "t"), ("id", "a\tb")], "id", 400, "control characters"),
        ([("topic", "t"), ("id", "a\x85b")], "id", 400, "control characters"),
        ([("topic", "t"), ("id", "a\u200bb")], "id", 400, "format characters"),
        ([("topic", "t"), ("id", "")], "id", 400, "empty"),
        ([("topic", "t"), ("id", "a"), ("id", "b")], "id", 400, "at most once"),
        ([("topic", "t"), ("data", "a"), ("data", "b")], "data", 400, "at most once"),
        ([("topic", "t"), ("data", "\udc80")], "data", 400, "UTF-8"),
        ([("topic", "t"), ("type", "a\nb")], "type", 400, "control characters"),
        ([("topic", "t"), ("type", "a\u200fb")], "type", 400, "format characters"),
        ([("topic", "t"), ("type", "mercure")], "type", 400, "reserved"),
        ([("topic", "t"), ("type", "sluiceway.reset")], "type", 400, "reserved"),
        ([("topic", "t"), ("retry", "")], "retry", 400, "ASCII digits"),
        ([("topic", "t"), ("retry", "-1")], "retry", 400, "ASCII digits"),
        ([("topic", "t"), ("retry", "+5")], "retry", 400, "ASCII digits"),
        ([("topic", "t"), ("retry", " 5")], "retry", 400, "ASCII digits"),
        ([("topic", "t"), ("retry", "5_0")], "retry", 400, "ASCII digits"),
        ([("topic", "t"), ("retry", "\u0663")], "retry", 400, "ASCII digits"),  # Arabic 3
        ([("topic", "t"), ("retry", "1.5")], "retry", 400, "ASCII digits"),
        ([("topic", "t"), ("data", "x" * 101)], "data", 413, "longer than 100"),
    ],
)
def test_malformed_publish_forms(fields, field, status, message) -> None:
    with pytest.raises(PublishError) as caught:
        parse_publish_form(fields, hub_url=HUB, max_field_length=100)
    assert caught.value.field == field
    assert caught.value.status == status
    assert message in str(caught.value)


def test_publish_form_with_a_bad_hub_url_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="hub URL") as caught:
        parse_publish_form([("topic", "t")], hub_url="not a url")
    assert not isinstance(caught.value, PublishError)


# -- the SSE encoding --------------------------------------------------------------------------


def test_encode_update_puts_every_field_on_the_wire() -> None:
    update = MercureUpdate("t", "a\r\nb\rc\nd", type="book", retry=1500)
    frame = encode_update(update, "urn:uuid:1")
    assert (
        frame == b"id: urn:uuid:1\nevent: book\nretry: 1500\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
    )
    parser = Parser()
    [event] = parser.feed(frame)
    assert (event.id, event.event, event.data) == ("urn:uuid:1", "book", "a\nb\nc\nd")
    assert parser.retry == 1500


def test_encode_update_always_has_a_data_line() -> None:
    frame = encode_update(MercureUpdate("t"), "#e-1")
    assert frame == b"id: #e-1\ndata: \n\n"
    [event] = Parser().feed(frame)  # dispatched, with empty data
    assert event.data == ""


# -- reconnection ------------------------------------------------------------------------------


def test_requested_last_event_id_header_wins() -> None:
    assert requested_last_event_id("h", [("last_event_id", "q")]) == "h"
    assert requested_last_event_id("h", []) == "h"
    assert requested_last_event_id(None, [("last_event_id", "q")]) == "q"
    assert requested_last_event_id("", [("last_event_id", "q")]) == "q"
    assert requested_last_event_id(None, [("last_event_id", "q"), ("lastEventID", "old")]) == "q"
    assert requested_last_event_id(None, [("lastEventID", "old")]) == "old"  # earlier name
    assert requested_last_event_id(None, [("last_event_id", "1"), ("last_event_id", "2")]) == "1"
    assert requested_last_event_id(None, [("Last-Event-ID", "v7's name")]) is None
    assert requested_last_event_id(None, []) is None
    # A browser sends the header's value as UTF-8; ASGI hands it over as Latin-1.
    assert requested_last_event_id("urn:☃".encode().decode("latin-1"), []) == "urn:☃"
    assert requested_last_event_id("caf\xe9", []) == "caf\xe9"  # not UTF-8: kept as it came


def test_last_event_ids_name_a_hub_position_a_publisher_id_or_the_start() -> None:
    position = Position("3f9a1c07", 42)
    assert parse_last_event_id(hub_event_id(position)).position == position
    assert parse_last_event_id("earliest").earliest
    assert parse_last_event_id("urn:uuid:x").external_id == "urn:uuid:x"
    assert parse_last_event_id("3f9a1c07-42").external_id == "3f9a1c07-42"  # not ours: no "#"
    with pytest.raises(InvalidEventId):
        parse_last_event_id("#not-a-position!")


def test_response_last_event_id_never_discloses_what_the_subscriber_may_not_see() -> None:
    def may_receive(topics: tuple[str, ...], private: bool) -> bool:
        return not private or "mine" in topics

    newest_first = [("p2", ("theirs",), True), ("p1", ("x", "mine"), True), ("a", ("x",), False)]
    assert response_last_event_id(newest_first, may_receive) == "p1"
    assert response_last_event_id(newest_first[:1], may_receive) == EARLIEST
    assert response_last_event_id(newest_first, may_receive, scan_limit=1) == EARLIEST
    assert response_last_event_id(newest_first, may_receive, scan_limit=2) == "p1"
    assert response_last_event_id(iter([]), may_receive) == EARLIEST


# -- active subscriptions ----------------------------------------------------------------------

SPEC_SUBSCRIBER = "urn:uuid:bb3de268-05b0-4c65-b44e-8f9acefc29d6"


def test_subscription_documents_are_those_of_the_draft() -> None:
    document = subscription_document(
        "urlpattern", "https://example.com/:selector", SPEC_SUBSCRIBER,
        active=True, payload={"foo": "bar"},
    )  # fmt: skip
    assert document == {  # the draft's example, word for word
        "id": "/.well-known/mercure/subscriptions/urlpattern/https%3A%2F%2Fexample.com%2F"
        "%3Aselector/urn%3Auuid%3Abb3de268-05b0-4c65-b44e-8f9acefc29d6",
        "type": "subscription",
        "match_type": "urlpattern",
        "match": "https://example.com/:selector",
        "subscriber": SPEC_SUBSCRIBER,
        "active": True,
        "payload": {"foo": "bar"},
    }
    legacy = subscription_document("URLPattern", "a", "s", active=False)
    assert legacy["match_type"] == "urlpattern" and "payload" not in legacy


def test_subscription_topics_encode_each_variable_exactly_once() -> None:
    topic = subscription_topic(MatchType.EXACT, "https://e.example/a%20b/c d", "user/1")
    assert topic == (
        "/.well-known/mercure/subscriptions/exact/"
        "https%3A%2F%2Fe.example%2Fa%2520b%2Fc%20d/user%2F1"
    )
    with pytest.raises(ValueError):
        subscription_topic("Regexp", "a", "b")


def test_subscription_events_are_private_updates_of_the_hubs_type_in_the_reserved_namespace() -> (
    None
):
    update = subscription_update("exact", "a", "s", active=True, payload={"k": 1})
    assert update.private and update.type == "mercure"
    assert is_reserved_topic(update.topic, HUB)  # publishers cannot forge them
    assert orjson.loads(update.data)["id"] == update.topic
    assert encode_update(update, "#e-1").startswith(b"id: #e-1\nevent: mercure\n")
    # A subscriber can follow them with the relative pattern of the draft.
    assert pattern("/.well-known/mercure/subscriptions/exact/:match/:subscriber").matches(
        update.topic
    )


def test_subscriptions_collection() -> None:
    nested = [subscription_document("exact", "a", "s", active=True)]
    document = subscriptions_collection("/.well-known/mercure/subscriptions", nested)
    assert document == {
        "id": "/.well-known/mercure/subscriptions",
        "type": "subscriptions",
        "subscriptions": nested,
    }
    link = hub_link(HUB, 'urn:"x"')
    assert link == (
        f'<{HUB}>; rel="mercure"; last-event-id="urn:\\"x\\""; type="mercure"; '
        'content-type="application/json"'
    )


@settings(max_examples=200, deadline=None)
@given(
    match_type=st.sampled_from(list(MatchType)),
    match=st.text(min_size=1, max_size=30),
    subscriber=st.text(min_size=1, max_size=30),
)
def test_subscriptions_api_paths_round_trip(match_type, match, subscriber) -> None:
    topic = subscription_topic(match_type, match, subscriber)
    found = parse_subscriptions_path(topic)
    assert (found.match_type, found.match, found.subscriber) == (match_type, match, subscriber)
    collection = topic.rsplit("/", 1)[0]
    found = parse_subscriptions_path(collection)
    assert (found.match_type, found.match, found.subscriber) == (match_type, match, None)


def test_subscriptions_api_path_errors() -> None:
    assert parse_subscriptions_path("/.well-known/mercure/subscriptions").match is None
    assert parse_subscriptions_path("/.well-known/mercure/subscriptions/").match is None
    for bad in (
        "/.well-known/mercure/subscriptionsX",
        "/.well-known/mercure/subscriptions/exact",
        "/.well-known/mercure/subscriptions/EXACT/a",
        "/.well-known/mercure/subscriptions/exact/a/b/c",
        "/.well-known/mercure/subscriptions/exact//b",
        "/.well-known/mercure/subscriptions/exact/%FF/b",
    ):
        with pytest.raises(LookupError):
            parse_subscriptions_path(bad)
    # Earlier revisions' spelling names the same resource.
    legacy = parse_subscriptions_path("/.well-known/mercure/subscriptions/URLPattern/a")
    assert (legacy.match_type, legacy.match) == (URLP, "a")


def test_new_subscriber_id() -> None:
    first, second = new_subscriber_id(), new_subscriber_id()
    assert first.startswith("urn:uuid:") and first != second


def test_docstring_examples() -> None:
    import doctest

    import sluiceway.mercure
    import sluiceway.mercure.publication
    import sluiceway.mercure.selectors

    for module in (sluiceway.mercure, sluiceway.mercure.publication, sluiceway.mercure.selectors):
        assert doctest.testmod(module).failed == 0, module.__name__


# -- the publisher-id index of the face ------------------------------------------------------


async def test_publisher_ids_leave_the_index_with_their_updates() -> None:
    """The face finds a publisher's id without reading history (an index brought up to date
    incrementally); an id whose update was trimmed names nothing any more: publishing it again
    is allowed, and resuming from it answers ``earliest``."""
    from sluiceway.auth.grants import Grants
    from sluiceway.hub import Hub, HubConfig
    from sluiceway.server.mercure_face import MercureFace

    hub = Hub(HubConfig(history_size=3))
    await hub.start()
    face = MercureFace(hub)
    anyone = Grants.anonymous(subscribe=True)

    def update(n: int, external_id: str) -> MercureUpdate:
        return publish(("topic", "https://e.example/t"), ("data", str(n)), ("id", external_id))

    try:
        for n in range(3):
            assert await face.publish(update(n, f"urn:{n}")) == f"urn:{n}"
        with pytest.raises(PublishError):
            await face.publish(update(9, "urn:0"))  # still held
        subscription, last = await face.open("urn:1", anyone)
        assert (last, subscription.lost) == ("urn:1", False)
        subscription.release()
        for n in range(3, 6):
            await face.publish(update(n, f"urn:{n}"))  # urn:0..2 are trimmed now
        assert await face.publish(update(0, "urn:0")) == "urn:0"  # free again
        subscription, last = await face.open("urn:2", anyone)
        assert last == "earliest"
        subscription.release()
        subscription, last = await face.open(None, anyone)
        assert last == "urn:0"  # the newest update, for a live subscriber
        subscription.release()
    finally:
        await hub.aclose()
