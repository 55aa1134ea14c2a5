"""The Mercure protocol at ``/.well-known/mercure`` against a real ``sluiceway serve``, as the
current revision of the draft writes it: publish and subscribe, URL pattern matchers, canonical
and alternate topics, private updates and grants, publisher ids and resume, ``earliest``, the
``Mercure-Last-Event-ID`` response header, the protected resource metadata, refused tokens and
malformed requests; and the names of earlier revisions, still accepted."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
import pytest
from serverproc import ServerProcess
from wsclient import raw_client

from sluiceway.sse import Event, Parser

SECRET = "mercure-test-secret-long-enough-for-hs256"
HUB = "https://example.com/.well-known/mercure"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    env = {
        "SLUICEWAY_TOKEN_HMAC_SECRET": SECRET,
        "SLUICEWAY_TOKEN_LEEWAY": "0",
        "SLUICEWAY_MERCURE_PUBLIC_URL": HUB,
        "SLUICEWAY_ANONYMOUS_PUBLISH": "false",
    }
    process = ServerProcess(env=env).start()
    yield process
    process.stop()


DETAIL = "https://mercure.rocks/authorization-detail"


def token(*, publish: list[str] = (), subscribe: list[str] = (), **claims: Any) -> str:  # type: ignore[assignment]
    details = []
    if publish:
        details.append({"type": DETAIL, "actions": ["publish"], "topics": [*map(_m, publish)]})
    if subscribe:
        details.append({"type": DETAIL, "actions": ["subscribe"], "topics": [*map(_m, subscribe)]})
    # An hour: tokens made when the module is imported must outlive the whole test run.
    claims.setdefault("exp", int(time.time()) + 3600)
    return jwt.encode({"authorization_details": details, **claims}, SECRET, algorithm="HS256")


def _m(topic: str | dict[str, str]) -> dict[str, str]:
    return topic if isinstance(topic, dict) else {"match": topic}


PUBLISHER = token(publish=["*"])


def post_form(
    server: ServerProcess, form: list[tuple[str, str]], jwt_token: str = PUBLISHER
) -> httpx.Response:
    """Publish a form whose fields may repeat (several topics), or be malformed."""
    return httpx.post(
        f"{server.url}/.well-known/mercure",
        content=urlencode(form),
        headers={
            "authorization": f"Bearer {jwt_token}",
            "content-type": "application/x-www-form-urlencoded",
        },
    )


def publish(server: ServerProcess, jwt_token: str = PUBLISHER, **form: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {jwt_token}"} if jwt_token else {}
    return httpx.post(f"{server.url}/.well-known/mercure", data=form, headers=headers)


def read(
    server: ServerProcess,
    params: list[tuple[str, str]],
    count: int,
    *,
    headers: dict[str, str] | None = None,
    timeout: float = 3.0,
) -> tuple[httpx.Response, list[Event]]:
    """Subscribe, read ``count`` events (or what came within ``timeout``), leave."""
    events: list[Event] = []
    parser = Parser()
    deadline = time.monotonic() + timeout
    with httpx.stream(
        "GET",
        f"{server.url}/.well-known/mercure",
        params=params,
        headers=headers or {},
        timeout=httpx.Timeout(10, read=timeout),
    ) as response:
        if response.status_code != 200:
            response.read()
            return response, events
        try:
            for chunk in response.iter_bytes():
                events.extend(e for e in parser.feed(chunk) if e.data or e.event != "message")
                if len(events) >= count or time.monotonic() > deadline:
                    break
        except httpx.ReadTimeout:
            pass
    return response, events


def topic_of(name: str) -> str:
    return f"https://example.com/{name}/{time.time_ns()}"


def test_publish_then_replay_from_earliest(server: ServerProcess) -> None:
    topic = topic_of("books")
    ids = [publish(server, topic=topic, data=f"v{n}").text for n in range(3)]
    assert all(i.startswith("#") for i in ids)
    response, events = read(server, [("match", topic), ("last_event_id", "earliest")], 3)
    assert response.headers["mercure-last-event-id"] == "earliest"
    assert [(e.data, e.id) for e in events] == [(f"v{n}", ids[n]) for n in range(3)]


def test_url_pattern_matchers_select_topics(server: ServerProcess) -> None:
    base = topic_of("shelf")
    publish(server, topic=f"{base}/books/1", data="book")
    publish(server, topic=f"{base}/authors/1", data="author")
    publish(server, topic=f"{base}/books/2", data="book 2", type="update", retry="500")
    params = [("match_urlpattern", f"{base}/books/:id"), ("last_event_id", "earliest")]
    _, events = read(server, params, 2)
    assert [(e.data, e.event) for e in events] == [("book", "message"), ("book 2", "update")]


def test_publisher_ids_resume_exactly(server: ServerProcess) -> None:
    topic = topic_of("orders")
    for n in range(5):
        assert (
            publish(server, topic=topic, data=str(n), id=f"urn:order:{topic}:{n}").status_code
            == 200
        )
    duplicate = publish(server, topic=topic, data="again", id=f"urn:order:{topic}:2")
    assert duplicate.status_code == 409
    headers = {"last-event-id": f"urn:order:{topic}:2"}
    response, events = read(server, [("match", topic)], 2, headers=headers)
    assert response.headers["mercure-last-event-id"] == f"urn:order:{topic}:2"
    assert response.headers["last-event-id"] == f"urn:order:{topic}:2"  # its earlier name
    assert [e.data for e in events] == ["3", "4"]
    unknown = {"last-event-id": "urn:order:never"}
    response, events = read(server, [("match", topic)], 1, headers=unknown, timeout=0.5)
    assert response.headers["mercure-last-event-id"] == "earliest" and events == []
    live, _ = read(server, [("match", topic)], 1, timeout=0.3)
    assert "mercure-last-event-id" not in live.headers  # no cursor asked for, none answered


def test_private_updates_reach_only_matching_grants(server: ServerProcess) -> None:
    topic = topic_of("secret")
    other = topic_of("other")
    publish(server, topic=topic, data="public")
    publish(server, topic=topic, data="private", private="on")
    everything = [("match", "*"), ("last_event_id", "earliest")]
    _, anonymous = read(server, [("match", topic), ("last_event_id", "earliest")], 2, timeout=0.7)
    assert [e.data for e in anonymous] == ["public"]
    granted = {"authorization": f"Bearer {token(subscribe=[topic])}"}
    _, events = read(server, [("match", topic), ("last_event_id", "earliest")], 2, headers=granted)
    assert [e.data for e in events] == ["public", "private"]
    wrong = {"authorization": f"Bearer {token(subscribe=[other])}"}
    _, events = read(server, everything, 1000, headers=wrong, timeout=0.7)
    assert "public" in [e.data for e in events]
    assert all(e.data != "private" for e in events)


@pytest.mark.parametrize(
    ("bad", "status"),
    [
        (jwt.encode({"exp": int(time.time()) - 10}, SECRET, algorithm="HS256"), 401),
        (
            jwt.encode(
                {"exp": int(time.time()) + 60},
                "another-secret-long-enough-32bytes!!",
                algorithm="HS256",
            ),
            401,
        ),
        (jwt.encode({"exp": int(time.time()) + 60}, None, algorithm="none"), 401),
        ("garbage", 401),
    ],
    ids=["expired", "wrong-signature", "alg-none", "malformed"],
)
def test_refused_tokens(server: ServerProcess, bad: str, status: int) -> None:
    response = publish(server, jwt_token=bad, topic=topic_of("x"), data="d")
    assert response.status_code == status
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "invalid_token" in response.headers["www-authenticate"]
    headers = {"authorization": f"Bearer {bad}"}
    response, _ = read(server, [("match", "*")], 1, headers=headers)
    assert response.status_code == status


def test_publishing_needs_a_matching_grant(server: ServerProcess) -> None:
    topic = topic_of("grant")
    anonymous = publish(server, jwt_token="", topic=topic, data="d")
    assert anonymous.status_code == 401
    elsewhere = publish(server, jwt_token=token(publish=[topic_of("else")]), topic=topic, data="d")
    assert elsewhere.status_code == 403
    assert 'error="insufficient_scope"' in elsewhere.headers["www-authenticate"]
    assert (
        publish(server, jwt_token=token(publish=[topic]), topic=topic, data="d").status_code == 200
    )
    bearer = httpx.post(
        f"{server.url}/.well-known/mercure",
        data={"topic": topic},
        headers={"authorization": "Basic x"},
    )
    # Another scheme is as if no credentials came (RFC 6750 3.1): 401, a challenge without an
    # error code, pointing at the hub's metadata.
    assert bearer.status_code == 401
    assert bearer.headers["www-authenticate"] == (
        'Bearer resource_metadata="https://example.com/.well-known/oauth-protected-resource'
        '/.well-known/mercure"'
    )
    malformed = httpx.post(
        f"{server.url}/.well-known/mercure",
        data={"topic": topic},
        headers={"authorization": "Bearer"},
    )
    assert malformed.status_code == 400


@pytest.mark.parametrize(
    "form",
    [
        [("topic", "*"), ("data", "x")],
        [("data", "no topic")],
        [("topic", "t"), ("id", "#mine")],
        [("topic", "t"), ("id", "earliest")],
        [("topic", "t"), ("id", "a\u200bb")],
        [("topic", "t"), ("type", "mercure")],
        [("topic", "/.well-known/mercure/subscriptions/exact/a/b")],
        [("topic", "t"), ("retry", "-1")],
    ],
    ids=[
        "wildcard-topic",
        "no-topic",
        "hash-id",
        "earliest-id",
        "format-character",
        "the-hubs-type",
        "reserved",
        "bad-retry",
    ],
)
def test_malformed_updates_are_400(server: ServerProcess, form: list[tuple[str, str]]) -> None:
    response = post_form(server, form, PUBLISHER)
    assert response.status_code == 400, response.text


def test_invalid_utf_8_is_400(server: ServerProcess) -> None:
    for body in (b"topic=%FF&data=x", b"topic=t&data=%C3%28", b"topic=t&id=%80"):
        response = httpx.post(
            f"{server.url}/.well-known/mercure",
            content=body,
            headers={
                "authorization": f"Bearer {PUBLISHER}",
                "content-type": "application/x-www-form-urlencoded",
            },
        )
        assert response.status_code == 400, body
    response = httpx.get(f"{server.url}/.well-known/mercure?match=%FF")
    assert response.status_code == 400


def test_bad_matchers_are_400(server: ServerProcess) -> None:
    for params in (
        [("match_regexp", "x")],
        [("matchURLpattern", "x")],
        [("match_urlpattern", "https://e/(")],
        [("match", "a\u200eb")],
        [],
    ):
        response, _ = read(server, params, 1)
        assert response.status_code == 400, params


async def test_the_mercure_log_is_not_a_public_topic(server: ServerProcess) -> None:
    """Private updates live in the hub topic ``sluiceway.mercure``: the topic API and the
    WebSocket face refuse it, on the ASGI and the native stream paths alike."""
    publish(server, topic=topic_of("hidden"), data="private", private="on")
    async with httpx.AsyncClient(base_url=server.url) as http:
        for request in (
            http.get("/topics/sluiceway.mercure"),
            http.get("/events", params={"topic": "sluiceway.mercure"}),
            http.get("/topics/sluiceway.mercure/history"),
            http.post("/topics/sluiceway.mercure", json={"data": "x"}),
        ):
            response = await request
            assert response.status_code == 403
            assert response.json()["error"] == "internal_topic"
    async with raw_client(server.url) as client:
        await client.connect()
        refused = await client.request("subscribe", {"channel": "sluiceway.mercure"})
        assert refused["error"]["code"] == 103


def test_a_subscription_ends_when_its_token_expires(server: ServerProcess) -> None:
    topic = topic_of("expiring")
    expiring = token(subscribe=[topic], exp=int(time.time()) + 2)
    started = time.monotonic()
    with httpx.stream(
        "GET",
        f"{server.url}/.well-known/mercure",
        params={"match": topic},
        headers={"authorization": f"Bearer {expiring}"},
        timeout=10,
    ) as response:
        assert response.status_code == 200
        for _ in response.iter_bytes():
            pass  # keep-alives, until the server ends the stream
    assert 0.5 < time.monotonic() - started < 6


def test_head_opens_no_subscription(server: ServerProcess) -> None:
    before = httpx.get(f"{server.url}/healthz").json()["open_streams"]
    for _ in range(3):
        response = httpx.head(f"{server.url}/.well-known/mercure", params={"match": "*"})
        assert response.status_code == 200
    assert httpx.get(f"{server.url}/healthz").json()["open_streams"] == before


def test_earlier_drafts_tokens_and_claims_still_work(server: ServerProcess) -> None:
    """The legacy ``mercure: {publish, subscribe}`` claim, the ``authorization`` query
    parameter and the ``mercureAuthorization`` cookie of drafts before 08."""
    topic = topic_of("legacy")
    exp = int(time.time()) + 3600
    publisher = jwt.encode({"mercure": {"publish": [topic]}, "exp": exp}, SECRET, "HS256")
    response = httpx.post(
        f"{server.url}/.well-known/mercure",
        params={"authorization": publisher},
        data={"topic": topic, "data": "secret", "private": "on"},
    )
    assert response.status_code == 200, response.text
    subscriber = jwt.encode({"mercure": {"subscribe": [topic]}, "exp": exp}, SECRET, "HS256")
    params = [("match", topic), ("lastEventID", "earliest")]  # an earlier name, too
    with (
        httpx.Client(cookies={"mercureAuthorization": subscriber}) as client,
        client.stream(
            "GET", f"{server.url}/.well-known/mercure", params=params, timeout=5
        ) as stream,
    ):
        assert stream.status_code == 200
        parser = Parser()
        received = []
        for chunk in stream.iter_bytes():
            received += [e.data for e in parser.feed(chunk) if e.data]
            if received:
                break
    assert received == ["secret"]


def test_alternate_topics(server: ServerProcess) -> None:
    """The draft's example: a subscriber granted only its own namespace receives a private
    update about a book through the update's alternate topic."""
    book = topic_of("books")
    mine = book.replace("/books/", "/users/42/books/")
    subscriber = token(
        subscribe=[{"match": "https://example.com/users/42/*", "match_type": "urlpattern"}]
    )  # type: ignore[list-item]
    both = [("topic", book), ("topic", mine), ("data", "for 42"), ("private", "on")]
    only_book = token(publish=[book])
    refused = post_form(server, both, only_book)
    assert refused.status_code == 403  # publishing needs a grant on every topic
    published = post_form(server, both, PUBLISHER)
    assert published.status_code == 200
    headers = {"authorization": f"Bearer {subscriber}"}
    params = [("match", book), ("last_event_id", "earliest")]  # routed by the canonical topic
    _, events = read(server, params, 1, headers=headers)
    assert [e.data for e in events] == ["for 42"]
    _, events = read(server, [("match", mine), ("last_event_id", "earliest")], 1, headers=headers)
    assert [e.data for e in events] == ["for 42"]  # and by the alternate one
    _, events = read(server, params, 1, timeout=0.5)  # anonymous: private, not theirs
    assert events == []


