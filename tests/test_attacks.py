"""The attacks of the security review, each run as an attacker would against real
``sluiceway serve`` processes on loopback (the browser ones are in ``test_attacks_browser``).

Each test carries out its attack and asserts the effect that must not happen (a transcript
read, a stream written into, a file served as a page, a token logged...), so that it failed on
the code the review attacked and holds now.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson
import pytest
from conftest import StartServer
from fake_llm import FakeLLM, Script
from serverproc import ServerProcess, SSEStream, wait_for
from sse_servers import Connection, ScriptedServer
from test_exports import demo_database, export_env
from test_generations import llm_env
from tokens import bearer, mint, pattern
from websockets.asyncio.client import connect
from wsclient import raw_client

SECRET = "attack-tests-secret-long-enough-for-hs256"
PUBLISH_KEY = "pk-attack-tests-0123456789"
TOKEN_ENV = {"SLUICEWAY_TOKEN_HMAC_SECRET": SECRET, "SLUICEWAY_TOKEN_LEEWAY": "0"}
#: Reading and writing need tokens: what an exposed deployment runs.
CLOSED_ENV = {
    **TOKEN_ENV,
    "SLUICEWAY_PUBLISH_KEY": PUBLISH_KEY,
    "SLUICEWAY_ANONYMOUS_SUBSCRIBE": "false",
    "SLUICEWAY_ANONYMOUS_PUBLISH": "false",
}
SLOW = Script(tokens=[f"t{n} " for n in range(30)], token_interval=0.05)


def token(**grants: Any) -> str:
    return mint(SECRET, **grants)


def deep(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = [value]
    return value


@pytest.fixture(scope="module")
def open_server(fake: FakeLLM) -> Iterator[ServerProcess]:
    """The key-free loopback default, with tokens verifiable too."""
    env = {**llm_env(fake), **TOKEN_ENV, "SLUICEWAY_WS_PUBLISH_CHANNELS": '["deep*"]'}
    server = ServerProcess(env=env).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def closed_server(
    fake: FakeLLM, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    database = demo_database(tmp_path_factory.getbasetemp())
    env = {**llm_env(fake), **CLOSED_ENV, **export_env(database)}
    env["SLUICEWAY_FILES_DIR"] = str(tmp_path_factory.mktemp("closed-files"))
    server = ServerProcess(env=env).start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def fresh_script(fake: FakeLLM) -> None:
    fake.script = Script()


# -- 1. generation and job streams are not topics ---------------------------------------------


async def test_a_generation_cannot_be_read_or_written_through_the_topic_api(
    open_server: ServerProcess, fake: FakeLLM
) -> None:
    """On the key-free default anyone may use /topics: the generation's stream must not be one
    of them (read its transcript, inject a token, end it with a forged ``done``)."""
    fake.script = SLOW
    body = {"model": "fake-model", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    async with (
        httpx.AsyncClient(base_url=open_server.url, timeout=15) as http,
        http.stream("POST", "/v1/chat/completions", json=body) as victim,
    ):
        assert victim.status_code == 200
        generation_id = victim.headers["x-generation-id"]
        for topic in (f"gen:{generation_id}", f"sluiceway.gen:{generation_id}"):
            name = topic.replace("#", "%23")
            history = await http.get(f"/topics/{name}/history")
            assert "t0" not in history.text, topic
            for forged in ({"event": "token", "data": {"text": " INJECTED"}}, {"event": "done"}):
                await http.post(f"/topics/{name}", json={"data": forged.get("data"), **forged})
        async with raw_client(open_server.url) as ws:
            await ws.connect()
            for channel in (f"gen:{generation_id}", f"sluiceway.gen:{generation_id}"):
                reply = await ws.request("subscribe", {"channel": channel, "recover": True})
                assert "t0" not in json.dumps(reply)
        text = (await victim.aread()).decode()
    assert "INJECTED" not in text
    assert text.count('"content":"t') == 30  # every real token, to the end: no forged done
    assert text.rstrip().endswith("data: [DONE]")


async def test_internal_streams_are_refused_to_topic_grants(
    closed_server: ServerProcess, fake: FakeLLM
) -> None:
    """A token granting every topic reaches no generation's stream, on any path."""
    fake.script = SLOW
    everything = bearer(token(subscribe=[pattern("/topics/*"), "*"], publish=["*"]))
    starter = bearer(token(publish=["/generations"], sub="alice"))
    body = {"messages": [{"role": "user", "content": "hi"}]}
    async with (
        httpx.AsyncClient(base_url=closed_server.url, timeout=15) as http,
        http.stream("POST", "/v1/generations", json=body, headers=starter) as victim,
    ):
        generation_id = victim.headers["x-generation-id"]
        reading = SSEStream(victim)
        await reading.next_event()  # it has begun
        for topic in (f"gen:{generation_id}", f"sluiceway.gen:{generation_id}"):
            history = await http.get(f"/topics/{topic}/history", headers=everything)
            assert "t0" not in history.text, topic
            async with raw_client(closed_server.url) as ws:
                await ws.connect(token=token(subscribe=["*"], publish=["*"], sub="mallory"))
                reply = await ws.request("subscribe", {"channel": topic, "recover": True})
                assert "t0" not in json.dumps(reply), topic
        for topic in (f"sluiceway.gen:{generation_id}", "sluiceway.mercure"):
            history = await http.get(f"/topics/{topic}/history", headers=everything)
            assert history.status_code == 403 and history.json()["error"] == "internal_topic"
            events = await http.get("/events", params={"topic": topic}, headers=everything)
            assert events.status_code == 403
            forged = await http.post(f"/topics/{topic}", json={"data": "x"}, headers=everything)
            assert forged.status_code == 403
        await reading.until_end(timeout=10)


