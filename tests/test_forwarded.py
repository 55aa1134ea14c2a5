"""Forwarded client addresses and the exposure rule, against a real ``sluiceway serve``.

A proxy is a peer that says whom it forwards for (``X-Forwarded-For``). Sluiceway believes it
only from the peers in ``forwarded_allow_ips`` (loopback by default): then every access line —
a request through the app, a stream served on the native path, a WebSocket handshake — names
the forwarded client; from any other peer the header is a lie and the peer is logged. Loopback
has many addresses (127.0.0.0/8), so a client bound to 127.0.0.2 is a peer that is not the
proxy. (Through real nginx: tests/test_deploy_nginx.py.)

Exposure: a server that clients elsewhere reach — bound beyond loopback, answering other host
names (``allowed_hosts``), or behind a declared proxy — publishes nothing anonymously unless
told to, and says so; and a request that came through a proxy never publishes anonymously
unless told to, even on the key-free development server.
"""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from conftest import StartServer
from pydantic import ValidationError
from serverproc import ServerProcess, overfill_bytes, wait_for
from websockets.asyncio.client import connect

from sluiceway.server.settings import Settings

PROXY = "127.0.0.1"  # a trusted peer by default
STRANGER = "127.0.0.2"  # a loopback peer that is not a trusted proxy


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    """The two-command server (no settings), with access logs."""
    process = ServerProcess(args=["--log-level", "info"]).start()
    yield process
    process.stop()


async def visit(server: ServerProcess, source: str, forwarded_for: str, case: str) -> None:
    """From ``source``, claiming to forward for ``forwarded_for``: a plain request (the app),
    a topic stream (the native path) and a WebSocket handshake, each marked with ``case``."""
    headers = {"x-forwarded-for": forwarded_for}
    transport = httpx.AsyncHTTPTransport(local_address=source)
    async with httpx.AsyncClient(base_url=server.url, transport=transport, timeout=10) as http:
        assert (await http.get(f"/healthz?case={case}", headers=headers)).status_code == 200
        async with http.stream("GET", f"/topics/{case}", headers=headers) as stream:
            assert stream.status_code == 200
    ws_url = f"ws://127.0.0.1:{server.port}/connection/websocket?case={case}"
    async with connect(
        ws_url, additional_headers=headers, local_addr=(source, 0), open_timeout=5
    ) as ws:
        await ws.send('{"id": 1, "connect": {}}')
        assert '"connect"' in str(await ws.recv())


def access_lines(server: ServerProcess, case: str) -> list[str]:
    return [line for line in server.output().splitlines() if case in line and " - " in line]


async def wait_for_lines(server: ServerProcess, case: str) -> list[str]:
    """The three access lines of ``case`` (the WebSocket's is written when it is accepted)."""

    def three() -> list[str] | None:
        lines = access_lines(server, case)
        return lines if len(lines) >= 3 else None

    result: list[str] = await wait_for(three, 10, f"three access lines for {case}")
    return result


async def test_a_trusted_proxy_names_the_client_on_every_path(server: ServerProcess) -> None:
    await visit(server, PROXY, "203.0.113.7", "via-proxy")
    lines = await wait_for_lines(server, "via-proxy")
    assert any('"GET /healthz?case=via-proxy' in line for line in lines), lines
    assert any('"GET /topics/via-proxy' in line for line in lines), lines  # native path
    assert any('"WebSocket /connection/websocket?case=via-proxy' in line for line in lines)
    for line in lines:
        assert re.search(r"INFO: +203\.0\.113\.7:\d+ - ", line), line


async def test_a_spoofed_header_from_another_peer_is_not_believed(server: ServerProcess) -> None:
    await visit(server, STRANGER, "203.0.113.8", "spoofed")
    lines = await wait_for_lines(server, "spoofed")
    for line in lines:
        assert re.search(r"INFO: +127\.0\.0\.2:\d+ - ", line), line
    assert "203.0.113.8" not in server.output()


# -- exposure ----------------------------------------------------------------------------------


def test_only_the_plain_loopback_server_publishes_anonymously() -> None:
    assert Settings().exposure is None
    assert Settings().anonymous_publish_allowed  # `uv run sluiceway serve` stays key-free
    loopback_names = Settings(allowed_hosts=["localhost:8000", "127.0.0.5", "[::1]"])
    assert loopback_names.exposure is None
    assert Settings(forwarded_allow_ips=[]).exposure is None  # believing nobody
    for exposed, reason in [
        (Settings(host="0.0.0.0"), "listening on 0.0.0.0"),
        (Settings(allowed_hosts=["app.example"]), "app.example"),
        (Settings(allowed_hosts=[".example.com"]), ".example.com"),
        (Settings(allowed_hosts=["*"]), "*"),
        (Settings(forwarded_allow_ips=["127.0.0.1"]), "behind a proxy"),
    ]:
        assert exposed.exposure is not None and reason in exposed.exposure
        assert not exposed.anonymous_publish_allowed
        assert exposed.exposed_reads  # the warning about anonymous reading fires
        assert not exposed.exposed_without_key
    asked = Settings(allowed_hosts=["app.example"], anonymous_publish=True)
    assert asked.anonymous_publish_allowed and asked.exposed_without_key


