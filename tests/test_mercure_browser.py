"""The Mercure hub from a real browser: Chromium's ``EventSource`` (driven by Playwright) against
a real ``sluiceway serve``.

* the ``mercureAccessToken`` cookie authorizes a same-origin subscriber to private updates; a
  browser without it gets the public ones only;
* cross-origin subscribing with ``withCredentials``: CORS lets an allowed origin read the
  stream, and the hub's cookie goes along (cookies are per host, not per port, and two ports
  of 127.0.0.1 are the same *site*, so even ``SameSite=Strict`` is sent); without
  ``withCredentials`` the cookie stays home; an origin not allowed gets an error, nothing else;
* cross-site (a page on ``localhost``), the ``access_token`` query parameter carries the token;
* ``lastEventId`` is the id the publish call answered, and when the hub ends a stream (its
  token expired) the browser reconnects by itself after the update's ``retry`` and resumes
  from ``Last-Event-ID``, with the cookie the page refreshed meanwhile; a stale cookie gets a
  401 and the browser gives up (``readyState`` CLOSED).

Chromium facts these tests lean on (Chromium 156): a ``SameSite=None`` cookie without
``Secure`` is dropped (silently, even through Playwright's ``add_cookies``); a ``Secure``
cookie is sent to ``http://127.0.0.1`` (loopback counts as a secure context).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
import pytest
from browserproc import CHROMIUM, PageServer, launch_chromium
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from serverproc import ServerProcess

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"{CHROMIUM} is missing: Mercure in a real browser is NOT tested "
    "(apt-get install chromium; .ci/run does)",
)

SECRET = "mercure-browser-secret-long-enough-for-hs256"
PATH = "/.well-known/mercure"
COOKIE = "mercureAccessToken"
WAIT_MS = 5000  # every wait in the page is bounded by this (or says otherwise)

# Runs in the page: one EventSource whose every event lands in window globals.
SUBSCRIBE_JS = """([url, withCredentials]) => {
  window.received = []; window.errors = []; window.opens = [];
  const source = new EventSource(url, {withCredentials});
  window.source = source;
  source.onopen = () => window.opens.push(performance.now());
  source.onerror = () => window.errors.push({state: source.readyState, at: performance.now()});
  source.onmessage = (e) => window.received.push([e.data, e.lastEventId]);
}"""


def token(*, publish: list[str] = (), subscribe: list[str] = (), **claims: Any) -> str:  # type: ignore[assignment]
    details = [
        {"type": "mercure", "actions": [action], "topics": [{"match": t} for t in topics]}
        for action, topics in (("publish", publish), ("subscribe", subscribe))
        if topics
    ]
    # An hour: tokens made when the module is imported must outlive the whole test run.
    claims.setdefault("exp", int(time.time()) + 3600)
    return jwt.encode({"authorization_details": details, **claims}, SECRET, algorithm="HS256")


PUBLISHER = token(publish=["*"])


def topic_of(name: str) -> str:
    return f"https://example.com/browser/{name}/{time.time_ns()}"


def publish(hub: ServerProcess, **form: str) -> str:
    """Publish from Python; the update's id."""
    response = httpx.post(
        f"{hub.url}{PATH}", data=form, headers={"authorization": f"Bearer {PUBLISHER}"}
    )
    assert response.status_code == 200, response.text
    return response.text


def cookie(value: str, same_site: str = "Strict") -> dict[str, Any]:
    """The access-token cookie for host 127.0.0.1: every port of it (cookies ignore ports)."""
    return {
        "name": COOKIE,
        "value": value,
        "domain": "127.0.0.1",
        "path": "/",
        "sameSite": same_site,
        "httpOnly": True,
    }


def subscribe(page: Page, url: str, *, with_credentials: bool = False) -> None:
    page.evaluate(SUBSCRIBE_JS, [url, with_credentials])


def state(page: Page) -> dict[str, Any]:
    """What the page's EventSource did so far (for failure messages)."""
    return page.evaluate(  # type: ignore[no-any-return]
        "({readyState: window.source.readyState, opens: window.opens.length,"
        " errors: window.errors, received: window.received})"
    )