def test_listing_jobs_shows_only_ones_own(closed_server: ServerProcess) -> None:
    job = {"kind": "export", "params": {"table": "demo", "where": {"id.lte": 5}}}
    grants = {"publish": ["/jobs"], "subscribe": ["/jobs", "/exports/demo"]}
    alice = bearer(token(sub="alice", **grants))
    bob = bearer(token(sub="bob", **grants))
    with httpx.Client(base_url=closed_server.url, timeout=15) as http:
        alices = http.post("/jobs", json=job, headers=alice).json()["id"]
        bobs = http.post("/jobs", json=job, headers=bob).json()["id"]
        seen_by_alice = {j["id"] for j in http.get("/jobs", headers=alice).json()["jobs"]}
        assert alices in seen_by_alice and bobs not in seen_by_alice
        seen_by_bob = {j["id"] for j in http.get("/jobs", headers=bob).json()["jobs"]}
        assert bobs in seen_by_bob and alices not in seen_by_bob
        assert http.get(f"/jobs/{bobs}/events", headers=alice).status_code == 403
        everything = {
            j["id"] for j in http.get("/jobs", headers=bearer(PUBLISH_KEY)).json()["jobs"]
        }
        assert {alices, bobs} <= everything


# -- 2. uploaded pages are attachments, and sandboxed -----------------------------------------

XHTML = (
    b'<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"><body>'
    b"<script>fetch('/topics/pwned',{method:'POST',body:'{\"data\":1}'})</script></body></html>"
)


@pytest.mark.parametrize(
    ("name", "inline"),
    [
        ("y.xml", False),
        ("y.xhtml", False),
        ("y.html", False),
        ("y.svg", False),
        ("y.js", False),
        ("y.css", False),
        ("y.json", False),
        ("y.png", True),
        ("y.mp4", True),
        ("y.mp3", True),
        ("y.pdf", True),
        ("y.txt", True),
    ],
)
def test_only_passive_files_are_shown_inline_and_all_are_sandboxed(
    open_server: ServerProcess, name: str, inline: bool
) -> None:
    with httpx.Client(base_url=open_server.url, timeout=10) as http:
        put = http.put(f"/files/pub/{name}?overwrite=1", content=XHTML)
        assert put.status_code in (200, 201), put.text
        served = http.get(f"/files/pub/{name}")
        assert served.status_code == 200
        disposition = served.headers["content-disposition"]
        assert disposition.startswith("inline" if inline else "attachment"), disposition
        assert served.headers["content-security-policy"] == "sandbox"
        assert served.headers["x-content-type-options"] == "nosniff"
        missing = http.get("/files/pub/nothing-here.xml")
        assert missing.status_code == 404
        assert missing.headers["content-security-policy"] == "sandbox"


# -- 3. DNS rebinding: only loopback hosts while bound to loopback ----------------------------


async def test_a_foreign_host_is_refused_on_every_path(open_server: ServerProcess) -> None:
    evil = {"host": f"rebound.example:{open_server.port}"}
    async with httpx.AsyncClient(base_url=open_server.url, timeout=10) as http:
        for method, path in [
            ("GET", "/topics/news"),  # the native path
            ("GET", "/events?topic=news"),
            ("POST", "/topics/news"),
            ("GET", "/files/pub/y.txt"),
            ("GET", "/exports/demo.csv"),
            ("POST", "/v1/chat/completions"),
            ("GET", "/"),
            ("GET", "/.well-known/mercure?match=a"),
        ]:
            async with http.stream(method, path, headers=evil, json={"data": 1}) as answer:
                assert answer.status_code == 421, (method, path, answer.status_code)
                assert orjson.loads(await answer.aread())["error"] == "host_not_allowed"
        for host in ("localhost", "127.0.0.1", "[::1]", "LOCALHOST."):
            good = await http.get("/healthz", headers={"host": f"{host}:{open_server.port}"})
            assert good.status_code == 200, host
    assert handshake(open_server.port, host=evil["host"]).startswith(b"HTTP/1.1 421")
    assert handshake(open_server.port).startswith(b"HTTP/1.1 101")


