"""The deployment in ``deploy/``, run for real: Debian's nginx with ``deploy/nginx/sluiceway.conf``
(TLS with a certificate made here, HTTP/2 to browsers) in front of a real ``sluiceway serve``
set up as ``deploy/systemd/sluiceway.service`` sets it up (loopback, allowed_hosts, the proxy
trusted, a publish key); and the unit itself, checked by ``systemd-analyze``.

What a deployment must keep: events go out through nginx one by one, about as fast as
directly; WebSocket clients connect through it; a browser opens 20 streams to one origin over
HTTP/2 (HTTP/1.1 stops it at six); Sluiceway logs the real clients' addresses; and nobody
publishes through it without the key.
"""

from __future__ import annotations

import asyncio
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from browserproc import CHROMIUM, launch_chromium
from nginxproc import NGINX, OPENSSL, SERVER_NAME, NginxProcess
from playwright.sync_api import sync_playwright
from serverproc import HOST, ServerProcess, SSEStream, open_stream, wait_for
from websockets.asyncio.client import connect
from wsclient import RawClient

from sluiceway.server.settings import Settings

pytestmark = pytest.mark.skipif(
    not NGINX.exists() or OPENSSL is None,
    reason="nginx or openssl is not installed: the deployment is NOT tested",
)

UNIT = Path(__file__).resolve().parent.parent / "deploy" / "systemd" / "sluiceway.service"
KEY = "edge-publish-key"
AUTH = {"authorization": f"Bearer {KEY}"}
#: Another loopback address than nginx's own: the client whose address must reach the log.
CLIENT = "127.0.0.2"


def unit_environment() -> dict[str, str]:
    """The unit's ``Environment=`` settings (systemd unquotes them as a shell would)."""
    env = {}
    for line in UNIT.read_text().splitlines():
        if line.startswith("Environment="):
            (assignment,) = shlex.split(line.removeprefix("Environment="))
            name, _, value = assignment.partition("=")
            env[name] = value
    return env


@pytest.fixture(scope="module")
def deployed(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, NginxProcess]]:
    """Sluiceway as the unit runs it (its settings, with the test's name and a key), behind
    nginx; access logs on."""
    env = unit_environment()
    env.update(
        SLUICEWAY_ALLOWED_HOSTS=f'["{SERVER_NAME}"]',
        SLUICEWAY_ANONYMOUS_SUBSCRIBE="true",  # the browser's EventSources carry no token
        SLUICEWAY_CORS_ALLOW_ORIGINS="[]",
        SLUICEWAY_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db')}/s.db",
        SLUICEWAY_FILES_DIR=str(tmp_path_factory.mktemp("files")),
        SLUICEWAY_PUBLISH_KEY=KEY,
    )
    server = ServerProcess(env=env, args=["--log-level", "info"]).start()
    nginx = NginxProcess(server.port)
    try:
        nginx.start()
        yield server, nginx
    finally:
        nginx.stop()
        server.stop()


def through(nginx: NginxProcess, *, source: str | None = None) -> httpx.AsyncClient:
    """An HTTPS client of nginx (trusting its certificate), from ``source`` if given."""
    transport = httpx.AsyncHTTPTransport(verify=nginx.ssl_context(), local_address=source)
    return httpx.AsyncClient(base_url=nginx.https_url, transport=transport, timeout=10)


# -- the unit ----------------------------------------------------------------------------------


def test_the_unit_sets_real_settings_of_an_exposed_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in unit_environment().items():
        assert name.removeprefix("SLUICEWAY_").lower() in Settings.model_fields, name
        monkeypatch.setenv(name, value)
    settings = Settings()  # read from the environment, as the service reads them
    assert settings.exposure is not None
    assert not settings.anonymous_publish_allowed
    assert settings.trusted_proxies == ["127.0.0.1", "::1"]
    assert "serve --host 127.0.0.1 " in UNIT.read_text()  # behind the proxy only


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed: the systemd unit is NOT verified",
)
def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    # verify insists that ExecStart's program exists: point it at this environment's.
    installed = Path(sys.executable).parent / "sluiceway"
    text = UNIT.read_text()
    assert "/opt/sluiceway/.venv/bin/sluiceway" in text
    unit = tmp_path / "sluiceway.service"
    unit.write_text(text.replace("/opt/sluiceway/.venv/bin/sluiceway", str(installed)))
    verified = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert verified.returncode == 0, verified.stderr
    assert "sluiceway.service" not in verified.stderr, verified.stderr  # no unknown keys
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    level = re.search(r"Overall exposure level for sluiceway\.service: ([\d.]+)", security.stdout)
    if level is None:
        pytest.skip(f"this systemd-analyze has no offline security check: {security.stderr[:200]}")
    assert float(level[1]) <= 2.5, security.stdout  # systemd's scale: 0 (safe) to 10


