"""The one admission check (``sluiceway.server.admission``), table-driven: every grant shape
against every kind of resource and action, with the answer written out; then the native
stream path and the ASGI routes of two real servers asked the same questions, which must
give the same answers.
"""

from __future__ import annotations

import doctest
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from serverproc import ServerProcess
from tokens import bearer, mint, pattern

import sluiceway.auth.resources
import sluiceway.server.admission
import sluiceway.urls
from sluiceway.auth import AuthError, Grants, TokenVerifier
from sluiceway.auth.resources import may_act_on_run, may_publish_topic, may_read_topic, may_use
from sluiceway.server.admission import Admission, AdmissionPolicy, RequestFacts, redact_tokens

SECRET = "admission-tests-secret-long-enough"
HUB = "http://127.0.0.1:8000/.well-known/mercure"


def test_doctests() -> None:
    for module in (sluiceway.server.admission, sluiceway.auth.resources, sluiceway.urls):
        assert doctest.testmod(module, raise_on_error=False).failed == 0, module.__name__


# -- the table ---------------------------------------------------------------------------------


def claims(**grants: Any) -> dict[str, Any]:
    token = mint(SECRET, **grants)
    return TokenVerifier(hmac_secret=SECRET).verify(token)


def from_token(**grants: Any) -> Grants:
    return Grants.from_claims(claims(**grants), hub_url=HUB, legacy_claims=True)


SHAPES: dict[str, Grants] = {
    "anonymous, reading on": Grants.anonymous(subscribe=True),
    "anonymous, writing on": Grants.anonymous(subscribe=True, publish=True),
    "anonymous, nothing": Grants.anonymous(),
    "the publish key": Grants.full(),
    "a token granting nothing": from_token(sub="alice"),
    "a token on topic a": from_token(subscribe=["/topics/a"], publish=["/topics/a"]),
    "a pattern on every topic": from_token(
        subscribe=[pattern("/topics/*")], publish=[pattern("/topics/*")]
    ),
    "the wildcard": from_token(subscribe=["*"], publish=["*"]),
    "a wildcard pattern": from_token(subscribe=[pattern("/*")], publish=[pattern("/*")]),
    "the legacy claim": Grants.from_claims(
        claims(mercure={"subscribe": ["*"], "publish": ["*"]}), hub_url=HUB, legacy_claims=True
    ),
    "alice, starting runs": from_token(publish=["/generations", "/jobs"], sub="alice"),
    "a reader of every generation": from_token(subscribe=[pattern("/generations/*")], sub="eve"),
    "a token on /files/pub": from_token(
        subscribe=[pattern("/files/pub/*")], publish=[pattern("/files/pub/*")]
    ),
    "a token naming room-1#bob": from_token(subscribe=["/topics/room-1%23bob"]),
    "bob, with no grant": from_token(sub="bob"),
    "a token on $admin": from_token(subscribe=["/topics/$admin"]),
    "a token on /metrics": from_token(subscribe=["/metrics"]),
}

READ, WRITE = "subscribe", "publish"


def decide(grants: Grants, case: str) -> bool:
    """The one answer the rules give for a case (a resource and an action)."""
    kind, _, rest = case.partition(" ")
    if kind == "read-topic":
        return may_read_topic(grants, rest)
    if kind == "write-topic":
        return may_publish_topic(grants, rest)
    if kind in ("read", "write"):
        return may_use(grants, READ if kind == "read" else WRITE, rest)
    action, owner = rest.split(" of ")
    owner_id = None if not owner else "server" if owner == "the server" else f"sub:{owner}"
    return may_act_on_run(
        grants, READ if action == "read" else WRITE, "/generations", "gen_1", owner_id
    )


CASES = [
    "read-topic a",
    "write-topic a",
    "read-topic b",
    "write-topic b",
    "read-topic $admin",
    "read-topic room-1#bob",
    "write-topic room-1#bob",
    "read-topic sluiceway.mercure",
    "write-topic sluiceway.gen:1",
    "read /files/pub/a.txt",
    "write /files/pub/a.txt",
    "read /files/secret.txt",
    "read /exports/demo",
    "read /proxy",
    "read /metrics",
    "write /generations",
    "write /jobs",
    "run read of alice",
    "run cancel of alice",
    "run read of bob",
    "run cancel of bob",
    "run read of ",
    "run cancel of ",
    "run read of the server",
    "run cancel of the server",
]