def test_the_draft_shaped_token(server: ServerProcess) -> None:
    """A token as the current draft writes it: ``typ: at+jwt``, the detail type URI, a
    ``match_type: urlpattern`` matcher, an unknown action."""
    topic = topic_of("draft")
    publish(server, topic=topic, data="for you", private="on")
    detail = {
        "type": DETAIL,
        "actions": ["subscribe", "a-future-action"],
        "topics": [{"match": "https://example.com/draft/*", "match_type": "urlpattern"}],
    }
    claims = {"authorization_details": [detail], "exp": int(time.time()) + 600, "aud": HUB}
    draft = jwt.encode(claims, SECRET, algorithm="HS256", headers={"typ": "at+jwt"})
    headers = {"authorization": f"Bearer {draft}"}
    _, events = read(server, [("match", topic), ("last_event_id", "earliest")], 1, headers=headers)
    assert [e.data for e in events] == ["for you"]


def test_the_protected_resource_metadata(server: ServerProcess) -> None:
    metadata = httpx.get(
        f"{server.url}/.well-known/oauth-protected-resource/.well-known/mercure"
    ).json()
    assert metadata["resource"] == HUB
    assert metadata["authorization_details_types_supported"] == [DETAIL]
    assert metadata["mercure_cookie"] == "__Secure-mercure_access_token"
    assert metadata["mercure_subscriptions"] is True
    assert "header" in metadata["bearer_methods_supported"]


def test_the_names_of_earlier_revisions(server: ServerProcess) -> None:
    """``matchURLPattern``, ``matchExact``, ``lastEventID``, the detail type ``mercure`` and
    ``matchType: URLPattern``, and the ``mercureAccessToken`` cookie."""
    base = topic_of("earlier")
    publish(server, topic=f"{base}/a", data="a", private="on")
    old = jwt.encode(
        {
            "authorization_details": [
                {
                    "type": "mercure",
                    "actions": ["subscribe"],
                    "topics": [{"match": f"{base}/*", "matchType": "URLPattern"}],
                }
            ],
            "exp": int(time.time()) + 600,
        },
        SECRET,
        algorithm="HS256",
    )
    for params in (
        [("matchURLPattern", f"{base}/:x"), ("lastEventID", "earliest")],
        [("matchExact", f"{base}/a"), ("lastEventID", "earliest")],
    ):
        response, events = read(server, params, 1, headers={"cookie": f"mercureAccessToken={old}"})
        assert response.headers["mercure-last-event-id"] == "earliest"
        assert [e.data for e in events] == ["a"]