def test_allowed_hosts_are_answered(start_server: StartServer) -> None:
    server = start_server(env={"SLUICEWAY_ALLOWED_HOSTS": '["app.example", ".corp.example"]'})
    for host, status in [
        ("app.example", 200),
        (f"app.example:{server.port}", 200),
        ("eu.corp.example", 200),
        ("corp.example", 200),
        ("evilcorp.example", 421),
        ("app.example.evil", 421),
    ]:
        assert httpx.get(f"{server.url}/healthz", headers={"host": host}).status_code == status


# -- 4. a Mercure id must not break every subscription ----------------------------------------


async def test_a_mercure_id_cannot_break_subscriptions(open_server: ServerProcess) -> None:
    """An id echoed in a response header once broke every subscription until it left
    history (and leaked a hub subscription each time): ids with control or format characters
    are refused, and any other text is written as UTF-8."""
    topic = f"https://example.com/ids/{time.monotonic_ns()}"
    mercure = "/.well-known/mercure"
    async with httpx.AsyncClient(base_url=open_server.url, timeout=10) as http:
        for bad in ("a\x01b", "a\x7fb", "a\u200bb", "a\x85b"):
            refused = await http.post(mercure, data={"topic": topic, "data": "x", "id": bad})
            assert refused.status_code == 400, repr(bad)
        snowman = f"urn:☃:{time.monotonic_ns()}"
        published = await http.post(mercure, data={"topic": topic, "data": "1", "id": snowman})
        assert published.status_code == 200 and published.text == snowman
        before = (await http.get("/healthz")).json()["open_streams"]
        for headers, params in [
            ({}, {"match": "*"}),
            ({}, {"match": topic, "last_event_id": "earliest"}),
            ({"last-event-id": snowman.encode()}, {"match": topic}),  # as a browser sends it
            ({}, {"match": topic, "last_event_id": snowman}),
        ]:
            async with http.stream("GET", mercure, params=params, headers=headers) as response:
                assert response.status_code == 200, (headers, params)
                if "last_event_id" in params or headers:
                    (last,) = [v for k, v in response.headers.raw if k == b"mercure-last-event-id"]
                    expected = "earliest" if params.get("last_event_id") == "earliest" else snowman
                    assert last.decode("utf-8") == expected  # UTF-8 on the wire
                if headers:  # resumed after it: the next update comes
                    stream = SSEStream(response)
                    await http.post(mercure, data={"topic": topic, "data": "2"})
                    assert (await stream.next_event()).data == "2"

        async def released() -> bool:
            return (await http.get("/healthz")).json()["open_streams"] <= before

        await wait_for(released, 5, "subscriptions released")


# -- 5. a pattern grant does not read other users' topics -------------------------------------


@pytest.mark.parametrize("native", [True, False])
def test_a_pattern_grant_does_not_reach_user_topics(
    start_server: StartServer, native: bool
) -> None:
    env = {**CLOSED_ENV, "SLUICEWAY_NATIVE_STREAMS": str(native).lower()}
    server = start_server(env=env)
    rooms = bearer(token(subscribe=[pattern("/topics/room-:id")], sub="mallory"))
    with httpx.Client(base_url=server.url, timeout=5) as http:
        for topic in ("room-42", "room-42%23alice"):
            published = http.post(
                f"/topics/{topic}", json={"data": "secret"}, headers=bearer(PUBLISH_KEY)
            )
            assert published.status_code == 200
        assert http.get("/topics/room-42/history", headers=rooms).status_code == 200
        for path in ("/topics/room-42%23alice/history", "/topics/room-42%23alice"):
            assert http.get(path, headers=rooms).status_code == 403, path
        events = http.get("/events", params={"topic": "room-42#alice"}, headers=rooms)
        assert events.status_code == 403
        exact = bearer(token(subscribe=["/topics/room-42%23alice"]))
        alice = bearer(token(sub="alice"))
        for allowed in (exact, alice):
            assert http.get("/topics/room-42%23alice/history", headers=allowed).status_code == 200


# -- 6. the proxy's allow-list is checked on the normalized URL -------------------------------


async def upstream_files(connection: Connection) -> None:
    await connection.respond(200, f"upstream {connection.request.path}".encode())