#: What each shape may do; everything else it may not.
ALLOWED: dict[str, set[str]] = {
    "anonymous, reading on": {
        "read-topic a", "read-topic b", "read /files/pub/a.txt", "read /files/secret.txt",
        "read /exports/demo", "read /proxy", "read /metrics",
    },
    "anonymous, writing on": {
        "read-topic a", "read-topic b", "write-topic a", "write-topic b", "write-topic room-1#bob",
        "read /files/pub/a.txt", "write /files/pub/a.txt", "read /files/secret.txt",
        "read /exports/demo", "read /proxy", "read /metrics", "write /generations", "write /jobs",
        "run read of ", "run cancel of ",
    },
    "anonymous, nothing": set(),
    "the publish key": set(CASES) - {"read-topic sluiceway.mercure", "write-topic sluiceway.gen:1"},
    "a token granting nothing": set(),
    "a token on topic a": {"read-topic a", "write-topic a"},
    "a pattern on every topic": {
        "read-topic a", "write-topic a", "read-topic b", "write-topic b", "read-topic $admin",
    },
    "the wildcard": {
        "read-topic a", "write-topic a", "read-topic b", "write-topic b", "read-topic $admin",
    },
    "a wildcard pattern": {
        "read-topic a", "write-topic a", "read-topic b", "write-topic b", "read-topic $admin",
    },
    "the legacy claim": {
        "read-topic a", "write-topic a", "read-topic b", "write-topic b", "read-topic $admin",
    },
    "alice, starting runs": {
        "write /generations", "write /jobs", "run read of alice", "run cancel of alice",
    },
    "a reader of every generation": {
        "run read of alice", "run read of bob", "run read of ", "run read of the server",
    },
    "a token on /files/pub": {"read /files/pub/a.txt", "write /files/pub/a.txt"},
    "a token naming room-1#bob": {"read-topic room-1#bob"},
    "bob, with no grant": {"read-topic room-1#bob", "write-topic room-1#bob"},
    "a token on $admin": {"read-topic $admin"},
    "a token on /metrics": {"read /metrics"},
}  # fmt: skip


@pytest.mark.parametrize("shape", list(SHAPES))
def test_every_grant_shape_against_every_resource(shape: str) -> None:
    grants = SHAPES[shape]
    answers = {case: decide(grants, case) for case in CASES}
    assert {case for case, allowed in answers.items() if allowed} == ALLOWED[shape]


def test_the_table_covers_every_shape() -> None:
    assert set(ALLOWED) == set(SHAPES)
    assert all(cases <= set(CASES) for cases in ALLOWED.values())


# -- the request itself -----------------------------------------------------------------------


def facts(method: str = "GET", kind: str = "http", **headers: str) -> RequestFacts:
    """A request's facts; ``query`` is its query string, the rest its headers."""
    query = headers.pop("query", "").encode()
    raw = [(name.replace("_", "-").encode(), value.encode()) for name, value in headers.items()]
    return RequestFacts.from_scope(
        {"type": kind, "method": method, "path": "/x", "query_string": query, "headers": raw}
    )


HOSTS = [
    # (host header, bound to loopback, allowed_hosts, answered?)
    ("127.0.0.1:8000", True, (), True),
    ("localhost:8000", True, (), True),
    ("LocalHost.", True, (), True),
    ("[::1]:8000", True, (), True),
    ("127.0.0.2", True, (), True),
    ("evil.example:8000", True, (), False),
    ("localhost.evil.example", True, (), False),
    ("127.0.0.1.nip.io", True, (), False),
    ("0.0.0.0:8000", True, (), False),
    ("localhost:8000:1", True, (), False),
    ("app.example", True, ("app.example",), True),
    ("app.example:8443", True, ("app.example:8443",), True),
    ("app.example:9", True, ("app.example:8443",), False),
    ("a.corp.example", True, (".corp.example",), True),
    ("evilcorp.example", True, (".corp.example",), False),
    ("anything.example", True, ("*",), True),
    ("anything.example", False, (), True),
    ("anything.example", False, ("app.example",), False),
    ("localhost", False, ("app.example",), True),
]


