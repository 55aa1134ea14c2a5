"""The security review's browser attacks, in Chromium (Playwright driving ``/usr/bin/chromium``)
against a real ``sluiceway serve``: an uploaded page run on the server's origin, an uploaded
script passed off as the web UI's, and DNS rebinding of the key-free loopback server.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from browserproc import CHROMIUM, launch_chromium
from playwright.sync_api import Browser, Error, Page, sync_playwright
from serverproc import ServerProcess

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="chromium is not installed: the browser attacks are NOT tested"
)

#: A name that Chromium resolves to loopback, as a rebinding DNS server would.
REBOUND = "rebound.test"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    files = tmp_path_factory.mktemp("browser-attack-files")
    process = ServerProcess(env={"SLUICEWAY_FILES_DIR": str(files)}).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright, f"--host-resolver-rules=MAP {REBOUND} 127.0.0.1")
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(accept_downloads=True)
    try:
        yield context.new_page()
    finally:
        context.close()


def published(server: ServerProcess, topic: str) -> list[str]:
    history = httpx.get(f"{server.url}/topics/{topic}/history", timeout=5).json()
    return [event["data"] for event in history["events"]]


def test_an_uploaded_page_does_not_run_on_the_servers_origin(
    server: ServerProcess, page: Page
) -> None:
    topic = f"pwned-xml-{time.monotonic_ns()}"
    script = (
        f"fetch('/topics/{topic}',{{method:'POST',body:JSON.stringify({{data:document.cookie}})}})"
    )
    xhtml = (
        '<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"><body>'
        f"<script>{script}</script></body></html>"
    )
    for name in ("y.xml", "y.xhtml", "y.svg", "y.html"):
        body = (
            xhtml
            if name != "y.svg"
            else ('<svg xmlns="http://www.w3.org/2000/svg"><script>' + script + "</script></svg>")
        )
        put = httpx.put(f"{server.url}/files/pub/{name}?overwrite=1", content=body.encode())
        assert put.status_code in (200, 201)
        page.context.add_cookies([{"name": "session", "value": "s3cret", "url": server.url}])
        with page.expect_download(timeout=5000) as download:
            try:
                page.goto(f"{server.url}/files/pub/{name}")
            except Error as exc:  # Chromium saves an attachment instead of opening it
                assert "Download is starting" in str(exc)
        assert download.value.suggested_filename == name
    page.goto(f"{server.url}/healthz")  # a page of the origin, to publish from below
    page.evaluate(f"fetch('/topics/{topic}',{{method:'POST',body:'{{\"data\":\"control\"}}'}})")
    deadline = time.monotonic() + 5
    while not published(server, topic) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert published(server, topic) == ["control"]  # only the control ran


def test_an_uploaded_script_cannot_pass_for_the_web_uis(server: ServerProcess, page: Page) -> None:
    topic = f"pwned-js-{time.monotonic_ns()}"
    evil = f"fetch('/topics/{topic}',{{method:'POST',body:'{{\"data\":\"evil\"}}'}});"
    assert httpx.put(f"{server.url}/files/pub/evil.js?overwrite=1", content=evil).status_code in (
        200,
        201,
    )
    page.goto(f"{server.url}/#topics")
    page.wait_for_selector("#view-topics", state="visible")  # the UI's own modules ran
    violations = page.evaluate(
        """async () => {
            const blocked = [];
            document.addEventListener("securitypolicyviolation", (e) => blocked.push(e.blockedURI));
            for (const type of ["text/javascript", "module"]) {
                const script = document.createElement("script");
                script.type = type;
                script.src = "/files/pub/evil.js";
                document.body.append(script);
            }
            const until = Date.now() + 5000;
            while (blocked.length < 2 && Date.now() < until) {
                await new Promise((resolve) => setTimeout(resolve, 20));
            }
            return blocked;
        }"""
    )
    assert len(violations) == 2 and all("/files/pub/evil.js" in v for v in violations)
    assert published(server, topic) == []


def test_dns_rebinding_gets_nothing_from_the_loopback_server(
    server: ServerProcess, page: Page
) -> None:
    """A hostile page at rebound.test:PORT whose name now resolves to 127.0.0.1 is
    same-origin with the server: everything it asks gets 421."""
    topic = f"pwned-rebind-{time.monotonic_ns()}"
    httpx.put(f"{server.url}/files/pub/private.txt?overwrite=1", content=b"private notes")
    response = page.goto(f"http://{REBOUND}:{server.port}/")
    assert response is not None and response.status == 421
    answers = page.evaluate(
        f"""async () => {{
            const post = await fetch('/topics/{topic}', {{method: 'POST', body: '{{"data": 1}}'}});
            const file = await fetch('/files/pub/private.txt');
            const generation = await fetch('/v1/generations', {{method: 'POST',
                headers: {{'content-type': 'application/json'}},
                body: JSON.stringify({{messages: [{{role: 'user', content: 'hi'}}]}})}});
            return [post.status, file.status, generation.status, await file.text()];
        }}"""
    )
    assert answers[:3] == [421, 421, 421]
    assert "private notes" not in answers[3]
    assert published(server, topic) == []
