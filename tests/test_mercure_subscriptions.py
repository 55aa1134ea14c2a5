"""Mercure "Active Subscriptions" (the current revision of the draft) against a real
``sluiceway serve``: the private subscription events (SSE type ``mercure``) a stream's arrival
and departure publish, who receives them, and the subscriptions API (JSON, its cursor on the
``Link`` header) with its authorization."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, unquote

import httpx
import jwt
import orjson
import pytest
from serverproc import ServerProcess

from sluiceway.sse import Event, Parser

SECRET = "mercure-test-secret-long-enough-for-hs256"
HUB = "https://example.com/.well-known/mercure"
SUBSCRIPTIONS = "/.well-known/mercure/subscriptions"
#: Covers the collection, every per-matcher collection and every subscription (and its events).
EVERY_SUBSCRIPTION = {"match": SUBSCRIPTIONS + "{/*}?", "match_type": "urlpattern"}
#: What a watcher listens to: every subscription event.
WATCH_PATTERN = SUBSCRIPTIONS + "/*"
WATCH = [("match_urlpattern", WATCH_PATTERN)]
DETAIL = "https://mercure.rocks/authorization-detail"


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


def token(*details: dict[str, Any], **claims: Any) -> str:
    """A token whose ``subscribe`` details are ``details`` (``topics`` and an optional
    ``payload`` each)."""
    # An hour: tokens made when the module is imported must outlive the whole test run.
    claims.setdefault("exp", int(time.time()) + 3600)
    claims["authorization_details"] = [
        {"type": DETAIL, "actions": ["subscribe"], **detail} for detail in details
    ]
    return jwt.encode(claims, SECRET, algorithm="HS256")


def bearer(jwt_token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {jwt_token}"}


WATCHER = token({"topics": [EVERY_SUBSCRIPTION]}, sub="urn:example:watcher")


def unique(name: str) -> str:
    return f"https://example.com/{name}/{time.time_ns()}"


def expected_topic(match_type: str, match: str, subscriber: str) -> str:
    return f"{SUBSCRIPTIONS}/{match_type}/{quote(match, safe='')}/{quote(subscriber, safe='')}"


class Stream:
    """An open subscription whose events are read one at a time, each within a bound."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._chunks = response.iter_bytes()
        self._parser = Parser()
        self._pending: list[Event] = []

    def next(self) -> Event:
        while not self._pending:
            self._pending.extend(e for e in self._parser.feed(next(self._chunks)) if e.data)
        return self._pending.pop(0)

    def next_where(self, key: str, value: Any) -> tuple[Event, dict[str, Any]]:
        """The next subscription event whose ``key`` is ``value`` (others are skipped)."""
        while True:
            event = self.next()
            assert event.event == "mercure", event  # the hub's own event type
            document = orjson.loads(event.data)
            if document[key] == value:
                return event, document

    def next_about(self, subscriber: str) -> tuple[Event, dict[str, Any]]:
        return self.next_where("subscriber", subscriber)

    def next_on(self, match: str) -> tuple[Event, dict[str, Any]]:
        """The next event about a subscription with matcher ``match`` (each test's are
        unique)."""
        return self.next_where("match", match)


@contextlib.contextmanager
def stream(
    server: ServerProcess,
    params: list[tuple[str, str]],
    headers: dict[str, str] | None = None,
    read_timeout: float = 5.0,
) -> Iterator[Stream]:
    with httpx.stream(
        "GET",
        f"{server.url}/.well-known/mercure",
        params=params,
        headers=headers or {},
        timeout=httpx.Timeout(10, read=read_timeout),
    ) as response:
        assert response.status_code == 200
        yield Stream(response)


@contextlib.contextmanager
def watching(server: ServerProcess) -> Iterator[Stream]:
    """A stream of every subscription event, live from the moment it is returned: its own
    ``active: true`` has come back through it."""
    with stream(server, WATCH, bearer(WATCHER)) as watcher:
        _, own = watcher.next_on(WATCH_PATTERN)
        assert own["active"] is True
        yield watcher


def cursor(response: httpx.Response) -> str:
    """The ``last-event-id`` of the ``rel="mercure"`` ``Link`` header."""
    (raw,) = [value for name, value in response.headers.raw if name.lower() == b"link"]
    link = raw.decode("utf-8")
    assert link.startswith(f'<{HUB}>; rel="mercure"; last-event-id="'), link
    assert link.endswith('; type="mercure"; content-type="application/json"'), link
    return link.split('last-event-id="', 1)[1].split('"', 1)[0]


def api(server: ServerProcess, path: str, jwt_token: str | None = WATCHER) -> httpx.Response:
    headers = bearer(jwt_token) if jwt_token else {}
    return httpx.get(f"{server.url}{path}", headers=headers)


