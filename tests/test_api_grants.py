"""One authorization model for the whole API, against a real ``sluiceway serve`` with anonymous
reading and writing both off: topics, ``/events`` and history; generations on every face (the
official OpenAI and Anthropic SDKs included); jobs, exports, files and uploads; WebSocket
channels. Every grant combination, refused tokens, the publish key, and streams that end when
the token they rest on expires."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import jwt
import openai
import pytest
from conftest import StartServer
from fake_llm import FakeLLM, Script
from serverproc import ServerProcess, SSEStream, client_for
from test_exports import demo_database, export_env
from test_generations import llm_env
from wsclient import raw_client

SECRET = "api-grants-test-secret-long-enough-for-hs256"
DETAIL = "https://mercure.rocks/authorization-detail"
AUDIENCE = "sluiceway-tests"
PUBLISH_KEY = "pk-api-grants-0123456789"


def token(
    *,
    publish: list[str | dict[str, str]] = (),  # type: ignore[assignment]
    subscribe: list[str | dict[str, str]] = (),  # type: ignore[assignment]
    secret: str = SECRET,
    **claims: Any,
) -> str:
    """A token granting ``publish``/``subscribe`` on those selectors (a string: Exact)."""
    details = [
        {"type": DETAIL, "actions": [action], "topics": [_matcher(s) for s in selectors]}
        for action, selectors in (("publish", publish), ("subscribe", subscribe))
        if selectors
    ]
    claims.setdefault("exp", int(time.time()) + 3600)  # outlives a long test run
    claims.setdefault("aud", AUDIENCE)
    if claims["aud"] is None:
        del claims["aud"]  # for a server with no audience configured
    return jwt.encode({"authorization_details": details, **claims}, secret, algorithm="HS256")


def _matcher(selector: str | dict[str, str]) -> dict[str, str]:
    return {"match": selector} if isinstance(selector, str) else selector


def pattern(value: str) -> dict[str, str]:
    return {"match": value, "match_type": "urlpattern"}


def bearer(value: str) -> dict[str, str]:
    return {"authorization": f"Bearer {value}"}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("grant-files")


@pytest.fixture(scope="module")
def server(
    fake: FakeLLM, files: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    database = demo_database(tmp_path_factory.getbasetemp())
    env = {
        **llm_env(fake),
        "SLUICEWAY_TOKEN_HMAC_SECRET": SECRET,
        "SLUICEWAY_TOKEN_AUDIENCE": AUDIENCE,
        "SLUICEWAY_TOKEN_LEEWAY": "0",
        "SLUICEWAY_PUBLISH_KEY": PUBLISH_KEY,
        "SLUICEWAY_ANONYMOUS_SUBSCRIBE": "false",
        "SLUICEWAY_ANONYMOUS_PUBLISH": "false",
        **export_env(database),
        "SLUICEWAY_FILES_DIR": str(files),
    }
    process = ServerProcess(env=env).start()
    yield process
    process.stop()


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=15.0) as client:
        yield client


@pytest.fixture(autouse=True)
def fresh_script(fake: FakeLLM) -> None:
    fake.script = Script()


def assert_refused(response: httpx.Response, status: int, error: str) -> None:
    """RFC 6750: the status, a Bearer challenge (with the error code when a token came), and
    a JSON body."""
    assert response.status_code == status, response.text
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer")
    if error == "unauthorized":
        assert "error=" not in challenge
    else:
        assert f'error="{error}"' in challenge
    assert response.json()["error"] == error


# -- topics, /events and history: every grant combination ----------------------------------

READ, WRITE = "read", "write"
#: (grants, (action, topic) -> allowed?) for topics "a", "b", "room-1".
COMBINATIONS: list[tuple[str, dict[str, Any], dict[tuple[str, str], bool]]] = [
    ("nothing", {}, {}),
    ("subscribe a", {"subscribe": ["/topics/a"]}, {(READ, "a"): True}),
    ("publish a", {"publish": ["/topics/a"]}, {(WRITE, "a"): True}),
    (
        "both on a",
        {"publish": ["/topics/a"], "subscribe": ["/topics/a"]},
        {(READ, "a"): True, (WRITE, "a"): True},
    ),
    (
        "pattern rooms",
        {"subscribe": [pattern("/topics/room-:n")], "publish": [pattern("/topics/room-*")]},
        {(READ, "room-1"): True, (WRITE, "room-1"): True},
    ),
    (
        "pattern with a regexp",
        {"subscribe": [pattern("/topics/(a|b)")]},
        {(READ, "a"): True, (READ, "b"): True},
    ),
    (
        "everything",
        {"publish": ["*"], "subscribe": ["*"]},
        {(a, t): True for a in (READ, WRITE) for t in ("a", "b", "room-1")},
    ),
    ("a Mercure topic is not an API topic", {"subscribe": ["https://example.com/a"]}, {}),
]


@pytest.mark.parametrize(
    ("grants", "allowed"),
    [(grants, allowed) for _, grants, allowed in COMBINATIONS],
    ids=[name for name, _, _ in COMBINATIONS],
)
def test_every_grant_combination_on_topics(
    http: httpx.Client, grants: dict[str, Any], allowed: dict[tuple[str, str], bool]
) -> None:
    headers = bearer(token(**grants))
    for topic in ("a", "b", "room-1"):
        may_write = allowed.get((WRITE, topic), False)
        response = http.post(f"/topics/{topic}", json={"data": topic}, headers=headers)
        if may_write:
            assert response.status_code == 200, response.text
        else:
            assert_refused(response, 403, "insufficient_scope")
        may_read = allowed.get((READ, topic), False)
        history = http.get(f"/topics/{topic}/history", headers=headers)
        with http.stream("GET", f"/topics/{topic}", headers=headers) as stream:
            status = stream.status_code
        with http.stream("GET", "/events", params={"topic": topic}, headers=headers) as events:
            events_status = events.status_code
        if may_read:
            assert (history.status_code, status, events_status) == (200, 200, 200)
        else:
            assert_refused(history, 403, "insufficient_scope")
            assert (status, events_status) == (403, 403)


def test_anonymous_requests_get_401_without_an_error_code(http: httpx.Client) -> None:
    assert_refused(http.post("/topics/a", json={"data": 1}), 401, "unauthorized")
    assert_refused(http.get("/topics/a/history"), 401, "unauthorized")
    assert_refused(http.get("/topics/a"), 401, "unauthorized")
    assert_refused(http.get("/events", params={"topic": "a"}), 401, "unauthorized")


def test_events_needs_a_grant_on_every_topic_it_follows(http: httpx.Client) -> None:
    headers = bearer(token(subscribe=["/topics/a"]))
    response = http.get("/events", params=[("topic", "a"), ("topic", "b")], headers=headers)
    assert_refused(response, 403, "insufficient_scope")


async def test_a_granted_reader_receives_what_a_granted_writer_publishes(
    server: ServerProcess,
) -> None:
    reader = bearer(token(subscribe=[pattern("/topics/news-*")]))
    writer = bearer(token(publish=["/topics/news-1"]))
    async with (
        client_for(server) as client,
        client.stream("GET", "/topics/news-1", headers=reader) as response,
    ):
        assert response.status_code == 200
        stream = SSEStream(response)
        published = await client.post("/topics/news-1", json={"data": "hi"}, headers=writer)
        assert published.status_code == 200
        event = await stream.next_event()
        assert (event.data, event.id) == ("hi", published.json()["id"])


def test_token_places_and_the_publish_key(http: httpx.Client) -> None:
    reader = token(subscribe=["/topics/a"])
    assert http.get("/topics/a/history", params={"access_token": reader}).status_code == 200
    http.cookies.set("mercureAccessToken", reader)
    try:
        assert http.get("/topics/a/history").status_code == 200
    finally:
        http.cookies.clear()
    # The publish key does everything; a wrong key is an invalid token.
    assert http.post("/topics/a", json={"data": 1}, headers=bearer(PUBLISH_KEY)).status_code == 200
    assert http.get("/topics/a/history", headers=bearer(PUBLISH_KEY)).status_code == 200
    assert_refused(
        http.post("/topics/a", json={"data": 1}, headers=bearer(PUBLISH_KEY + "x")),
        401,
        "invalid_token",
    )


def test_legacy_mercure_claims_grant_too(http: httpx.Client) -> None:
    legacy = jwt.encode(
        {
            "mercure": {"publish": ["/topics/a"], "subscribe": ["/topics/a"]},
            "aud": AUDIENCE,
            "exp": int(time.time()) + 3600,
        },
        SECRET,
        algorithm="HS256",
    )
    assert http.post("/topics/a", json={"data": 1}, headers=bearer(legacy)).status_code == 200
    assert http.get("/topics/a/history", headers=bearer(legacy)).status_code == 200
    refused = http.post("/topics/b", json={"data": 1}, headers=bearer(legacy))
    assert_refused(refused, 403, "insufficient_scope")


def _none_token() -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    claims = {"authorization_details": [], "aud": AUDIENCE}
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


BAD_TOKENS = {
    "expired": token(subscribe=["*"], exp=int(time.time()) - 60),
    "wrong signature": token(subscribe=["*"], secret="another-secret-long-enough-for-hs256"),
    "wrong audience": token(subscribe=["*"], aud="someone-else"),
    "alg none": _none_token(),
    "malformed": "not.a.jwt",
    "bad details": jwt.encode(
        {"authorization_details": [{"type": "mercure", "actions": ["fly"], "topics": ["*"]}]},
        SECRET,
        algorithm="HS256",
    ),
}


@pytest.mark.parametrize("bad", list(BAD_TOKENS.values()), ids=list(BAD_TOKENS))
def test_refused_tokens_are_401_everywhere(http: httpx.Client, bad: str) -> None:
    for method, path in (
        ("POST", "/topics/a"),
        ("GET", "/topics/a/history"),
        ("GET", "/topics/a"),
        ("POST", "/v1/generations"),
        ("GET", "/jobs"),
        ("GET", "/files/x.txt"),
    ):
        response = http.request(method, path, json={"data": 1}, headers=bearer(bad))
        assert_refused(response, 401, "invalid_token")
        # The description never says why (the Mercure draft: do not help an attacker).
        assert response.json()["detail"] == "the access token is not valid"


async def test_a_stream_ends_when_the_token_it_rests_on_expires(server: ServerProcess) -> None:
    short = token(subscribe=["/topics/expiring"], exp=int(time.time()) + 2)
    started = time.monotonic()
    async with (
        client_for(server) as client,
        client.stream("GET", "/topics/expiring", headers=bearer(short)) as response,
    ):
        assert response.status_code == 200
        stream = SSEStream(response)
        published = await client.post(
            "/topics/expiring", json={"data": "before"}, headers=bearer(PUBLISH_KEY)
        )
        assert (await stream.next_event()).data == "before"
        assert await stream.until_end(timeout=6) == []
    assert 1.0 < time.monotonic() - started < 5.0
    # The client reconnects with a fresh token from where it was: nothing is lost.
    fresh = token(subscribe=["/topics/expiring"])
    async with client_for(server) as client:
        await client.post("/topics/expiring", json={"data": "after"}, headers=bearer(PUBLISH_KEY))
        async with client.stream(
            "GET",
            "/topics/expiring",
            headers={**bearer(fresh), "last-event-id": published.json()["id"]},
        ) as response:
            assert (await SSEStream(response).next_event()).data == "after"


# -- generations, on every face ------------------------------------------------------------

STARTER = token(publish=["/generations"])
READER = token(subscribe=[pattern("/generations/*")])


def test_starting_a_generation_needs_publish_on_generations(http: httpx.Client) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}]}
    assert_refused(http.post("/v1/generations", json=body), 401, "unauthorized")
    reader_only = http.post("/v1/generations", json=body, headers=bearer(READER))
    assert_refused(reader_only, 403, "insufficient_scope")
    with http.stream("POST", "/v1/generations", json=body, headers=bearer(STARTER)) as response:
        assert response.status_code == 200
        text = response.read().decode()
    assert "Hello" in text


def test_reading_and_cancelling_a_generation(http: httpx.Client, fake: FakeLLM) -> None:
    fake.script = Script(tokens=["a", "b", "c"], stall_after=2)
    body = {"messages": [{"role": "user", "content": "hi"}]}
    alice = bearer(token(publish=["/generations"], sub="alice"))
    with http.stream("POST", "/v1/generations", json=body, headers=alice) as started:
        generation_id = started.headers["x-generation-id"]
        path = f"/v1/generations/{generation_id}"
        assert_refused(http.get(path), 401, "unauthorized")
        # Another starter (publish on /generations) has it on their own only.
        bob = bearer(token(publish=["/generations"], sub="bob"))
        assert_refused(http.get(path, headers=bob), 403, "insufficient_scope")
        assert_refused(http.post(f"{path}/cancel", headers=bob), 403, "insufficient_scope")
        other = token(subscribe=["/generations/someone-else"])
        assert_refused(http.get(path, headers=bearer(other)), 403, "insufficient_scope")
        assert http.get(path, headers=bearer(READER)).json()["id"] == generation_id
        with http.stream("GET", f"{path}/stream", headers=bearer(READER)) as follow:
            assert follow.status_code == 200
        # Reading is not cancelling; its owner may do both.
        refused = http.post(f"{path}/cancel", headers=bearer(READER))
        assert_refused(refused, 403, "insufficient_scope")
        assert http.get(path, headers=alice).json()["id"] == generation_id
        cancelled = http.post(f"{path}/cancel", headers=alice)
        assert cancelled.json()["state"] == "cancelled"


def test_the_openai_sdk_api_key_is_no_token(server: ServerProcess) -> None:
    """The SDK always sends its API key as a Bearer token: an opaque key counts as none (401,
    raised as the SDK's own error), a JWT is checked, and the publish key does everything."""
    messages = [{"role": "user", "content": "hi"}]
    for key, expected in (
        ("sk-not-a-token", openai.AuthenticationError),
        (READER, openai.PermissionDeniedError),
        (BAD_TOKENS["expired"], openai.AuthenticationError),
    ):
        sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)
        with pytest.raises(expected):
            sdk.chat.completions.create(model="fake-model", messages=messages)  # type: ignore[arg-type]
    for key in (STARTER, PUBLISH_KEY):
        sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)
        answer = sdk.chat.completions.create(model="fake-model", messages=messages)  # type: ignore[arg-type]
        assert answer.choices[0].message.content == "Hello, world!"
    ana = token(publish=["/generations"], sub="ana")
    sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key=ana, max_retries=0)
    response = sdk.responses.create(model="fake-model", input="hi")
    assert response.output_text == "Hello, world!"
    # Its starter may retrieve it, as may a grant on every generation; another starter not,
    # nor one without a sub (who is nobody in particular: see "Authorization").
    assert sdk.responses.retrieve(response.id).output_text == "Hello, world!"
    nobody = openai.OpenAI(base_url=f"{server.url}/v1", api_key=STARTER, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        nobody.responses.retrieve(response.id)
    bob = token(publish=["/generations"], sub="bob")
    other = openai.OpenAI(base_url=f"{server.url}/v1", api_key=bob, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        other.responses.retrieve(response.id)
    reader = openai.OpenAI(base_url=f"{server.url}/v1", api_key=READER, max_retries=0)
    assert reader.responses.retrieve(response.id).output_text == "Hello, world!"


def test_the_anthropic_sdk_sends_its_key_as_x_api_key(server: ServerProcess) -> None:
    messages = [{"role": "user", "content": "hi"}]
    refused = anthropic.Anthropic(base_url=server.url, api_key="sk-ant-opaque", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        refused.messages.create(model="fake-model", max_tokens=50, messages=messages)  # type: ignore[arg-type]
    sdk = anthropic.Anthropic(base_url=server.url, api_key=STARTER, max_retries=0)
    message = sdk.messages.create(model="fake-model", max_tokens=50, messages=messages)  # type: ignore[arg-type]
    assert message.content[0].text == "Hello, world!"  # type: ignore[union-attr]


def test_ai_sdk_chat_endpoints(http: httpx.Client) -> None:
    body = {
        "id": "chat-grants",
        "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}],
    }
    refused = http.post("/api/chat", json=body)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"
    with http.stream("POST", "/api/chat", json=body, headers=bearer(STARTER)) as response:
        assert response.status_code == 200
        response.read()
    # Refused before the chat is looked up: unknown and known chats answer alike.
    assert http.get("/api/chat/chat-grants/stream").status_code == 401
    assert http.get("/api/chat/no-such-chat/stream").status_code == 401
    assert http.post("/api/chat/no-such-chat/cancel").status_code == 401
    assert http.get("/api/chat/chat-grants/stream", headers=bearer(READER)).status_code == 200
    assert http.post("/api/chat/chat-grants/cancel", headers=bearer(READER)).status_code == 403


def test_a_chat_stays_with_the_user_who_started_it(http: httpx.Client) -> None:
    """Another user posting to the same chat id would repoint its resume to their answer."""

    def body(text: str) -> dict[str, Any]:
        part = {"type": "text", "text": text}
        return {"id": "chat-owned", "messages": [{"id": text, "role": "user", "parts": [part]}]}

    alice = bearer(token(publish=["/generations"], sub="alice"))
    mallory = bearer(token(publish=["/generations"], sub="mallory"))
    with http.stream("POST", "/api/chat", json=body("hi"), headers=alice) as response:
        assert response.status_code == 200
        response.read()
    taken = http.post("/api/chat", json=body("mine now"), headers=mallory)
    assert taken.status_code == 403 and taken.json()["error"] == "chat_taken"
    with http.stream("POST", "/api/chat", json=body("again"), headers=alice) as response:
        assert response.status_code == 200
        response.read()


# -- jobs, exports, files ------------------------------------------------------------------


def test_jobs_and_exports(http: httpx.Client) -> None:
    job = {"kind": "export", "params": {"table": "demo", "where": {"id.lte": 10}}}
    assert_refused(http.post("/jobs", json=job), 401, "unauthorized")
    # An export job writes a file others may download: its table must be readable too.
    jobs_only = http.post("/jobs", json=job, headers=bearer(token(publish=["/jobs"])))
    assert_refused(jobs_only, 403, "insufficient_scope")
    starter = bearer(token(publish=["/jobs"], subscribe=["/exports/demo"], sub="ana"))
    created = http.post("/jobs", json=job, headers=starter)
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    assert http.get(f"/jobs/{job_id}", headers=starter).json()["id"] == job_id  # hers
    assert job_id in {j["id"] for j in http.get("/jobs", headers=starter).json()["jobs"]}
    someone = bearer(token(publish=["/jobs"], subscribe=["/jobs"], sub="bo"))
    assert_refused(http.get(f"/jobs/{job_id}", headers=someone), 403, "insufficient_scope")
    assert job_id not in {j["id"] for j in http.get("/jobs", headers=someone).json()["jobs"]}
    watcher = bearer(token(subscribe=[f"/jobs/{job_id}", "/jobs"]))
    assert http.get(f"/jobs/{job_id}", headers=watcher).json()["id"] == job_id
    assert job_id in {j["id"] for j in http.get("/jobs", headers=watcher).json()["jobs"]}
    with http.stream("GET", f"/jobs/{job_id}/events", headers=watcher) as events:
        assert events.status_code == 200
    assert_refused(http.delete(f"/jobs/{job_id}", headers=watcher), 403, "insufficient_scope")
    assert http.delete(f"/jobs/{job_id}", headers=starter).status_code == 200

    assert_refused(http.get("/exports/demo.csv"), 401, "unauthorized")
    exporter = bearer(token(subscribe=["/exports/demo"]))
    assert_refused(http.get("/exports/kinds.csv", headers=exporter), 403, "insufficient_scope")
    export = http.get("/exports/demo.csv", params={"limit": "3"}, headers=exporter)
    assert export.status_code == 200
    assert len(export.text.strip().splitlines()) == 4  # the header and three rows


def test_files_and_uploads(http: httpx.Client, files: Path) -> None:
    writer = bearer(token(publish=[pattern("/files/docs/*")]))
    reader = bearer(token(subscribe=["/files/docs/a.txt"]))
    assert_refused(http.put("/files/docs/a.txt", content=b"x"), 401, "unauthorized")
    refused = http.put("/files/elsewhere.txt", content=b"x", headers=writer)
    assert_refused(refused, 403, "insufficient_scope")
    assert not (files / "elsewhere.txt").exists()
    assert http.put("/files/docs/a.txt", content=b"hello", headers=writer).status_code == 201
    assert_refused(http.get("/files/docs/a.txt"), 401, "unauthorized")
    assert_refused(http.get("/files/docs/a.txt", headers=writer), 403, "insufficient_scope")
    assert http.get("/files/docs/a.txt", headers=reader).content == b"hello"

    # A multipart upload: each file's name is checked as it comes; one refused part removes
    # the files already received.
    parts = [
        ("one", ("b.txt", b"1", "text/plain")),
        ("two", ("../outside.txt", b"2", "text/plain")),
    ]
    refused = http.post("/uploads", data={"path": "docs"}, files=parts, headers=writer)
    assert refused.status_code in (400, 403), refused.text
    assert not (files / "docs" / "b.txt").exists()
    parts = [("one", ("b.txt", b"1", "text/plain")), ("two", ("c.txt", b"2", "text/plain"))]
    outside = http.post("/uploads", files=parts, headers=writer)  # the root, not docs/
    assert_refused(outside, 403, "insufficient_scope")
    assert not (files / "b.txt").exists()
    assert_refused(http.post("/uploads", files=parts), 401, "unauthorized")
    stored = http.post("/uploads", data={"path": "docs"}, files=parts, headers=writer)
    assert stored.status_code == 201, stored.text
    assert (files / "docs" / "c.txt").read_bytes() == b"2"


# -- private topics, names with "#" -----------------------------------------------------------


def test_private_topics_are_not_read_anonymously_over_http(start_server: StartServer) -> None:
    """``$name`` and ``name#users`` topics (Centrifugo's private channels) are private over
    HTTP too: anonymous reading, on by default, does not reach them."""
    server = start_server(env={"SLUICEWAY_TOKEN_HMAC_SECRET": SECRET})
    with httpx.Client(base_url=server.url, timeout=10) as http:
        for topic in ("%24secret", "chat%23alice"):
            assert http.post(f"/topics/{topic}", json={"data": "x"}).status_code == 200
            assert_refused(http.get(f"/topics/{topic}/history"), 401, "unauthorized")
            assert_refused(http.get(f"/topics/{topic}"), 401, "unauthorized")  # not natively
        events = http.get("/events", params=[("topic", "open"), ("topic", "$secret")])
        assert_refused(events, 401, "unauthorized")
        alice = bearer(token(sub="alice", aud=None))
        bob = bearer(token(sub="bob", aud=None))
        assert http.get("/topics/chat%23alice/history", headers=alice).status_code == 200
        assert_refused(
            http.get("/topics/chat%23alice/history", headers=bob), 403, "insufficient_scope"
        )
        granted = bearer(token(subscribe=["/topics/$secret"], aud=None))  # "$" stays literal
        assert http.get("/topics/%24secret/history", headers=granted).json()["events"]


def test_a_grant_on_a_topic_does_not_cover_its_user_channels(http: httpx.Client) -> None:
    """Resources are URL paths with "#" percent-encoded: a pattern for room-42 cannot match
    room-42#alice through a URL fragment."""
    room = bearer(
        token(publish=[pattern("/topics/room-42")], subscribe=[pattern("/topics/room-42")])
    )
    assert http.post("/topics/room-42", json={"data": 1}, headers=room).status_code == 200
    for path in ("/topics/room-42%23alice", "/topics/room-42%23alice/history"):
        response = http.request(
            "POST" if "history" not in path else "GET", path, json={"data": 1}, headers=room
        )
        assert_refused(response, 403, "insufficient_scope")
    alice = bearer(token(publish=["/topics/room-42%23alice"]))
    assert http.post("/topics/room-42%23alice", json={"data": 1}, headers=alice).status_code == 200


# -- writes from other web origins -------------------------------------------------------------


def test_writes_from_other_origins_are_refused(start_server: StartServer) -> None:
    """A page elsewhere can make a browser POST here without a preflight (text/plain): with
    anonymous publishing on (loopback), that would publish. Browsers say where they come
    from; other clients send nothing and are unaffected."""
    server = start_server()
    url = f"{server.url}/topics/csrf"
    body = '{"data": "from elsewhere"}'
    for headers in (
        {"origin": "https://evil.example", "sec-fetch-site": "cross-site"},
        {"origin": "http://localhost:3000", "sec-fetch-site": "same-site"},
        {"origin": "https://evil.example"},  # an older browser: no Sec-Fetch-Site
        {"origin": "null", "sec-fetch-site": "cross-site"},
    ):
        refused = httpx.post(url, content=body, headers={**headers, "content-type": "text/plain"})
        assert refused.status_code == 403, headers
        assert refused.json()["error"] == "cross_origin"
    assert httpx.get(f"{url}/history").json()["events"] == []  # nothing was written
    for headers in (
        {},  # curl, SDKs
        {"origin": server.url, "sec-fetch-site": "same-origin"},  # the web UI
        {"origin": server.url},  # an older browser, same origin
    ):
        assert httpx.post(url, content=body, headers=headers).status_code == 200, headers


def test_an_allowed_cors_origin_may_write(start_server: StartServer) -> None:
    server = start_server(env={"SLUICEWAY_CORS_ALLOW_ORIGINS": '["https://app.example"]'})
    headers = {"origin": "https://app.example", "sec-fetch-site": "cross-site"}
    allowed = httpx.post(f"{server.url}/topics/cors-write", json={"data": 1}, headers=headers)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    other = {"origin": "https://other.example", "sec-fetch-site": "cross-site"}
    refused = httpx.post(f"{server.url}/topics/cors-write", json={"data": 1}, headers=other)
    assert refused.status_code == 403


# -- WebSocket channels ----------------------------------------------------------------------


async def test_websocket_channels_follow_the_same_grants(server: ServerProcess) -> None:
    async with raw_client(server.url) as anonymous:
        await anonymous.connect()
        reply = await anonymous.request("subscribe", {"channel": "ws-a"})
        assert reply["error"]["code"] == 103, reply
    grants = token(subscribe=["/topics/ws-a"], publish=["/topics/ws-a"], sub="alice")
    async with raw_client(server.url) as alice:
        await alice.connect(token=grants)
        await alice.subscribe("ws-a")
        refused = await alice.request("subscribe", {"channel": "ws-b"})
        assert refused["error"]["code"] == 103, refused
        denied = await alice.request("publish", {"channel": "ws-b", "data": {"n": 1}})
        assert denied["error"]["code"] == 103, denied
        published = await alice.request("publish", {"channel": "ws-a", "data": {"n": 2}})
        assert "publish" in published, published
        assert [p["data"] for p in await alice.publications("ws-a", 1)] == [{"n": 2}]
    # A refreshed token that grants less leaves the channels it no longer allows.
    async with raw_client(server.url) as carol:
        both = ["/topics/ws-a", "/topics/ws-c"]
        await carol.connect(token=token(subscribe=both, sub="carol"))
        await carol.subscribe("ws-a")
        await carol.subscribe("ws-c")
        narrower = token(subscribe=["/topics/ws-c"], sub="carol")
        assert "refresh" in await carol.request("refresh", {"token": narrower})
        async with asyncio.timeout(5):
            while not any("unsubscribe" in p for p in carol.pushes):
                await carol.messages()
        assert [
            (p["channel"], p["unsubscribe"]["code"]) for p in carol.pushes if "unsubscribe" in p
        ] == [("ws-a", 2000)]
        async with httpx.AsyncClient() as http:
            url = f"{server.url}/topics/ws-c"
            await http.post(url, json={"data": "still here"}, headers=bearer(PUBLISH_KEY))
        assert [p["data"] for p in await carol.publications("ws-c", 1)] == ["still here"]
    async with raw_client(server.url) as mallory:
        await mallory.send_frame(
            json.dumps({"id": 1, "connect": {"token": BAD_TOKENS["alg none"]}})
        )
        code, _ = await mallory.closed()
        assert code == 3500  # invalid token


# -- the native stream path -----------------------------------------------------------------


def test_with_anonymous_reading_on_a_presented_token_must_still_be_valid(
    start_server: Any,
) -> None:
    """The native stream path serves anonymous readers; a request carrying a token takes the
    ASGI path, which checks it."""
    server = start_server(env={"SLUICEWAY_TOKEN_HMAC_SECRET": SECRET})
    with httpx.Client(base_url=server.url, timeout=10) as http:
        with http.stream("GET", "/topics/open") as stream:
            assert stream.status_code == 200
        wrong = token(subscribe=["*"], secret="another-secret-long-enough-for-hs256")
        assert_refused(http.get("/topics/open", headers=bearer(wrong)), 401, "invalid_token")
        refused = http.get("/topics/open", params={"access_token": wrong})
        assert_refused(refused, 401, "invalid_token")
        encoded = http.get(f"/topics/open?access%5Ftoken={wrong}")  # the name percent-encoded
        assert_refused(encoded, 401, "invalid_token")
        http.cookies.set("mercureAccessToken", wrong)
        assert_refused(http.get("/topics/open"), 401, "invalid_token")


def test_anonymous_publishing_is_for_loopback_without_a_key(start_server: StartServer) -> None:
    keyed = start_server(env={"SLUICEWAY_PUBLISH_KEY": PUBLISH_KEY})
    assert_refused(httpx.post(f"{keyed.url}/topics/a", json={"data": 1}), 401, "unauthorized")