def wait_until(page: Page, expression: str, arg: Any = None, timeout: int = WAIT_MS) -> None:
    """``expression`` (a JS function of ``arg``) turns true in the page within ``timeout`` ms;
    an AssertionError with the EventSource's state otherwise."""
    try:
        page.wait_for_function(expression, arg=arg, timeout=timeout)
    except PlaywrightTimeoutError:
        raise AssertionError(f"not within {timeout} ms: {expression}; {state(page)}") from None


def wait_open(page: Page, count: int = 1, timeout: int = WAIT_MS) -> None:
    wait_until(page, "n => window.opens.length >= n", count, timeout)


def wait_received(page: Page, count: int, timeout: int = WAIT_MS) -> list[tuple[str, str]]:
    wait_until(page, "n => window.received.length >= n", count, timeout)
    return [tuple(event) for event in page.evaluate("window.received")]


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def allowed() -> Iterator[PageServer]:
    """The pages of an origin the hub's CORS settings allow (as 127.0.0.1 and as localhost)."""
    with PageServer() as pages:
        yield pages


@pytest.fixture(scope="module")
def stranger() -> Iterator[PageServer]:
    """The pages of an origin the hub does not allow."""
    with PageServer() as pages:
        yield pages


@pytest.fixture(scope="module")
def hub(allowed: PageServer) -> Iterator[ServerProcess]:
    origins = f'["{allowed.url()}", "{allowed.url("localhost")}"]'
    env = {
        "SLUICEWAY_TOKEN_HMAC_SECRET": SECRET,
        "SLUICEWAY_TOKEN_LEEWAY": "0",
        "SLUICEWAY_ANONYMOUS_PUBLISH": "false",
        "SLUICEWAY_CORS_ALLOW_ORIGINS": origins,
        "SLUICEWAY_CORS_ALLOW_CREDENTIALS": "true",
    }
    process = ServerProcess(env=env).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


NewContext = Callable[..., BrowserContext]


@pytest.fixture
def new_context(browser: Browser) -> Iterator[NewContext]:
    """``new_context(cookie_value)``: a fresh browser profile (own cookie jar), closed at
    teardown."""
    contexts: list[BrowserContext] = []

    def make(access_token: str | None = None, same_site: str = "Strict") -> BrowserContext:
        context = browser.new_context()
        context.set_default_timeout(WAIT_MS)
        contexts.append(context)
        if access_token is not None:
            context.add_cookies([cookie(access_token, same_site)])  # type: ignore[list-item]
            assert [c["name"] for c in context.cookies()] == [COOKIE]
        return context

    yield make
    for context in contexts:
        context.close()


# -- tests -----------------------------------------------------------------------------------


def test_the_cookie_grants_private_updates_on_the_hubs_origin(
    hub: ServerProcess, new_context: NewContext
) -> None:
    topic = topic_of("cookie")
    granted = new_context(token(subscribe=[topic])).new_page()
    anonymous = new_context().new_page()
    for page in (granted, anonymous):
        page.goto(f"{hub.url}/healthz")  # any page of the hub's origin
        subscribe(page, f"{PATH}?{urlencode({'match': topic})}")
        wait_open(page)
    private = publish(hub, topic=topic, data="private", private="on")
    public = publish(hub, topic=topic, data="public")
    assert wait_received(granted, 2) == [("private", private), ("public", public)]
    # In order: had the private update reached the anonymous page, it would come first.
    assert wait_received(anonymous, 1) == [("public", public)]


@pytest.mark.parametrize("same_site", ["Strict", "Lax"])
def test_an_allowed_origin_subscribes_with_credentials(
    hub: ServerProcess, allowed: PageServer, new_context: NewContext, same_site: str
) -> None:
    """The page lives on another port of 127.0.0.1: another origin, the same site."""
    topic = topic_of("cors")
    context = new_context(token(subscribe=[topic]), same_site)
    url = f"{hub.url}{PATH}?{urlencode({'match': topic})}"
    with_cookie = context.new_page()
    without_cookie = context.new_page()
    for page, credentials in ((with_cookie, True), (without_cookie, False)):
        page.goto(allowed.url())
        subscribe(page, url, with_credentials=credentials)
        wait_open(page)
    private = publish(hub, topic=topic, data="private", private="on")
    public = publish(hub, topic=topic, data="public")
    assert wait_received(with_cookie, 2) == [("private", private), ("public", public)]
    # Without withCredentials the browser leaves the cookie out: an anonymous subscriber.
    assert wait_received(without_cookie, 1) == [("public", public)]