def wait_until_gone(server: ServerProcess, path: str) -> None:
    deadline = time.monotonic() + 5
    while api(server, path).status_code != 404:
        assert time.monotonic() < deadline, f"{path} is still listed"
        time.sleep(0.05)


def test_events_announce_a_subscriber_arriving_and_leaving(server: ServerProcess) -> None:
    topic = unique("books")
    pattern = unique("shelves") + "/:id"
    alice = f"https://example.com/users/alice/{time.time_ns()}"
    alice_token = token(
        {"topics": [{"match": topic}], "payload": {"tenant": "t1"}},
        sub=alice,
    )
    with watching(server) as watcher:
        params = [("match", topic), ("match_urlpattern", pattern)]
        with stream(server, params, bearer(alice_token)):
            arrived = [watcher.next_on(topic), watcher.next_on(pattern)]
        left = [watcher.next_on(topic), watcher.next_on(pattern)]
    subscriber = arrived[0][1]["subscriber"]
    assert subscriber.startswith("urn:uuid:")  # one random id per stream, never the sub
    assert alice not in str(arrived + left)
    exact = expected_topic("exact", topic, subscriber)
    by_pattern = expected_topic("urlpattern", pattern, subscriber)
    for (event, document), active in zip(arrived + left, [True, True, False, False], strict=True):
        assert event.id  # resumable, like any update
        assert event.event == "mercure"
        assert document["active"] is active
        assert document["type"] == "subscription"
        assert document["subscriber"] == subscriber
    documents = {d["id"]: d for _, d in arrived}
    assert set(documents) == {exact, by_pattern}
    assert documents[exact] == {  # the draft's document
        "id": exact,
        "type": "subscription",
        "match_type": "exact",
        "match": topic,
        "subscriber": subscriber,
        "active": True,
        "payload": {"tenant": "t1"},  # the first subscribe detail matching the matcher
    }
    assert documents[by_pattern]["match_type"] == "urlpattern"
    assert documents[by_pattern]["match"] == pattern
    assert "payload" not in documents[by_pattern]
    assert {d["id"] for _, d in left} == {exact, by_pattern}


def test_anonymous_subscribers_get_a_generated_id(server: ServerProcess) -> None:
    topic = unique("public")
    with watching(server) as watcher:
        with stream(server, [("match", topic)]):
            _, document = watcher.next_on(topic)
        assert document["active"] is True
        anonymous = document["subscriber"]
        assert anonymous.startswith("urn:uuid:")
        assert document["id"] == expected_topic("exact", topic, anonymous)
        _, gone = watcher.next_about(anonymous)
        assert gone["active"] is False and gone["match"] == topic


def test_subscription_events_are_private(server: ServerProcess) -> None:
    """Subscribers without a subscribe grant on the events' topics never see them, live or
    replayed, whatever they listen to."""
    topic = unique("private")
    someone = token({"topics": [{"match": topic}]}, sub="urn:example:someone")
    unrelated = bearer(token({"topics": [{"match": unique("other")}]}))
    replay = [*WATCH, ("match", "*"), ("last_event_id", "earliest")]
    for headers in ({}, unrelated):
        with stream(server, replay, headers, read_timeout=0.8) as outsider:
            with watching(server) as watcher, stream(server, [("match", topic)], bearer(someone)):
                watcher.next_on(topic)
            seen: list[Event] = []
            with contextlib.suppress(httpx.ReadTimeout):
                while True:
                    seen.append(outsider.next())
        assert all(e.event != "mercure" and '"subscription"' not in e.data for e in seen), seen


def test_a_subscription_ends_when_its_token_expires(server: ServerProcess) -> None:
    expiring = token(exp=int(time.time()) + 2)
    topic = unique("expiring")
    with (
        watching(server) as watcher,
        stream(server, [("match", topic)], bearer(expiring)) as expiring_stream,
    ):
        _, started = watcher.next_on(topic)
        assert started["active"] is True
        _, ended = watcher.next_on(topic)  # the client has not left
        assert ended["active"] is False
        with pytest.raises(StopIteration):
            expiring_stream.next()  # the server ended the stream


def test_one_token_in_two_tabs_is_two_subscribers(server: ServerProcess) -> None:
    topic = unique("twice")
    twice = bearer(token(sub=f"urn:example:twice:{time.time_ns()}"))
    with stream(server, [("match", topic)], twice), stream(server, [("match", topic)], twice):
        wait_for = f"{SUBSCRIPTIONS}/exact/{quote(topic, safe='')}"
        deadline = time.monotonic() + 5
        while len(listed := api(server, wait_for).json()["subscriptions"]) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    subscribers = {d["subscriber"] for d in listed}
    assert len(subscribers) == 2
    assert all(s.startswith("urn:uuid:") for s in subscribers)