# -- through nginx -------------------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def test_events_arrive_through_nginx_one_by_one(
    deployed: tuple[ServerProcess, NginxProcess],
) -> None:
    """A paced publisher, one subscriber directly and one through nginx (TLS): each event
    reaches both about as fast, and through nginx they arrive spread out as they were sent,
    not in a batch when a buffer fills or the stream ends."""
    server, nginx = deployed
    count, pace = 50, 0.02
    sent: dict[int, float] = {}
    arrived: dict[str, dict[int, float]] = {"direct": {}, "nginx": {}}

    async def read(stream: SSEStream, into: dict[int, float]) -> None:
        for _ in range(count):
            event = await stream.next_event(timeout=10)
            into[int(event.data)] = time.perf_counter()

    async with (
        httpx.AsyncClient(base_url=server.url, timeout=10) as direct,
        through(nginx) as edge,
        httpx.AsyncClient(base_url=server.url, timeout=10, headers=AUTH) as publisher,
        open_stream(direct, "/topics/paced") as direct_stream,
        open_stream(edge, "/topics/paced") as edge_stream,
    ):
        # Sluiceway asks proxies not to buffer streams (nginx obeys and drops the header).
        assert direct_stream.response.headers["x-accel-buffering"] == "no"
        readers = [
            asyncio.create_task(read(direct_stream, arrived["direct"])),
            asyncio.create_task(read(edge_stream, arrived["nginx"])),
        ]
        for index in range(count):
            sent[index] = time.perf_counter()
            published = await publisher.post("/topics/paced", json={"data": index})
            assert published.status_code == 200
            await asyncio.sleep(pace)
        await asyncio.wait_for(asyncio.gather(*readers), 20)

    latency = {
        path: [arrived[path][index] - sent[index] for index in range(count)] for path in arrived
    }
    figures = {
        path: (statistics.median(values), percentile(values, 0.99))
        for path, values in latency.items()
    }
    print(  # the figures the README quotes (pytest -s)
        "latency p50/p99 ms: "
        + ", ".join(
            f"{path} {p50 * 1e3:.2f}/{p99 * 1e3:.2f}" for path, (p50, p99) in figures.items()
        )
    )
    (direct_p50, _), (edge_p50, _) = figures["direct"], figures["nginx"]
    assert edge_p50 <= 2 * direct_p50 + 0.010, figures  # nginx adds little
    send_span = sent[count - 1] - sent[0]
    edge_times = [arrived["nginx"][index] for index in range(count)]
    # One by one: they arrive over as long as they were sent over, each soon after it was
    # sent (a batch would make the first ones wait for the last).
    assert edge_times[-1] - edge_times[0] >= 0.7 * send_span
    assert max(latency["nginx"]) < 0.5 * send_span, figures


async def test_a_websocket_client_subscribes_through_nginx(
    deployed: tuple[ServerProcess, NginxProcess],
) -> None:
    server, nginx = deployed
    url = f"wss://127.0.0.1:{nginx.https_port}/connection/websocket?case=edge-ws"
    async with connect(url, ssl=nginx.ssl_context(), local_addr=(CLIENT, 0), open_timeout=5) as ws:
        client = RawClient(ws)
        await client.connect()
        await client.subscribe("edge-news")
        async with httpx.AsyncClient(base_url=server.url, headers=AUTH) as http:
            assert (await http.post("/topics/edge-news", json={"data": "hello"})).status_code == 200
        (publication,) = await client.publications("edge-news", 1)
        assert publication["data"] == "hello"
    lines = await access_lines(server, "edge-ws", 1)
    assert lines[0].split(" - ")[0].endswith(f"{CLIENT}:0"), lines  # the client, not nginx


async def access_lines(server: ServerProcess, needle: str, count: int) -> list[str]:
    def found() -> list[str] | None:
        lines = [line for line in server.output().splitlines() if needle in line]
        return lines if len(lines) >= count else None

    result: list[str] = await wait_for(found, 10, f"{count} access lines with {needle}")
    return result


async def test_the_log_names_the_real_client(deployed: tuple[ServerProcess, NginxProcess]) -> None:
    """nginx connects from 127.0.0.1; the client from 127.0.0.2: the log names the client, for
    a request through the app and for a stream served on the native path. A client's own
    X-Forwarded-For is replaced by nginx, never believed."""
    server, nginx = deployed
    spoofed = {"x-forwarded-for": "198.51.100.66"}
    async with through(nginx, source=CLIENT) as edge:
        assert (await edge.get("/healthz?case=edge-plain", headers=spoofed)).status_code == 200
        async with edge.stream("GET", "/topics/edge-stream", headers=spoofed) as stream:
            assert stream.status_code == 200
    plain = await access_lines(server, "GET /healthz?case=edge-plain", 1)
    native = await access_lines(server, "GET /topics/edge-stream", 1)
    for line in plain + native:
        assert re.search(rf"INFO: +{re.escape(CLIENT)}:0 - ", line), line
    assert "198.51.100.66" not in server.output()