def test_an_origin_not_allowed_reads_nothing(
    hub: ServerProcess, stranger: PageServer, new_context: NewContext
) -> None:
    topic = topic_of("stranger")
    publish(hub, topic=topic, data="history")
    context = new_context(token(subscribe=[topic]))
    url = f"{hub.url}{PATH}?{urlencode({'match': topic, 'lastEventID': 'earliest'})}"
    pages = [context.new_page(), context.new_page()]
    for page, credentials in zip(pages, (True, False), strict=True):
        page.goto(stranger.url())
        subscribe(page, url, with_credentials=credentials)
    for page in pages:
        # The hub answered 200 without Access-Control-Allow-Origin: the browser fails the
        # connection for good (CLOSED, no retry) and the page sees no event, not even history.
        wait_until(page, "() => window.source.readyState === EventSource.CLOSED")
        assert page.evaluate("[window.opens.length, window.received, window.errors.length]") == [
            0,
            [],
            1,
        ]


def test_cross_site_pages_use_the_access_token_parameter(
    hub: ServerProcess, allowed: PageServer, new_context: NewContext
) -> None:
    """A page on localhost is another site than 127.0.0.1: Chromium sends it no cookie of the
    hub (whatever SameSite), so the token goes in the URL."""
    topic = topic_of("cross-site")
    page = new_context().new_page()
    page.goto(allowed.url("localhost"))
    query = urlencode({"match": topic, "access_token": token(subscribe=[topic])})
    subscribe(page, f"{hub.url}{PATH}?{query}")
    wait_open(page)
    private = publish(hub, topic=topic, data="private", private="on")
    public = publish(hub, topic=topic, data="public")
    assert wait_received(page, 2) == [("private", private), ("public", public)]


def test_the_browser_reconnects_and_resumes_when_the_token_expires(
    hub: ServerProcess, new_context: NewContext
) -> None:
    """The hub ends a subscription when its token expires. The browser reconnects by itself
    after ``retry`` ms, sending ``Last-Event-ID`` and the cookie as it is then: a page that
    refreshed its cookie resumes, updates published while it was away included; a page whose
    cookie went stale is refused (401) and the browser closes the EventSource."""
    topic = topic_of("reconnect")
    # Long enough to outlive two page loads on a busy machine (an int exp can be 1 s short).
    short_lived = token(subscribe=[topic], exp=int(time.time()) + 4)
    refreshed_context = new_context(short_lived)
    refreshed, stale = refreshed_context.new_page(), new_context(short_lived).new_page()
    for page in (refreshed, stale):
        page.goto(f"{hub.url}/healthz")
        subscribe(page, f"{PATH}?{urlencode({'match': topic})}")
        wait_open(page)
    retry_ms = 1500  # Chromium's own default is 3000 ms
    before = publish(hub, topic=topic, data="before", private="on", retry=str(retry_ms))
    for page in (refreshed, stale):
        assert wait_received(page, 1) == [("before", before)]
    # The open stream keeps the grants it opened with; the next request carries the new cookie.
    refreshed_context.add_cookies([cookie(token(subscribe=[topic]))])  # type: ignore[list-item]
    for page in (refreshed, stale):  # the token expires within 4 s: the hub ends the stream
        wait_until(page, "() => window.errors.length >= 1", timeout=6000)
        assert page.evaluate("window.source.readyState") == 0  # CONNECTING: it will retry
    during = publish(hub, topic=topic, data="during", private="on")
    assert refreshed.evaluate("window.opens.length") == 1, "reconnected before the publish"
    assert wait_received(refreshed, 2, timeout=retry_ms + WAIT_MS) == [
        ("before", before),
        ("during", during),  # published while disconnected: replayed from Last-Event-ID
    ]
    assert refreshed.evaluate("window.opens.length") == 2
    gap = refreshed.evaluate("window.opens[1] - window.errors[0].at")
    assert retry_ms * 0.8 <= gap < 2800, f"reconnected after {gap} ms, not the update's retry"
    wait_until(
        stale, "() => window.source.readyState === EventSource.CLOSED", timeout=retry_ms + WAIT_MS
    )
    assert stale.evaluate("[window.opens.length, window.received.length]") == [1, 1]