def test_encoded_dot_segments_do_not_escape_the_allow_list(start_server: StartServer) -> None:
    with ScriptedServer(upstream_files) as upstream:
        allow = json.dumps([f"{upstream.url}/feeds/"])
        server = start_server(env={"SLUICEWAY_PROXY_ALLOW": allow})
        for sneaky in (
            "/feeds/%2e%2e/admin.txt",
            "/feeds/.%2e/admin.txt",
            "/feeds/%2E%2E/admin.txt",
            "/feeds/..%2fadmin.txt",
            "/feeds/%2e%2e%2fadmin.txt",
            "/feeds/..%5cadmin.txt",
            "/feeds/..\\admin.txt",
            "/feeds/a/../../admin.txt",
        ):
            answer = httpx.get(f"{server.url}/proxy", params={"url": upstream.url + sneaky})
            assert answer.status_code in (400, 403), sneaky
            assert answer.headers["content-security-policy"] == "sandbox"
        assert not any("admin" in request.path for request in upstream.requests)
        fine = httpx.get(f"{server.url}/proxy", params={"url": f"{upstream.url}/feeds/./%61.txt"})
        assert fine.status_code == 200 and fine.text == "upstream /feeds/a.txt"  # as checked
        assert fine.headers["x-content-type-options"] == "nosniff"
        bad_port = httpx.get(f"{server.url}/proxy", params={"url": "http://127.0.0.1:1:80/"})
        assert (bad_port.status_code, bad_port.json()["error"]) == (400, "invalid_url")


# -- 7. generations, chats and jobs belong to whoever started them ----------------------------


async def test_nobody_else_may_read_or_cancel_ones_generation(
    closed_server: ServerProcess, fake: FakeLLM
) -> None:
    fake.script = Script(tokens=[f"t{n} " for n in range(40)], token_interval=0.05)
    alice = bearer(token(publish=["/generations"], sub="alice"))
    mallory = bearer(token(publish=["/generations"], subscribe=["/generations"], sub="mallory"))
    body = {"messages": [{"role": "user", "content": "hi"}]}
    async with (
        httpx.AsyncClient(base_url=closed_server.url, timeout=15) as http,
        http.stream("POST", "/v1/generations", json=body, headers=alice) as own,
    ):
        path = f"/v1/generations/{own.headers['x-generation-id']}"
        assert (await http.post(f"{path}/cancel", headers=mallory)).status_code == 403
        assert (await http.get(path, headers=mallory)).status_code == 403
        assert (await http.get(f"{path}/stream", headers=mallory)).status_code == 403
        assert (await http.get(path, headers=alice)).json()["state"] == "running"
        cancelled = await http.post(f"{path}/cancel", headers=alice)
        assert cancelled.json()["state"] == "cancelled"
        await own.aread()


async def test_nobody_else_may_cancel_ones_response_chat_or_job(
    closed_server: ServerProcess, fake: FakeLLM
) -> None:
    fake.script = Script(tokens=[f"t{n} " for n in range(40)], token_interval=0.05)
    grants = {"publish": ["/generations", "/jobs"], "subscribe": ["/exports/slow"]}
    alice = bearer(token(sub="alice", **grants))
    mallory = bearer(token(sub="mallory", **grants))
    async with httpx.AsyncClient(base_url=closed_server.url, timeout=15) as http:
        response = await http.post(
            "/v1/responses",
            json={"model": "fake-model", "input": "hi", "background": True},
            headers=alice,
        )
        response_id = response.json()["id"]
        for method, path in (("GET", ""), ("POST", "/cancel")):
            refused = await http.request(
                method, f"/v1/responses/{response_id}{path}", headers=mallory
            )
            assert refused.status_code == 403, path
        chat = {
            "id": f"chat-{time.monotonic_ns()}",
            "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}],
        }
        async with http.stream("POST", "/api/chat", json=chat, headers=alice) as started:
            assert started.status_code == 200
            refused = await http.post(f"/api/chat/{chat['id']}/cancel", headers=mallory)
            assert refused.status_code == 403
            assert (
                await http.get(f"/api/chat/{chat['id']}/stream", headers=mallory)
            ).status_code == 403
            assert (
                await http.post(f"/api/chat/{chat['id']}/cancel", headers=alice)
            ).status_code == 200
        slow = {"kind": "export", "params": {"table": "slow"}}
        job = await http.post("/jobs", json=slow, headers=alice)
        job_id = job.json()["id"]
        assert (await http.delete(f"/jobs/{job_id}", headers=mallory)).status_code == 403
        assert (await http.get(f"/jobs/{job_id}", headers=mallory)).status_code == 403
        assert (await http.delete(f"/jobs/{job_id}", headers=alice)).status_code == 200
        await http.post(f"/v1/responses/{response_id}/cancel", headers=alice)


# -- 8. Mercure tokens are not API credentials ------------------------------------------------