@pytest.mark.parametrize("bad", ["nonsense", "10.0.0.1/8", "", "example.com", "300.1.1.1"])
def test_forwarded_allow_ips_must_be_addresses(bad: str) -> None:
    with pytest.raises(ValidationError, match="forwarded_allow_ips"):
        Settings(forwarded_allow_ips=["127.0.0.1", bad])


def test_a_bad_forwarded_allow_ips_option_is_a_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sluiceway.cli", "serve", "--forwarded-allow-ips", "10.0.0.0/8,x"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "forwarded_allow_ips 'x': expected an IP address" in result.stderr


@pytest.mark.parametrize(
    "header",
    [
        {"x-forwarded-for": "203.0.113.7"},
        {"forwarded": "for=203.0.113.7"},
        {"x-real-ip": "203.0.113.7"},
    ],
)
def test_what_a_proxy_forwards_does_not_publish_anonymously(
    server: ServerProcess, header: dict[str, str]
) -> None:
    direct = httpx.post(f"{server.url}/topics/dev", json={"data": 1})
    assert direct.status_code == 200  # the key-free development server
    proxied = httpx.post(f"{server.url}/topics/dev", json={"data": 1}, headers=header)
    assert proxied.status_code == 401
    assert proxied.json()["error"] == "unauthorized"


def test_a_server_answering_other_names_publishes_nothing_anonymously() -> None:
    exposed = ServerProcess(env={"SLUICEWAY_ALLOWED_HOSTS": '["app.example"]'}).start()
    try:
        refused = httpx.post(f"{exposed.url}/topics/t", json={"data": 1})
        assert refused.status_code == 401
        output = exposed.output()
        assert "reachable from elsewhere (answering app.example (allowed_hosts))" in output
        assert "anonymous reading ON" in output
        assert "nobody can publish" in output
    finally:
        exposed.stop()


def test_anonymous_publishing_behind_a_proxy_only_when_asked_and_loudly() -> None:
    asked = ServerProcess(args=["--forwarded-allow-ips", PROXY, "--anonymous-publish"]).start()
    try:
        proxied = httpx.post(
            f"{asked.url}/topics/t", json={"data": 1}, headers={"x-forwarded-for": "203.0.113.7"}
        )
        assert proxied.status_code == 200
        output = asked.output()
        assert "reachable from elsewhere (behind a proxy at 127.0.0.1" in output
        assert "anonymous publishing ON" in output
    finally:
        asked.stop()


async def test_a_stuck_stream_behind_a_proxy_is_dropped_at_once(
    start_server: StartServer,
) -> None:
    """Through the app (the ASGI path), the scope's client is the forwarded one, which names
    no connection here; a subscriber past its buffer is still dropped by its socket at once,
    not after the 30 s write timeout."""
    server = start_server(
        env={
            "SLUICEWAY_NATIVE_STREAMS": "false",
            "SLUICEWAY_FORWARDED_ALLOW_IPS": '["127.0.0.1"]',
            "SLUICEWAY_BUFFER_EVENTS": "50",
            "SLUICEWAY_ANONYMOUS_PUBLISH": "true",
        }
    )
    loop = asyncio.get_running_loop()
    stuck = []
    for _ in range(3):  # subscribers that send their GET through "the proxy" and read nothing
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", server.port))
        request = (
            f"GET /topics/stuck HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            "X-Forwarded-For: 203.0.113.7\r\nAccept: text/event-stream\r\n\r\n"
        )
        await loop.sock_sendall(sock, request.encode())
        stuck.append(sock)
    ports = {sock.getsockname()[1] for sock in stuck}
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:

            async def all_open() -> bool:
                return (await http.get("/healthz")).json()["open_streams"] == len(stuck)

            await wait_for(all_open, 10, "the stuck streams are open")
            payload = "x" * 4000
            for n in range(overfill_bytes() // len(payload) + 200):
                await http.post("/topics/stuck", json={"data": f"{n} {payload}"})
            published = time.monotonic()
            await wait_for(
                lambda: not ports & server.connection_ports(),
                5,
                "the server drops the stuck connections",
            )
            assert time.monotonic() - published < 5  # not the write timeout
    finally:
        for sock in stuck:
            sock.close()


def test_the_peer_is_kept_under_one_name() -> None:
    from sluiceway.asgi import shutdown
    from sluiceway.uvicorn_adapter import http

    assert http.PEER_EXTENSION == shutdown.PEER_EXTENSION
    scope = {"client": ("203.0.113.7", 0), "extensions": {http.PEER_EXTENSION: ("127.0.0.1", 5)}}
    assert shutdown.peer_of(scope) == ("127.0.0.1", 5)
    assert shutdown.peer_of({"client": ("10.0.0.1", 9)}) == ("10.0.0.1", 9)
