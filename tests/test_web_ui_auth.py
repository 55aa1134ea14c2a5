"""The web UI on a server that is not open to all: a publish key, anonymous reading off, and
access tokens (HS256) it verifies. Chromium driven by Playwright against a real
``sluiceway serve``.

What a new user meets first: every view says plainly what was refused (publish to a topic,
read a topic, start a generation, start a job, read the metrics) and why (no token, a token
that lacks the grant, an expired or wrong token), with a way to sign in. Once signed in with a
token, Chat, Topics, Jobs (the download too) and Status work. The token stays in the tab: it
is sent as an ``Authorization`` header, never in a URL, never in the server's log, and "Sign
out" forgets it.
"""

from __future__ import annotations

import csv
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from browserproc import CHROMIUM, launch_chromium
from fake_llm import FakeLLM, Script
from playwright.sync_api import Browser, Page, Request, expect, sync_playwright
from serverproc import ServerProcess
from test_exports import ROWS, demo_database, export_env
from test_generations import llm_env
from test_web_ui import VIEWS, WAIT_MS, checked_page, screenshot

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"{CHROMIUM} is missing: the web UI is NOT tested (apt-get install chromium; "
    ".ci/run does)",
)

SECRET = "web-ui-auth-test-secret-long-enough-for-hs256"
PUBLISH_KEY = "pk-web-ui-auth-0123456789"
DETAIL = "https://mercure.rocks/authorization-detail"
TOKEN_KEY = "sluiceway.ui.token"


def pattern(value: str) -> dict[str, str]:
    return {"match": value, "match_type": "urlpattern"}


def mint(
    *,
    publish: list[Any] | None = None,
    subscribe: list[Any] | None = None,
    secret: str = SECRET,
    **claims: Any,
) -> str:
    details = [
        {"type": DETAIL, "actions": [action], "topics": [_matcher(m) for m in matchers]}
        for action, matchers in (("publish", publish), ("subscribe", subscribe))
        if matchers
    ]
    claims.setdefault("exp", int(time.time()) + 3600)
    return jwt.encode({"authorization_details": details, **claims}, secret, algorithm="HS256")


def _matcher(value: str | dict[str, str]) -> dict[str, str]:
    return {"match": value} if isinstance(value, str) else value


def full_token(**claims: Any) -> str:
    """What the UI's user needs: topics, chats, exports of ``demo`` and their files, metrics."""
    return mint(
        publish=[pattern("/topics/*"), "/generations", "/jobs"],
        subscribe=[
            pattern("/topics/*"),
            "/generations",
            "/jobs",
            "/exports/demo",
            pattern("/files/exports/*"),
            "/metrics",
        ],
        **{"sub": "ana", **claims},
    )