async def test_nobody_publishes_through_nginx_without_the_key(
    deployed: tuple[ServerProcess, NginxProcess],
) -> None:
    server, nginx = deployed
    async with through(nginx) as edge:
        refused = await edge.post("/topics/edge-guarded", json={"data": 1})
        assert refused.status_code == 401
        assert refused.json()["error"] == "unauthorized"
        for_the_name = await edge.post(
            "/topics/edge-guarded", json={"data": 1}, headers={"host": SERVER_NAME}
        )
        assert for_the_name.status_code == 401
        keyed = await edge.post(
            "/topics/edge-guarded", json={"data": 1}, headers={**AUTH, "host": SERVER_NAME}
        )
        assert keyed.status_code == 200
        foreign = await edge.get("/healthz", headers={"host": "elsewhere.example"})
        assert foreign.status_code == 421  # the Host nginx passes on is checked
    # Directly too: the server knows it is exposed (and said so when it started).
    async with httpx.AsyncClient(base_url=server.url) as direct:
        assert (await direct.post("/topics/edge-guarded", json={"data": 1})).status_code == 401
    assert "reachable from elsewhere" in server.output()


async def test_the_key_free_development_server_behind_nginx_refuses_anonymous_publishing() -> None:
    """`sluiceway serve` with no settings at all, put behind the proxy as it is: loopback
    publishes without a key, what nginx forwards does not."""
    server = ServerProcess().start()
    nginx = NginxProcess(server.port)
    try:
        nginx.start()
        async with through(nginx) as edge, httpx.AsyncClient(base_url=server.url) as direct:
            assert (await edge.post("/topics/dev", json={"data": 1})).status_code == 401
            assert (await direct.post("/topics/dev", json={"data": 1})).status_code == 200
    finally:
        nginx.stop()
        server.stop()


# -- HTTP/2 in a browser -------------------------------------------------------------------------

#: Opens ``count`` EventSources on this page's origin; counts those open and their messages.
OPEN_STREAMS = """({count, prefix}) => {
    window.opened = 0;
    window.received = [];
    for (let i = 0; i < count; i++) {
        const source = new EventSource(`/topics/${prefix}${i}`);
        source.onopen = () => { window.opened += 1; };
        source.onmessage = (event) => { window.received.push(event.data); };
    }
}"""


@pytest.mark.skipif(not CHROMIUM.exists(), reason="chromium is not installed: HTTP/2 NOT tested")
def test_chromium_opens_20_streams_to_one_origin_over_http2(
    deployed: tuple[ServerProcess, NginxProcess],
) -> None:
    server, nginx = deployed
    count = 20
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright, f"--host-resolver-rules=MAP {SERVER_NAME} 127.0.0.1")
        try:
            page = browser.new_context(ignore_https_errors=True).new_page()
            page.goto(f"https://{SERVER_NAME}:{nginx.https_port}/healthz")
            protocol = page.evaluate(
                "performance.getEntriesByType('navigation')[0].nextHopProtocol"
            )
            assert protocol == "h2"
            page.evaluate(OPEN_STREAMS, {"count": count, "prefix": "h2-"})
            page.wait_for_function(f"window.opened === {count}", timeout=15_000)
            for index in range(count):
                published = httpx.post(
                    f"{server.url}/topics/h2-{index}", json={"data": index}, headers=AUTH
                )
                assert published.status_code == 200
            page.wait_for_function(f"window.received.length === {count}", timeout=15_000)

            # The same page over HTTP/1.1, straight to Sluiceway: six connections per origin,
            # so six streams, and the others wait.
            page.goto(f"{server.url}/healthz")
            page.evaluate(OPEN_STREAMS, {"count": count, "prefix": "h1-"})
            page.wait_for_function("window.opened >= 6", timeout=15_000)
            page.wait_for_timeout(1000)  # room for a seventh, which must not come
            assert page.evaluate("window.opened") == 6
        finally:
            browser.close()


async def test_no_token_reaches_nginxs_logs(deployed: tuple[ServerProcess, NginxProcess]) -> None:
    """A token in the query (browsers' EventSource and WebSocket clients put it there) is in
    neither of nginx's access logs — the HTTPS site's nor the port-80 redirect's."""
    _, nginx = deployed
    secret = "not-a-real-token-but-secret"
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{nginx.http_port}") as plain:
        redirected = await plain.get(f"/topics/x?access_token={secret}")
        assert redirected.status_code == 301
    async with through(nginx) as edge:
        assert (await edge.get(f"/healthz?access_token={secret}")).status_code in (200, 401)
    logged = nginx.access_log.read_text()
    assert "/topics/x" in logged and "/healthz" in logged  # both requests were logged
    assert secret not in logged