@pytest.mark.parametrize(("host", "loopback", "allowed", "answered"), HOSTS)
def test_hosts(host: str, loopback: bool, allowed: tuple[str, ...], answered: bool) -> None:
    admission = Admission(AdmissionPolicy(loopback_only=loopback, allowed_hosts=allowed))
    refused = admission.check_request(facts(host=host))
    assert (refused is None) is answered
    if refused is not None:
        assert (refused.status, refused.code) == (421, "host_not_allowed")


ORIGINS = [
    # (method, kind, headers, CORS origins, refused?)
    ("POST", "http", {"origin": "https://evil.example"}, (), True),
    ("POST", "http", {"sec_fetch_site": "cross-site", "origin": "https://evil.example"}, (), True),
    ("POST", "http", {"sec_fetch_site": "same-origin", "origin": "http://h:1"}, (), False),
    ("POST", "http", {"origin": "http://h:1"}, (), False),  # an older browser, same host:port
    ("POST", "http", {"origin": "https://app.example"}, ("https://app.example",), False),
    ("POST", "http", {"origin": "https://evil.example"}, ("*",), False),
    ("POST", "http", {}, (), False),  # curl, SDKs, servers
    ("POST", "http", {"referer": "http://evil.example/page"}, (), True),  # no Origin: Referer
    ("POST", "http", {"referer": "http://h:1/page"}, (), False),
    ("GET", "http", {"origin": "https://evil.example"}, (), False),  # reads: CORS decides
    ("GET", "websocket", {"origin": "https://evil.example"}, (), True),
    ("GET", "websocket", {"origin": "null"}, (), True),
    ("GET", "websocket", {"origin": "http://h:1"}, (), False),
    ("GET", "websocket", {"origin": "https://app.example"}, ("https://app.example",), False),
    ("GET", "websocket", {}, (), False),
]


@pytest.mark.parametrize(("method", "kind", "headers", "cors", "refused"), ORIGINS)
def test_origins(
    method: str, kind: str, headers: dict[str, str], cors: tuple[str, ...], refused: bool
) -> None:
    admission = Admission(AdmissionPolicy(cors_origins=cors, loopback_only=False))
    answer = admission.check_request(facts(method, kind, host="h:1", **headers))
    assert (answer is not None) is refused
    if answer is not None:
        assert (answer.status, answer.code) == (403, "cross_origin")


# -- who sent it ------------------------------------------------------------------------------

READER = mint(SECRET, subscribe=["*"])
VERIFIER = TokenVerifier(hmac_secret=SECRET)


@pytest.mark.parametrize(
    ("headers", "found"),
    [
        ({"authorization": f"Bearer {READER}"}, "header"),
        ({"query": f"access_token={READER}"}, "query"),
        ({"query": f"%61ccess_token={READER}"}, "query"),  # names are percent-decoded
        ({"cookie": f"__Secure-mercure_access_token={READER}"}, "cookie"),
        ({"cookie": f"mercureAccessToken={READER}"}, "cookie"),
        ({"cookie": f"mercureAuthorization={READER}"}, "cookie"),
        ({"query": f"authorization={READER}"}, "query"),
        ({"authorization": "Basic dTpw", "query": f"access_token={READER}"}, "query"),
        ({"cookie": "mercureAccessToken="}, None),  # a cleared cookie
        ({}, None),
    ],
)
def test_the_places_a_token_comes_in(headers: dict[str, str], found: str | None) -> None:
    admission = Admission(AdmissionPolicy(verifier=VERIFIER, anonymous_subscribe=False))
    token, from_cookie = admission.credentials(facts(**headers))
    assert (token is not None) is (found is not None)
    assert from_cookie is (found == "cookie")
    assert admission.grants(facts(**headers)).authenticated is (found is not None)


@pytest.mark.parametrize(
    "headers",
    [
        {"authorization": "Bearer"},
        {"authorization": "Bearer a b"},
        {"query": "access_token="},
        {"query": f"access_token={READER}&access_token={READER}"},
    ],
)
def test_malformed_credentials_are_400(headers: dict[str, str]) -> None:
    admission = Admission(AdmissionPolicy(verifier=VERIFIER))
    with pytest.raises(AuthError) as refused:
        admission.grants(facts(**headers))
    assert refused.value.status == 400