@pytest.fixture(scope="module")
def server(fake: FakeLLM, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    database = demo_database(tmp_path_factory.getbasetemp())
    env = {
        **llm_env(fake),
        **export_env(database),
        "SLUICEWAY_FILES_DIR": str(tmp_path_factory.mktemp("ui-auth-files")),
        "SLUICEWAY_TOKEN_HMAC_SECRET": SECRET,
        "SLUICEWAY_TOKEN_LEEWAY": "0",
        "SLUICEWAY_PUBLISH_KEY": PUBLISH_KEY,
        "SLUICEWAY_ANONYMOUS_SUBSCRIBE": "false",
        "SLUICEWAY_LOG_LEVEL": "debug",  # the most it logs: still never a token
    }
    process = ServerProcess(env=env).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def browser(server: ServerProcess) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    yield from checked_page(browser)


@pytest.fixture(autouse=True)
def fresh_script(fake: FakeLLM) -> None:
    fake.script = Script()


class Recorder:
    """Every request the page makes: its URL and whether it carried the token."""

    def __init__(self, page: Page) -> None:
        self.urls: list[str] = []
        self.authorized: list[str] = []
        self.console: list[str] = []
        page.on("request", self.record)
        page.on("console", lambda message: self.console.append(message.text))

    def record(self, request: Request) -> None:
        self.urls.append(request.url)
        if request.headers.get("authorization", "").startswith("Bearer "):
            self.authorized.append(request.url)


def sign_in(page: Page, token: str, *, via: str = "#auth-open") -> None:
    page.click(via)
    expect(page.locator("#auth-dialog")).to_be_visible()
    expect(page.locator("#auth-token")).to_be_focused()
    assert page.locator("#auth-token").get_attribute("type") == "password"
    page.fill("#auth-token", token)
    page.click("#auth-submit")


def kept_token(page: Page) -> str | None:
    return page.evaluate(f"() => sessionStorage.getItem('{TOKEN_KEY}')")  # type: ignore[no-any-return]


def publish(server: ServerProcess, topic: str, data: str) -> str:
    response = httpx.post(
        f"{server.url}/topics/{topic}",
        json={"data": data},
        headers={"authorization": f"Bearer {PUBLISH_KEY}"},
    )
    response.raise_for_status()
    return str(response.json()["id"])


def test_refused_plainly_then_signed_in_every_view_works(
    page: Page, server: ServerProcess, fake: FakeLLM
) -> None:
    token = full_token()
    seen = Recorder(page)

    # -- not signed in: each view says what was refused, and why
    page.goto(f"{server.url}/#topics")
    expect(page.locator("#auth-state")).to_have_text("Not signed in")
    page.fill("#publish-topic", "ui-auth")
    page.fill("#publish-data", "hello")
    page.click("#publish-send")
    result = page.locator("#publish-result")
    expect(result).to_contain_text("Publishing to topic “ui-auth” was refused")
    expect(result).to_contain_text("requires an access token to publish")
    expect(result).to_contain_text("you are not signed in")
    expect(result).to_contain_text("an access token is required to publish")  # the server's
    page.fill("#topics-input", "ui-auth")
    page.click("#topics-follow")
    expect(page.locator("#topics-log li.error")).to_contain_text(
        "Reading topic “ui-auth” was refused: this server requires an access token to subscribe"
    )
    page.fill("#history-topic", "ui-auth")
    page.click("#history-load")
    expect(page.locator("#history-info")).to_contain_text(
        "Reading the history of topic “ui-auth” was refused"
    )

    page.click("#tab-chat")
    page.fill("#chat-input", "Hello?")
    page.press("#chat-input", "Enter")
    expect(page.locator("#chat-error")).to_contain_text(
        "Sending your message was refused: this server requires an access token to publish"
    )
    expect(page.locator("#chat-state")).to_have_text("refused")
    expect(page.locator("#chat-input")).to_have_value("Hello?")  # given back, to send again
    expect(page.locator("#chat-log .message")).to_have_count(0)

    page.click("#tab-jobs")
    page.click("#job-start")
    expect(page.locator("#job-error")).to_contain_text(
        "Starting an export of table “demo” was refused: this server requires an access token"
    )
    expect(page.locator("#job-state")).to_have_text("refused")

    page.click("#tab-status")
    expect(page.locator("#status-error")).to_contain_text(
        "Reading the server's metrics was refused"
    )

    # -- sign in from the refusal itself
    page.click("#tab-chat")
    sign_in(page, token, via="#chat-error .sign-in-offer")
    expect(page.locator("#auth-dialog")).to_be_hidden()
    expect(page.locator("#auth-state")).to_contain_text("Signed in as ana")
    expect(page.locator("#auth-signout")).to_be_visible()
    assert kept_token(page) == token

    # Chat: the question given back is sent with Enter.
    fake.script = Script(tokens=["**Signed** ", "in."])
    page.press("#chat-input", "Enter")
    expect(page.locator("#chat-state")).to_have_text("done")
    expect(page.locator("#chat-log .message.assistant .text strong")).to_have_text("Signed")
    expect(page.locator("#chat-log .message.assistant .who")).to_contain_text("fake-model")
    expect(page.locator("#chat-error")).to_be_hidden()

    # Topics: follow, publish, history.
    page.click("#tab-topics")
    page.click("#topics-follow")
    expect(page.locator("#topics-status")).to_have_text("open")
    from_python = publish(server, "ui-auth", "from python")
    expect(page.locator(f'#topics-log li.event[data-id="{from_python}"]')).to_contain_text(
        "from python"
    )
    page.click("#publish-send")
    expect(page.locator("#publish-result")).to_contain_text(re.compile(r"published [0-9a-f]+-\d+"))
    expect(page.locator("#topics-log li.event", has_text="hello")).to_have_count(1)
    page.click("#history-load")
    expect(page.locator("#history-list li.event")).to_have_count(2)

    # Jobs: the export runs, and its file downloads with the token.
    page.click("#tab-jobs")
    page.click("#job-start")
    expect(page.locator("#job-state")).to_have_text("completed", timeout=30_000)
    with page.expect_download() as downloading:
        page.click("#job-download")
    with Path(downloading.value.path()).open(newline="") as downloaded:
        assert len(list(csv.reader(downloaded))) == ROWS + 1

    # Status: the metrics are readable with the token.
    page.click("#tab-status")
    expect(page.locator("#status-error")).to_be_hidden()
    expect(page.locator("#status-open-streams")).to_have_text(re.compile(r"^[1-9]"))
    expect(page.locator('#chart-streams path[data-series="streams"]')).to_have_attribute(
        "data-count", re.compile(r"[1-9]")
    )

    # -- the token: a header on the server's requests, never in a URL, a log or the console
    assert any("/topics/ui-auth" in url for url in seen.authorized)
    assert any(url.endswith("/v1/generations") for url in seen.authorized)
    assert any("/jobs/" in url and url.endswith("/events") for url in seen.authorized)
    assert any("/files/exports/" in url for url in seen.authorized)
    assert [url for url in seen.urls if token in url or "access_token" in url] == []
    assert [text for text in seen.console if token in text] == []
    assert token not in server.output()
    assert "Signed in" in page.locator("#auth-state").inner_text()
    assert token not in page.content()  # not shown anywhere in the page

    # -- sign out: forgotten; the next publish is refused again
    page.click("#tab-topics")
    page.click("#auth-signout")
    expect(page.locator("#auth-state")).to_have_text("Not signed in")
    expect(page.locator("#auth-signout")).to_be_hidden()
    assert kept_token(page) is None
    stored = page.evaluate("() => Object.values(sessionStorage).join('\\n')")
    assert token not in stored
    # The stream opened with the token is opened again without it: refused.
    expect(page.locator("#topics-log li.error").last).to_contain_text("requires an access token")
    page.click("#publish-send")
    expect(page.locator("#publish-result")).to_contain_text("you are not signed in")
    page.reload()
    expect(page.locator("#auth-state")).to_have_text("Not signed in")


def test_sign_in_survives_a_reload_but_not_the_tab(browser: Browser, server: ServerProcess) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.goto(f"{server.url}/#topics")
        sign_in(page, full_token())
        expect(page.locator("#auth-state")).to_contain_text("Signed in as ana")
        page.reload()
        expect(page.locator("#auth-state")).to_contain_text("Signed in as ana")
        other = context.new_page()  # another tab of the same browser: its own storage
        other.goto(f"{server.url}/#topics")
        expect(other.locator("#auth-state")).to_have_text("Not signed in")
    finally:
        context.close()


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("not-a-token", "The server refused this token: the access token is not valid"),
        (
            mint(subscribe=["/topics/x"], secret="another-secret-of-another-server-123"),
            "The server refused this token",
        ),
        (mint(subscribe=["/topics/x"], exp=int(time.time()) - 60), "it expired"),
        ("", "Paste a token first."),
        ("two words", "That is not a token"),
        ("ünïcode", "That is not a token"),
    ],
    ids=["garbage", "wrong-key", "expired", "empty", "spaces", "non-ascii"],
)
def test_a_wrong_token_is_refused_plainly(
    page: Page, server: ServerProcess, given: str, message: str
) -> None:
    statuses: list[int] = []
    page.on("response", lambda r: statuses.append(r.status))
    page.goto(f"{server.url}/#topics")
    sign_in(page, given)
    expect(page.locator("#auth-error")).to_contain_text(message)
    expect(page.locator("#auth-dialog")).to_be_visible()  # still open, to try another
    assert kept_token(page) is None
    assert all(status < 500 for status in statuses), statuses
    page.click("#auth-cancel")
    expect(page.locator("#auth-dialog")).to_be_hidden()
    expect(page.locator("#auth-state")).to_have_text("Not signed in")
    expect(page.locator("#auth-open")).to_be_focused()  # back where the user was