def test_mercure_wildcards_do_not_reach_files_exports_jobs_or_generations(
    closed_server: ServerProcess,
) -> None:
    legacy_reader = mint(SECRET, mercure={"subscribe": ["*"]})
    legacy_writer = mint(SECRET, mercure={"publish": ["*"]})
    wildcard = token(subscribe=["*", pattern("/*")], publish=["*", pattern("/*")])
    with httpx.Client(base_url=closed_server.url, timeout=10) as http:
        assert (
            http.put("/files/f.txt", content=b"x", headers=bearer(PUBLISH_KEY)).status_code == 201
        )
        for reader in (legacy_reader, wildcard):
            assert http.get("/files/f.txt", headers=bearer(reader)).status_code == 403
            assert http.get("/exports/demo.csv", headers=bearer(reader)).status_code == 403
            assert http.get("/topics/news/history", headers=bearer(reader)).status_code == 200
        for writer in (legacy_writer, wildcard):
            assert http.put("/files/g.txt", content=b"x", headers=bearer(writer)).status_code == 403
            job = {"kind": "export", "params": {"table": "demo"}}
            assert http.post("/jobs", json=job, headers=bearer(writer)).status_code == 403
            body = {"messages": [{"role": "user", "content": "hi"}]}
            assert (
                http.post("/v1/generations", json=body, headers=bearer(writer)).status_code == 403
            )
            assert (
                http.post("/topics/news", json={"data": 1}, headers=bearer(writer)).status_code
                == 200
            )
            published = http.post(
                "/.well-known/mercure",
                data={"topic": "https://example.com/a", "data": "x"},
                headers=bearer(writer),
            )
            assert published.status_code == 200
        assert not (Path(closed_server.env["SLUICEWAY_FILES_DIR"]) / "g.txt").exists()
        # Rows are text anyone may have written: exports are sandboxed like files.
        export = http.get("/exports/demo.csv", params={"limit": 1}, headers=bearer(PUBLISH_KEY))
        assert export.status_code == 200
        assert export.headers["content-security-policy"] == "sandbox"
        assert export.headers["x-content-type-options"] == "nosniff"


# -- 9. WebSocket handshakes from other origins -----------------------------------------------