def test_a_write_on_a_cookie_must_say_where_it_comes_from() -> None:
    admission = Admission(AdmissionPolicy(verifier=VERIFIER))
    cookie = {"cookie": f"__Secure-mercure_access_token={READER}"}
    with pytest.raises(AuthError) as refused:
        admission.grants(facts("POST", **cookie))
    assert refused.value.status == 400
    assert admission.grants(facts("POST", origin="http://h:1", **cookie)).authenticated
    assert admission.grants(facts("GET", **cookie)).authenticated
    header = {"authorization": f"Bearer {READER}"}
    assert admission.grants(facts("POST", **header)).authenticated  # not ambient


def test_the_publish_key_grants_everything_and_llm_keys_are_no_tokens() -> None:
    admission = Admission(AdmissionPolicy(verifier=VERIFIER, publish_key="pk-123"))
    assert admission.grants(facts(authorization="Bearer pk-123")).everything
    with pytest.raises(AuthError):
        admission.grants(facts(authorization="Bearer sk-opaque"))
    grants = admission.grants(facts(authorization="Bearer sk-opaque"), api_keys=True)
    assert not grants.authenticated
    assert admission.grants(facts(x_api_key=READER), api_keys=True).authenticated


def test_redacted_logs() -> None:
    assert redact_tokens("/a?access_token=x&b=1&authorization=y") == (
        "/a?access_token=[redacted]&b=1&authorization=[redacted]"
    )
    assert redact_tokens("/a?b=access_token") == "/a?b=access_token"
    assert redact_tokens("/a") == "/a"


# -- both paths, on real servers ----------------------------------------------------------------

TOPIC_CASES = ["a", "b", "room-1#bob", "$admin", "sluiceway.mercure"]


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, ServerProcess]]:
    env = {"SLUICEWAY_TOKEN_HMAC_SECRET": SECRET, "SLUICEWAY_PUBLISH_KEY": "pk-both-paths"}
    started: dict[str, ServerProcess] = {}
    try:
        for name, reading in (("open", "true"), ("closed", "false")):
            for native in ("true", "false"):
                started[f"{name}/{native}"] = ServerProcess(
                    env={
                        **env,
                        "SLUICEWAY_ANONYMOUS_SUBSCRIBE": reading,
                        "SLUICEWAY_NATIVE_STREAMS": native,
                    }
                ).start()
        yield started
    finally:
        for server in started.values():
            server.stop()


TOKENS: dict[str, dict[str, str]] = {
    "nothing": {},
    "topic a": bearer(mint(SECRET, subscribe=["/topics/a"])),
    "every topic": bearer(mint(SECRET, subscribe=[pattern("/topics/*")])),
    "bob": bearer(mint(SECRET, sub="bob")),
    "$admin": bearer(mint(SECRET, subscribe=["/topics/$admin"])),
    "in the query": {},
    "a bad token": bearer("not.a.token"),
    "the publish key": bearer("pk-both-paths"),
    "expired": bearer(mint(SECRET, subscribe=["*"], exp=int(time.time()) - 60)),
}


def status_of(server: ServerProcess, path: str, params: Any, headers: dict[str, str]) -> int:
    with httpx.stream(
        "GET", server.url + path, params=params, headers=headers, timeout=5
    ) as answer:
        return answer.status_code


@pytest.mark.parametrize("reading", ["open", "closed"])
def test_the_native_path_and_the_routes_agree(
    servers: dict[str, ServerProcess], reading: str
) -> None:
    native, routed = servers[f"{reading}/true"], servers[f"{reading}/false"]
    answers: dict[tuple[str, str, str], tuple[int, int]] = {}
    for shape, headers in TOKENS.items():
        query: dict[str, str] = {}
        if shape == "in the query":
            query = {"access_token": mint(SECRET, subscribe=["/topics/a"])}
        for topic in TOPIC_CASES:
            for path, params in (
                (f"/topics/{topic.replace('#', '%23')}", query),
                ("/events", {**query, "topic": [topic, "b"]}),
            ):
                key = (shape, topic, path.split("/")[1])
                answers[key] = (
                    status_of(native, path, params, headers),
                    status_of(routed, path, params, headers),
                )
    disagree = {key: pair for key, pair in answers.items() if pair[0] != pair[1]}
    assert not disagree
    served = {key for key, (status, _) in answers.items() if status == 200}
    assert ("nothing", "room-1#bob", "topics") not in served
    assert ("bob", "room-1#bob", "topics") in served
    assert ("a bad token", "a", "topics") not in served
    assert (("nothing", "a", "topics") in served) is (reading == "open")