def test_a_token_without_the_grant_or_expired_says_so(page: Page, server: ServerProcess) -> None:
    # Reads one topic, writes none; and expires in a few seconds.
    expires = int(time.time()) + 4
    token = mint(subscribe=["/topics/ui-grant"], sub="bob", exp=expires)
    page.goto(f"{server.url}/#topics")
    sign_in(page, token)
    expect(page.locator("#auth-state")).to_contain_text("Signed in as bob · until")
    page.fill("#publish-topic", "ui-grant")
    page.fill("#publish-data", "x")
    page.click("#publish-send")
    result = page.locator("#publish-result")
    expect(result).to_contain_text(
        "Publishing to topic “ui-grant” was refused: your token does not grant “publish” on "
        "/topics/ui-grant"
    )
    expect(result).to_contain_text("insufficient_scope")
    page.fill("#topics-input", "ui-other")
    page.click("#topics-follow")
    expect(page.locator("#topics-log li.error")).to_contain_text(
        "your token does not grant “subscribe” on /topics/ui-other"
    )
    page.wait_for_timeout(max(0.0, expires - time.time()) * 1000 + 300)  # then it has expired
    page.fill("#history-topic", "ui-grant")
    page.click("#history-load")
    expect(page.locator("#history-info")).to_contain_text(
        "Reading the history of topic “ui-grant” was refused: your token expired"
    )
    expect(page.locator("#history-info .sign-in-offer")).to_have_text("Sign in with another token")