def handshake(port: int, *, host: str | None = None, origin: str | None = None) -> bytes:
    """A WebSocket handshake on a plain socket; the head of the server's answer."""
    lines = [
        "GET /connection/websocket HTTP/1.1",
        f"Host: {host or f'127.0.0.1:{port}'}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            data = sock.recv(4096)
            if not data:
                break
            head += data
    return head


async def test_websocket_handshakes_from_other_origins_are_refused(
    start_server: StartServer,
) -> None:
    """A page elsewhere opening a WebSocket to a developer's loopback server (cross-site
    WebSocket hijacking): browsers send Origin, and only the server's own and CORS's pass."""
    server = start_server(
        env={
            "SLUICEWAY_CORS_ALLOW_ORIGINS": '["https://app.example"]',
            "SLUICEWAY_WS_PUBLISH_CHANNELS": '["*"]',
        }
    )
    for origin in ("https://evil.example", "null", f"http://localhost:{server.port + 1}"):
        assert handshake(server.port, origin=origin).startswith(b"HTTP/1.1 403"), origin
    for origin in (None, f"http://127.0.0.1:{server.port}", "https://app.example"):
        assert handshake(server.port, origin=origin).startswith(b"HTTP/1.1 101"), origin
    async with raw_client(server.url, origin="https://app.example") as ws:  # type: ignore[arg-type]
        assert (await ws.connect())["client"]


# -- 10. tokens never reach the access log ----------------------------------------------------


async def test_tokens_in_query_strings_are_not_logged(start_server: StartServer) -> None:
    server = start_server(
        "--log-level", "info", env={**TOKEN_ENV, "SLUICEWAY_PUBLISH_KEY": PUBLISH_KEY}
    )
    reader = token(subscribe=["*"])
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
        async with http.stream("GET", "/topics/news", params={"access_token": reader}) as native:
            assert native.status_code == 200
        async with http.stream("GET", f"/topics/news?%61ccess_token={reader}") as encoded:
            assert encoded.status_code == 200  # the name is read percent-decoded...
        await http.post("/topics/news", params={"access_token": PUBLISH_KEY}, json={"data": 1})
        async with http.stream(
            "GET", "/.well-known/mercure", params={"match": "a", "authorization": reader}
        ) as mercure:
            assert mercure.status_code == 200
    async with connect(
        f"ws://127.0.0.1:{server.port}/connection/websocket?access_token={reader}", open_timeout=5
    ):
        pass
    await wait_for(lambda: "/connection/websocket" in server.output(), 5, "the log")
    log = server.output()
    assert "POST /topics/news?access_token=[redacted]" in log
    assert "%61ccess_token=[redacted]" in log  # ... and so is it redacted
    for secret in (reader, PUBLISH_KEY):
        assert secret not in log


# -- 11. anonymous clients are no user ----------------------------------------------------------


async def test_anonymous_websocket_clients_are_not_the_empty_user(
    open_server: ServerProcess,
) -> None:
    async with raw_client(open_server.url) as ws:
        await ws.connect()
        for channel in ("room#", "room#,bob", "room#,"):
            reply = await ws.request("subscribe", {"channel": channel})
            assert reply.get("error", {}).get("code") == 103, channel
    async with httpx.AsyncClient(base_url=open_server.url) as http:
        assert (await http.get("/topics/room%23/history")).status_code == 401
        empty_sub = bearer(token(sub=""))
        answer = await http.get("/topics/room%23,bob/history", headers=empty_sub)
        assert answer.status_code == 403


# -- 12. file grants follow symlinks ------------------------------------------------------------


def test_a_symlink_does_not_lead_out_of_a_granted_directory(
    start_server: StartServer, tmp_path: Path
) -> None:
    root = tmp_path / "files"
    (root / "pub").mkdir(parents=True)
    (root / "secret").mkdir()
    (root / "secret" / "s.txt").write_text("the secret")
    os.symlink("../secret/s.txt", root / "pub" / "link.txt")
    os.symlink("../secret", root / "pub" / "dir")
    server = start_server(env={**CLOSED_ENV, "SLUICEWAY_FILES_DIR": str(root)})
    reader = bearer(token(subscribe=[pattern("/files/pub/*")]))
    writer = bearer(token(publish=[pattern("/files/pub/*")]))
    with httpx.Client(base_url=server.url, timeout=5) as http:
        leaked = http.get("/files/pub/link.txt", headers=reader)
        assert leaked.status_code == 403 and "the secret" not in leaked.text
        assert http.get("/files/pub/dir/s.txt", headers=reader).status_code == 403
        put = http.put("/files/pub/dir/new.txt", content=b"x", headers=writer)
        assert put.status_code == 403
        form = http.post(
            "/uploads", data={"path": "pub/dir"}, files={"f": ("new2.txt", b"x")}, headers=writer
        )
        assert form.status_code == 403
        assert sorted(p.name for p in (root / "secret").iterdir()) == ["s.txt"]
        assert http.put("/files/pub/ok.txt", content=b"x", headers=writer).status_code == 201


# -- 13. a connection token names no internal topic -------------------------------------------


async def test_a_connection_token_cannot_subscribe_to_internal_topics(
    open_server: ServerProcess,
) -> None:
    """The ``channels`` claim (server-side subscriptions) once delivered every private Mercure
    update through ``sluiceway.mercure``."""
    for channel in ("sluiceway.mercure", "sluiceway.job:x", "sluiceway.gen:x"):
        async with raw_client(open_server.url) as ws:
            reply = await ws.request("connect", {"token": token(channels=[channel], sub="u")})
            assert reply.get("error", {}).get("code") == 103, channel
            assert "subs" not in reply.get("connect", {})


# -- 14. JWT claims ---------------------------------------------------------------------------


def test_tokens_must_expire_soon_and_be_meant_for_us(open_server: ServerProcess) -> None:
    hub = f"http://127.0.0.1:{open_server.port}/.well-known/mercure"
    grants = {"subscribe": ["/topics/x"]}
    refused = {
        "no exp": token(exp=None, **grants),
        "exp 1e308": token(exp=1e308, **grants),
        "exp in a year": token(exp=int(time.time()) + 365 * 86400, **grants),
        "another audience": token(aud="https://other.example", **grants),
        "an ID token's type": token(headers={"typ": "id_token+jwt"}, **grants),
        "a JWS of another kind": token(headers={"typ": "secevent+jwt"}, **grants),
    }
    accepted = {
        "our hub": token(aud=hub, **grants),
        "our origin": token(aud=[f"http://127.0.0.1:{open_server.port}", "x"], **grants),
        "at+jwt": token(headers={"typ": "at+jwt"}, **grants),
        "JWT": token(headers={"typ": "JWT"}, **grants),
    }
    with httpx.Client(base_url=open_server.url) as http:
        for what, bad in refused.items():
            answer = http.get("/topics/x/history", headers=bearer(bad))
            assert answer.status_code == 401, what
            assert answer.json()["error"] == "invalid_token", what
        for what, good in accepted.items():
            assert http.get("/topics/x/history", headers=bearer(good)).status_code == 200, what
    assert jwt.get_unverified_header(accepted["at+jwt"])["typ"] == "at+jwt"


# -- 15. no 5xx ---------------------------------------------------------------------------------


async def test_bad_input_is_a_4xx_everywhere(open_server: ServerProcess, fake: FakeLLM) -> None:
    nested = deep(300)
    async with httpx.AsyncClient(base_url=open_server.url, timeout=15) as http:
        # A topic that ended: the old code let anyone post to a finished generation's topic.
        done = await http.post(
            "/v1/generations", json={"messages": [{"role": "user", "content": "hi"}]}
        )
        generation_id = done.headers["x-generation-id"]
        for topic in (f"gen:{generation_id}", f"sluiceway.gen:{generation_id}"):
            answer = await http.post(f"/topics/{topic}", json={"data": "x"})
            assert answer.status_code < 500, (topic, answer.text)
        message = {"role": "user", "content": "hi"}
        for method, path, body in [
            ("POST", "/topics/deep", {"data": nested}),
            ("POST", "/v1/generations", {"messages": [message], "tools": [nested]}),
            (
                "POST",
                "/v1/chat/completions",
                {"model": "m", "messages": [message], "tools": [nested]},
            ),
            ("POST", "/v1/responses", {"model": "m", "input": "hi", "metadata": nested}),
            (
                "POST",
                "/v1/messages",
                {"model": "m", "max_tokens": 5, "messages": [message], "metadata": nested},
            ),
            ("POST", "/jobs", {"kind": "export", "params": {"table": "demo", "where": nested}}),
            (
                "POST",
                "/api/chat",
                {"id": "c", "messages": [{"id": "m", "role": "user", "parts": [nested]}]},
            ),
        ]:
            answer = await http.request(method, path, json=body)
            assert answer.status_code < 500, (path, answer.status_code, answer.text[:200])
        proxy = await http.get("/proxy", params={"url": "http://127.0.0.1:1:80/"})
        assert proxy.status_code < 500
    async with raw_client(open_server.url) as ws:
        await ws.connect()
        reply = await ws.request("publish", {"channel": "deep", "data": nested})
        assert "error" in reply
        assert "ping" in await ws.request("ping")  # still connected


def test_status_is_closed_when_reading_needs_a_token(closed_server: ServerProcess) -> None:
    with httpx.Client(base_url=closed_server.url) as http:
        assert http.get("/metrics").status_code == 401
        assert http.get("/healthz").json() == {"status": "ok"}  # load balancers still see it
        watcher = bearer(token(subscribe=["/metrics"]))
        assert "sluiceway_" in http.get("/metrics", headers=watcher).text
        assert "open_streams" in http.get("/healthz", headers=watcher).json()
        assert http.get("/metrics", headers=bearer(token(subscribe=["*"]))).status_code == 403


def test_serving_beyond_loopback_says_what_anyone_can_read(start_server: StartServer) -> None:
    server = start_server("--host", "0.0.0.0")
    assert wait_for_sync(lambda: "anonymous reading ON" in server.output(), 5)
    assert "/files" in server.output() or "files under" in server.output()


def wait_for_sync(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


# -- found by the review of the fixes --------------------------------------------------------


@pytest.fixture(scope="module")
def keyed_server(
    fake: FakeLLM, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A backend starts runs with the publish key; anyone may read topics anonymously."""
    database = demo_database(tmp_path_factory.getbasetemp())
    env = {**llm_env(fake), **TOKEN_ENV, "SLUICEWAY_PUBLISH_KEY": PUBLISH_KEY}
    env.update(export_env(database))
    env["SLUICEWAY_STATUS_PUBLIC"] = "false"
    server = ServerProcess(env=env).start()
    yield server
    server.stop()


async def test_runs_the_publish_key_started_are_nobody_elses(
    keyed_server: ServerProcess, fake: FakeLLM
) -> None:
    fake.script = Script(tokens=[f"t{n} " for n in range(40)], token_interval=0.05)
    key = bearer(PUBLISH_KEY)
    no_sub = bearer(token(publish=["/generations", "/jobs"], subscribe=["/generations", "/jobs"]))
    body = {"messages": [{"role": "user", "content": "hi"}]}
    async with (
        httpx.AsyncClient(base_url=keyed_server.url, timeout=15) as http,
        http.stream("POST", "/v1/generations", json=body, headers=key) as started,
    ):
        path = f"/v1/generations/{started.headers['x-generation-id']}"
        assert (await http.get(path)).status_code == 401  # anonymous reading: not runs
        assert (await http.get(path, headers=no_sub)).status_code == 403
        assert (await http.post(f"{path}/cancel", headers=no_sub)).status_code == 403
        job = await http.post(
            "/jobs", json={"kind": "export", "params": {"table": "slow"}}, headers=key
        )
        job_id = job.json()["id"]
        assert job_id not in (await http.get("/jobs")).text
        assert job_id not in (await http.get("/jobs", headers=no_sub)).text
        assert (await http.delete(f"/jobs/{job_id}", headers=no_sub)).status_code == 403
        assert (await http.get(path, headers=key)).json()["state"] == "running"
        assert (await http.post(f"{path}/cancel", headers=key)).json()["state"] == "cancelled"
        assert (await http.delete(f"/jobs/{job_id}", headers=key)).status_code == 200


def test_status_closed_while_reading_is_open(keyed_server: ServerProcess) -> None:
    with httpx.Client(base_url=keyed_server.url) as http:
        assert http.get("/metrics").status_code == 401
        assert http.get("/healthz").json() == {"status": "ok"}
        assert (
            http.get("/metrics", headers=bearer(token(subscribe=["/metrics"]))).status_code == 200
        )


def test_a_string_exp_is_no_expiry(open_server: ServerProcess) -> None:
    forever = token(exp=str(int(time.time()) + 10**9), subscribe=["/topics/x"])
    answer = httpx.get(f"{open_server.url}/topics/x/history", headers=bearer(forever))
    assert answer.status_code == 401


async def test_more_bad_input_is_a_4xx(open_server: ServerProcess, fake: FakeLLM) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": deep(300)}}
    message = {"role": "user", "content": "hi"}
    async with httpx.AsyncClient(base_url=open_server.url, timeout=15) as http:
        for path, body in [
            ("/v1/chat/completions", {"model": "m", "messages": [message], "tools": [tool]}),
            ("/v1/generations", {"messages": [message], "tools": [tool]}),
        ]:
            answer = await http.post(path, json=body)
            assert answer.status_code == 400, (path, answer.status_code, answer.text[:200])
        retry = await http.post(
            "/.well-known/mercure", data={"topic": "a", "data": "1", "retry": "9" * 25}
        )
        assert retry.status_code == 400


def test_more_proxy_urls_are_refused(start_server: StartServer) -> None:
    with ScriptedServer(upstream_files) as upstream:
        server = start_server(env={"SLUICEWAY_PROXY_ALLOW": json.dumps([f"{upstream.url}/feeds/"])})
        for url in (
            f"{upstream.url}/feeds/..;/admin.txt",
            f"{upstream.url}/feeds/%2e%2e;x/admin.txt",
            "http://[::1:80/feeds/",
            "http://a]b/",
        ):
            answer = httpx.get(f"{server.url}/proxy", params={"url": url})
            assert answer.status_code == 400, url
        assert not any("admin" in request.path for request in upstream.requests)


def test_a_referer_of_another_origin_is_a_foreign_page(open_server: ServerProcess) -> None:
    cookie = {"cookie": f"__Secure-mercure_access_token={token(publish=['*'])}"}
    with httpx.Client(base_url=open_server.url) as http:
        forged = http.post(
            "/topics/csrf", json={"data": 1}, headers={**cookie, "referer": "http://evil.example/"}
        )
        assert forged.status_code == 403
        bare = http.post("/topics/csrf", json={"data": 1}, headers=cookie)
        assert bare.status_code == 400  # a cookie, and no page to say where it came from
        same = f"http://127.0.0.1:{open_server.port}/ui"
        assert (
            http.post(
                "/topics/csrf", json={"data": 1}, headers={**cookie, "referer": same}
            ).status_code
            == 200
        )


def test_a_publish_pattern_does_not_reach_user_topics(start_server: StartServer) -> None:
    server = start_server(env=CLOSED_ENV)
    mallory = bearer(token(publish=[pattern("/topics/room-:id")], sub="mallory"))
    alice = bearer(token(sub="alice"))
    with httpx.Client(base_url=server.url) as http:
        assert http.post("/topics/room-42", json={"data": 1}, headers=mallory).status_code == 200
        refused = http.post("/topics/room-42%23alice", json={"data": 1}, headers=mallory)
        assert refused.status_code == 403
        assert (
            http.post("/topics/room-42%23alice", json={"data": 1}, headers=alice).status_code == 200
        )


async def test_mercure_forms_are_utf_8(open_server: ServerProcess) -> None:
    topic = f"https://example.com/café/{time.monotonic_ns()}"
    headers = {"content-type": "application/x-www-form-urlencoded"}
    async with httpx.AsyncClient(base_url=open_server.url, timeout=5) as http:
        raw = f"topic={topic}&data=€".encode()  # as curl -d sends it: not percent-encoded
        assert (
            await http.post("/.well-known/mercure", content=raw, headers=headers)
        ).status_code == 200
        params = {"match": topic, "last_event_id": "earliest"}
        async with http.stream("GET", "/.well-known/mercure", params=params) as response:
            assert (await SSEStream(response).next_event()).data == "€"
        invalid = await http.post(
            "/.well-known/mercure", content=b"topic=a&data=\xff", headers=headers
        )
        assert invalid.status_code == 400