def test_the_api_lists_active_subscriptions(server: ServerProcess) -> None:
    topic = unique("listed")
    bob_token = token({"topics": [{"match": "*"}], "payload": {"role": "reader"}}, sub="bob")
    by_matcher = f"{SUBSCRIPTIONS}/exact/{quote(topic, safe='')}"
    with watching(server) as watcher:
        with stream(server, [("match", topic)], bearer(bob_token)):
            event, document = watcher.next_on(topic)
            bob = document["subscriber"]
            single = expected_topic("exact", topic, bob)
            listing = api(server, SUBSCRIPTIONS)
            assert listing.status_code == 200
            assert listing.headers["content-type"] == "application/json"
            collection = listing.json()
            assert collection["id"] == SUBSCRIPTIONS
            assert collection["type"] == "subscriptions"
            # The last update the hub holds, and the client may read: its active event.
            assert cursor(listing) == event.id
            expected = {
                "id": single,
                "type": "subscription",
                "match_type": "exact",
                "match": topic,
                "subscriber": bob,
                "active": True,
                "payload": {"role": "reader"},
            }
            assert expected in collection["subscriptions"]

            per_matcher = api(server, by_matcher)
            assert per_matcher.json()["id"] == by_matcher
            assert per_matcher.json()["subscriptions"] == [expected]
            assert cursor(per_matcher) == event.id

            one = api(server, single)
            assert one.status_code == 200
            assert one.headers["content-type"] == "application/json"
            assert one.json() == expected  # the event's document, unmodified
            assert cursor(one) == event.id
            legacy = api(server, single.replace("/exact/", "/Exact/"))
            assert legacy.json() == expected  # earlier revisions' spelling of the path
        _, ended = watcher.next_about(bob)
        assert ended["active"] is False
    wait_until_gone(server, single)
    assert api(server, by_matcher).json()["subscriptions"] == []
    assert all(d["subscriber"] != bob for d in api(server, SUBSCRIPTIONS).json()["subscriptions"])


def test_the_cursor_names_no_update_the_client_may_not_read(server: ServerProcess) -> None:
    """Only this module's (private) subscription events are in the hub: a client whose grant
    covers the collection but no event is answered ``earliest``."""
    with watching(server):
        collection_only = token({"topics": [{"match": SUBSCRIPTIONS}]})
        response = api(server, SUBSCRIPTIONS, collection_only)
    assert response.status_code == 200
    assert cursor(response) == "earliest"


def test_the_api_needs_a_subscribe_grant_on_the_path(server: ServerProcess) -> None:
    topic = unique("guarded")
    by_matcher = f"{SUBSCRIPTIONS}/exact/{quote(topic, safe='')}"
    anonymous = api(server, SUBSCRIPTIONS, None)
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    assert "error=" not in anonymous.headers["www-authenticate"]
    elsewhere = api(server, SUBSCRIPTIONS, token({"topics": [{"match": topic}]}))
    assert elsewhere.status_code == 403
    assert 'error="insufficient_scope"' in elsewhere.headers["www-authenticate"]
    # A grant on one matcher's subscriptions opens that collection, not the others.
    one_matcher = token({"topics": [{"match": by_matcher + "{/*}?", "match_type": "urlpattern"}]})
    assert api(server, by_matcher, one_matcher).status_code == 200
    assert api(server, SUBSCRIPTIONS, one_matcher).status_code == 403
    assert api(server, f"{SUBSCRIPTIONS}/exact/x", one_matcher).status_code == 403
    # An exact grant on the canonical path holds however the client escapes the path.
    exact = token({"topics": [{"match": by_matcher}]})
    assert api(server, by_matcher.replace("%3A", ":"), exact).status_code == 200
    assert unquote(by_matcher.replace("%3A", ":")) == unquote(by_matcher)
    bad = api(server, SUBSCRIPTIONS, "garbage")
    assert bad.status_code == 401
    assert "invalid_token" in bad.headers["www-authenticate"]


def test_unknown_resources_are_404(server: ServerProcess) -> None:
    topic = unique("nobody")
    assert api(server, expected_topic("exact", topic, "urn:example:nobody")).status_code == 404
    for path in ("/Bogus/x", "/EXACT/x", "/exact/x/y/z", "/exact", "/exact//y"):
        response = api(server, SUBSCRIPTIONS + path)
        assert response.status_code == 404, path
    # Without a grant an unknown path is refused first: nothing is learnt.
    assert api(server, SUBSCRIPTIONS + "/Bogus/x", None).status_code == 401
    empty = api(server, f"{SUBSCRIPTIONS}/exact/{quote(topic, safe='')}")
    assert empty.status_code == 200 and empty.json()["subscriptions"] == []