def test_the_sign_in_view(browser: Browser, server: ServerProcess) -> None:
    """The screenshots of refusals and of the sign-in dialog; the dialog on a phone too."""
    for name, viewport in (("sign-in", (1280, 800)), ("phone-sign-in", (375, 740))):
        for page in checked_page(browser, viewport={"width": viewport[0], "height": viewport[1]}):
            page.goto(f"{server.url}/#topics")
            page.click("#publish-send")
            page.click("#topics-follow")
            expect(page.locator("#topics-log li.error .sign-in-offer")).to_be_visible()
            expect(page.locator("#publish-result .sign-in-offer")).to_be_visible()
            if name == "sign-in":
                screenshot(page, "refused")
            page.click("#publish-result .sign-in-offer")
            expect(page.locator("#auth-dialog")).to_be_visible()
            page.fill("#auth-token", "eyJhbGciOiJIUzI1NiJ9.e30.nope")
            width = page.evaluate("() => document.documentElement.scrollWidth")
            assert width <= viewport[0], f"the page is {width}px wide on a {viewport[0]}px screen"
            if name == "sign-in":
                screenshot(page, name)
            for view in VIEWS:  # the header's control on every view, without overflow
                page.keyboard.press("Escape")
                page.goto(f"{server.url}/#{view}")
                expect(page.locator("#auth-open")).to_be_visible()
                width = page.evaluate("() => document.documentElement.scrollWidth")
                assert width <= viewport[0], f"{view}: {width}px wide on {viewport[0]}px"
