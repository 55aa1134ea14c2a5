"""The web UI in a real browser: Chromium driven by Playwright against a real ``sluiceway serve``.

Chat streams tokens from the fake upstream (and from the embedded local model), renders the
model's markdown as elements (and its HTML as text), names the model, Stop cancels the
upstream within a second (seen in the server's metrics and by the upstream itself) and is not
shown as an error, a reload mid-answer resumes with the exact text; an event published from
Python appears in the topics view with its own id (not the stream's whole cursor), the page's
own publish form and history work; an export's progress bar reaches 100 % and its file
downloads, a Cancel is the user's and not an error, a job refused at validation is not shown
against the previous job; a server restarted mid-stream (Redis keeps the history, and another
process publishes while it is down) is reconnected to and resumed from without loss; the
status view shows the server's metrics and charts them as they change, internal topics apart.
Keyboard use, labels and a phone-sized screen are checked, and each view is saved as a
screenshot (``docs/screenshots/``, shown in the README; another directory with
``SLUICEWAY_SCREENSHOTS``). Signing in with a token: ``test_web_ui_auth.py``.
"""

from __future__ import annotations

import csv
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from browserproc import CHROMIUM, launch_chromium
from fake_llm import FakeLLM, Script
from playwright.sync_api import Browser, Page, expect, sync_playwright
from redisproc import RedisProcess
from serverproc import ServerProcess
from test_exports import ROWS, demo_database, export_env
from test_generations import llm_env

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"{CHROMIUM} is missing: the web UI is NOT tested (apt-get install chromium; "
    ".ci/run does)",
)

SCREENSHOTS = Path(
    os.environ.get("SLUICEWAY_SCREENSHOTS", Path(__file__).parent.parent / "docs" / "screenshots")
)
WAIT_MS = 10_000
ANSWER = "#chat-log .message.assistant .text"
#: The --bad colour of app.css (light scheme): what an error looks like.
ERROR_RED = "rgb(192, 38, 45)"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ui-files")


@pytest.fixture(scope="module")
def server(
    fake: FakeLLM, files: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    database = demo_database(tmp_path_factory.getbasetemp())
    env = {
        **llm_env(fake),
        **export_env(database),
        "SLUICEWAY_FILES_DIR": str(files),
    }
    process = ServerProcess(env=env).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def browser(server: ServerProcess) -> Iterator[Browser]:
    # After the server: Playwright's sync API runs an event loop in this thread, and making
    # the demo database (asyncio.run) must come first.
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    yield from checked_page(browser)


def checked_page(browser: Browser, **options: Any) -> Iterator[Page]:
    """A fresh page (its own sessionStorage) that fails the test on any uncaught error or
    Content-Security-Policy violation."""
    options = {"viewport": {"width": 1280, "height": 800}, "accept_downloads": True, **options}
    context = browser.new_context(**options)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))
    page.on(
        "console",
        lambda message: (
            problems.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    yield page
    context.close()
    assert problems == []


@pytest.fixture(autouse=True)
def fresh_script(fake: FakeLLM) -> None:
    fake.script = Script()


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def metric(server: ServerProcess, name: str, **labels: str) -> float:
    """One sample of the server's metrics, summed over the labels not given."""
    text = httpx.get(f"{server.url}/metrics").text
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def background(page: Page, selector: str) -> str:
    return str(page.eval_on_selector(selector, "(el) => getComputedStyle(el).backgroundColor"))


def ask(page: Page, prompt: str) -> None:
    page.fill("#chat-input", prompt)
    page.press("#chat-input", "Enter")


def answer_text(page: Page) -> str:
    return page.locator(ANSWER).last.inner_text()


# -- chat ------------------------------------------------------------------------------------


def test_chat_streams_tokens_as_they_arrive(
    page: Page, server: ServerProcess, fake: FakeLLM
) -> None:
    tokens = [f"word{i} " for i in range(30)]
    fake.script = Script(tokens=tokens, token_interval=0.04)
    page.goto(f"{server.url}/#chat")
    ask(page, "Tell me thirty words")
    # Part of the answer is on screen while the state still says streaming.
    page.wait_for_function(
        """(selector) => {
            const texts = document.querySelectorAll(selector);
            const text = texts.length ? texts[texts.length - 1].textContent : "";
            return text.length > 0 && text.length < 100
                && document.querySelector('#chat-state').textContent.includes('streaming');
        }""",
        arg=ANSWER,
    )
    expect(page.locator("#chat-stop")).to_be_enabled()
    expect(page.locator("#chat-state")).to_contain_text("done")
    assert answer_text(page).strip() == "".join(tokens).strip()
    expect(page.locator("#chat-log .message.user").last).to_contain_text("Tell me thirty words")
    expect(page.locator("#chat-ttft")).to_contain_text(re.compile(r"\d+(\.\d+)?\s*ms"))
    expect(page.locator("#chat-rate")).to_contain_text(re.compile(r"\d+(\.\d+)?\s*tokens/s"))
    expect(page.locator("#chat-stop")).to_be_disabled()
    # Which model answers: the generation's own start event says it.
    expect(page.locator("#chat-log .message.assistant .who .model").last).to_have_text("fake-model")
    expect(page.locator("#chat-model")).to_contain_text("fake-model")


MARKDOWN = """**Steam Chamber:** the *hot* part, ~~cold~~ warm.

- first item with `inline code`
- second item
  - nested item

1. one
2. two

```python
print("<b>not bold</b>")
```

> quoted

| gauge | bar |
|---|---:|
| inlet | 3.5 |

A [safe link](https://example.com/docs) and a [bad link](javascript:alert(1)) and
<https://example.org/>.

<img src=x onerror=alert(1)> and <script>window.pwned = 1</script> and <b>not bold</b>
"""


def test_markdown_from_the_model_renders_as_elements_and_its_html_as_text(
    page: Page, server: ServerProcess, fake: FakeLLM
) -> None:
    # In small pieces, so that it renders half-written markdown on the way too.
    fake.script = Script(
        tokens=[MARKDOWN[i : i + 7] for i in range(0, len(MARKDOWN), 7)], token_interval=0.005
    )
    page.goto(f"{server.url}/#chat")
    ask(page, "Describe the steam chamber, with markdown")
    expect(page.locator("#chat-state")).to_contain_text("done")
    answer = page.locator(ANSWER).last
    expect(answer.locator("strong").first).to_have_text("Steam Chamber:")
    expect(answer.locator("em")).to_have_text("hot")
    expect(answer.locator("del")).to_have_text("cold")
    expect(answer.locator(":scope > ul > li")).to_have_count(2)
    expect(answer.locator("li > p")).to_have_count(0)  # a tight list: no paragraphs in it
    expect(answer.locator("p:has(a) br")).to_have_count(1)  # a line break kept
    expect(answer.locator("ul ul > li")).to_have_text("nested item")
    expect(answer.locator("ol > li")).to_have_text(["one", "two"])
    expect(answer.locator("li code")).to_have_text("inline code")
    expect(answer.locator("pre code.language-python")).to_have_text('print("<b>not bold</b>")')
    expect(answer.locator("blockquote")).to_have_text("quoted")
    expect(answer.locator("table th")).to_have_text(["gauge", "bar"])
    expect(answer.locator("table td")).to_have_text(["inlet", "3.5"])
    link = answer.locator('a[href="https://example.com/docs"]')
    expect(link).to_have_text("safe link")
    expect(link).to_have_attribute("rel", "noopener noreferrer")
    expect(answer.locator('a[href="https://example.org/"]')).to_have_count(1)
    assert answer.locator("a").count() == 2  # javascript: makes no link: its label is text
    expect(answer).to_contain_text("bad link")
    text = answer.inner_text()
    assert "**" not in text and "```" not in text
    # The HTML of the answer is text on the screen, and no element of it exists.
    assert "<img src=x onerror=alert(1)>" in text
    assert "<script>window.pwned = 1</script>" in text
    assert "<b>not bold</b>" in text
    found = page.evaluate(
        """() => ({
            elements: document.querySelectorAll(
                '#chat-log img, #chat-log script, #chat-log b, #chat-log [onerror]').length,
            pwned: window.pwned ?? null,
        })"""
    )
    assert found == {"elements": 0, "pwned": None}
    page.set_viewport_size({"width": 1280, "height": 960})  # the question and the answer
    page.locator("#chat-log .message.user").last.scroll_into_view_if_needed()
    screenshot(page, "chat")
    # A reload shows the same rendering from the kept conversation.
    page.reload()
    expect(page.locator(ANSWER).last.locator("pre code")).to_have_text('print("<b>not bold</b>")')
    expect(page.locator("#chat-model")).to_contain_text("fake-model")


@pytest.mark.parametrize(
    "hostile",
    [
        "*a" * 5000,  # openers without closers
        "_x " * 5000 + "`" * 300,
        "[" * 10_000 + "](javascript:alert(1))",
        ">" * 5000 + " deep",  # quotes in quotes
        "- " * 3000 + "list in list",
        "```\n" + "<script>alert(1)</script>\n" * 500,  # a fence never closed
        "| a |\n|---|\n" + "| <img src=x onerror=alert(1)> |\n" * 500,
    ],
    ids=["stars", "underscores", "brackets", "quotes", "lists", "open-fence", "table"],
)
def test_hostile_markdown_renders_quickly_and_as_text(
    page: Page, server: ServerProcess, fake: FakeLLM, hostile: str
) -> None:
    fake.script = Script(tokens=[hostile[i : i + 2000] for i in range(0, len(hostile), 2000)])
    page.goto(f"{server.url}/#chat")
    ask(page, "Break the renderer")
    expect(page.locator("#chat-state")).to_have_text("done")
    found = page.evaluate(
        """() => ({
            elements: document.querySelectorAll('#chat-log img, #chat-log script, '
                + '#chat-log a[href^="javascript"], #chat-log [onerror]').length,
            depth: Math.max(0, ...[...document.querySelectorAll('#chat-log *')].map((el) => {
                let n = 0;
                for (let at = el; at; at = at.parentElement) n += 1;
                return n;
            })),
        })"""
    )
    assert found["elements"] == 0
    assert found["depth"] < 64  # nesting is bounded
    started = time.monotonic()
    page.reload()  # the whole answer rendered at once, from the kept conversation
    expect(page.locator("#chat-log .message.assistant")).to_have_count(1)
    assert time.monotonic() - started < 5


def test_stop_cancels_the_upstream_within_a_second(
    page: Page, server: ServerProcess, fake: FakeLLM
) -> None:
    fake.script = Script(tokens=["tick "] * 2000, token_interval=0.05)
    page.goto(f"{server.url}/#chat")
    ask(page, "Count forever")
    page.wait_for_function(
        "(s) => [...document.querySelectorAll(s)].pop()?.textContent.length > 15", arg=ANSWER
    )
    cancelled = metric(server, "sluiceway_llm_generations_total", outcome="cancelled")
    closed = fake.closed
    clicked = time.monotonic()
    page.click("#chat-stop")
    assert fake.wait_closed(closed + 1, timeout=1.0), "the upstream was not closed within 1 s"
    while metric(server, "sluiceway_llm_generations_total", outcome="cancelled") <= cancelled:
        assert time.monotonic() - clicked < 1.0, "no cancelled generation in the metrics in 1 s"
        time.sleep(0.02)
    expect(page.locator("#chat-state")).to_contain_text("cancelled")
    expect(page.locator("#chat-stop")).to_be_disabled()
    assert metric(server, "sluiceway_llm_active_generations") == 0
    # The user's own Stop: said so, and not shown as an error.
    expect(page.locator("#chat-log .message.assistant .meta").last).to_have_text("stopped by you")
    expect(page.locator("#chat-error")).to_be_hidden()
    assert background(page, "#chat-state") != ERROR_RED


def test_a_reload_mid_answer_resumes_with_the_exact_text(
    page: Page, server: ServerProcess, fake: FakeLLM
) -> None:
    tokens = [f"t{i:02d} " for i in range(50)]
    fake.script = Script(tokens=tokens, token_interval=0.05)
    page.goto(f"{server.url}/#chat")
    requests = len(fake.requests)
    ask(page, "Fifty tokens, please")
    page.wait_for_function(
        "(s) => [...document.querySelectorAll(s)].pop()?.textContent.includes('t05')", arg=ANSWER
    )
    page.reload()
    # Still the same conversation, marked as resumed, still streaming into the same answer.
    expect(page.locator("#chat-log .message.user").last).to_contain_text("Fifty tokens, please")
    expect(page.locator("#view-chat")).to_contain_text(re.compile("resumed", re.IGNORECASE))
    expect(page.locator("#chat-state")).to_contain_text("done")
    assert answer_text(page).strip() == "".join(tokens).strip()  # nothing repeated or lost
    assert page.locator(ANSWER).count() == 1
    assert len(fake.requests) == requests + 1  # one generation, resumed, not asked again


@pytest.mark.slow
def test_chat_with_the_embedded_local_model(browser: Browser, start_server: Any) -> None:
    server = start_server()  # the defaults: the embedded local model, no API key
    page = browser.new_page()
    try:
        page.set_default_timeout(60_000)
        page.goto(f"{server.url}/#chat")
        ask(page, "Say hello in five words.")
        expect(page.locator("#chat-state")).to_contain_text("done")
        assert answer_text(page).strip()
        expect(page.locator("#chat-ttft")).to_contain_text("ms")
        expect(page.locator("#chat-rate")).to_contain_text("tokens/s")
    finally:
        page.close()


# -- topics ----------------------------------------------------------------------------------


def test_topics_live_events_publish_and_history(page: Page, server: ServerProcess) -> None:
    page.goto(f"{server.url}/#topics")
    page.fill("#topics-input", "ui-news, ui-alerts")
    page.click("#topics-follow")
    expect(page.locator("#topics-status")).to_contain_text("open")

    published = httpx.post(
        f"{server.url}/topics/ui-alerts", json={"data": "from python", "event": "note"}
    ).json()["id"]
    # One stream follows both topics: its ids are cursors over both ("<a id>,<b id>").
    from_python = page.locator(f'#topics-log li.event[data-id="{published}"]')
    expect(from_python).to_contain_text("from python")
    expect(from_python).to_have_attribute("data-event", "note")
    expect(from_python).to_have_attribute("data-topic", "ui-alerts")
    # The line shows the event's own id, not the stream's cursor over both topics.
    expect(from_python.locator(".id")).to_have_text(published)
    assert "," in (from_python.get_attribute("data-cursor") or "")
    second = httpx.post(f"{server.url}/topics/ui-news", json={"data": "second"}).json()["id"]
    from_news = page.locator(f'#topics-log li.event[data-id="{second}"]')
    expect(from_news.locator(".id")).to_have_text(second)
    expect(from_news).to_have_attribute("data-topic", "ui-news")
    expect(page.locator("#topics-last-id")).to_contain_text(",")  # the cursor, shown once

    page.fill("#publish-topic", "ui-news")
    page.fill("#publish-data", "from the page")
    page.click("#publish-send")
    expect(page.locator("#publish-result")).to_contain_text(re.compile(r"[0-9a-f]+-\d+"))
    from_page = page.locator("#topics-log li.event", has_text="from the page")
    expect(from_page).to_have_count(1)
    own_id = from_page.get_attribute("data-id")
    history = httpx.get(f"{server.url}/topics/ui-news/history").json()["events"]
    assert history[-1]["data"] == "from the page"

    page.fill("#history-topic", "ui-alerts")
    page.click("#history-load")
    expect(page.locator(f'#history-list li[data-id="{published}"]')).to_contain_text("from python")
    assert own_id
    screenshot(page, "topics")


def test_a_bad_publish_shows_the_servers_error(page: Page, server: ServerProcess) -> None:
    page.goto(f"{server.url}/#topics")
    page.fill("#publish-topic", "no/slashes")
    page.fill("#publish-data", "x")
    page.click("#publish-send")
    expect(page.locator("#publish-result")).to_contain_text(re.compile("invalid|not", re.I))


@pytest.fixture
def redis_pair(
    redis_server: RedisProcess, start_server: Any
) -> tuple[ServerProcess, ServerProcess]:
    env = {"SLUICEWAY_BACKEND": redis_server.url}
    return start_server(env=env), start_server(env=env)


def test_a_server_restarted_mid_stream_is_resumed_without_loss(
    page: Page, redis_pair: tuple[ServerProcess, ServerProcess]
) -> None:
    server, other = redis_pair
    topic = f"ui-restart-{time.monotonic_ns()}"
    page.goto(f"{server.url}/#topics")
    page.fill("#topics-input", topic)
    page.click("#topics-follow")
    expect(page.locator("#topics-status")).to_contain_text("open")
    sent: list[str] = []

    def publish(via: ServerProcess, count: int) -> None:
        for _ in range(count):
            data = f"event-{len(sent) + 1:02d}"
            httpx.post(f"{via.url}/topics/{topic}", json={"data": data}).raise_for_status()
            sent.append(data)

    publish(server, 5)
    expect(page.locator("#topics-log li.event")).to_have_count(5)
    server.stop()
    publish(other, 5)  # while the page's server is down: it must get these on its return
    server.start(same_port=True)
    publish(server, 5)
    expect(page.locator("#topics-log li.event")).to_have_count(15, timeout=30_000)
    shown = page.locator("#topics-log li.event").all_inner_texts()
    assert [next(d for d in sent if d in text) for text in shown] == sent  # in order, once each
    ids = page.locator("#topics-log li.event").evaluate_all("(els) => els.map(e => e.dataset.id)")
    assert len(set(ids)) == 15
    assert page.locator("#topics-log li.reset").count() == 0
    assert int(page.locator("#topics-reconnects").inner_text()) >= 1
    expect(page.locator("#topics-log li.reconnect").first).to_be_visible()


# -- jobs ------------------------------------------------------------------------------------


def test_an_export_reaches_100_percent_and_downloads(page: Page, server: ServerProcess) -> None:
    page.goto(f"{server.url}/#jobs")
    page.fill("#job-table", "demo")
    page.select_option("#job-format", "csv")
    page.click("#job-start")
    page.wait_for_function("() => document.querySelector('#job-progress').value >= 100")
    expect(page.locator("#job-state")).to_contain_text("completed")
    download_link = page.locator("#job-download")
    expect(download_link).to_be_visible()
    with page.expect_download() as downloading:
        download_link.click()
    with Path(downloading.value.path()).open(newline="") as downloaded:
        rows = list(csv.reader(downloaded))
    assert len(rows) == ROWS + 1  # the header and every row (some hold quoted line breaks)
    assert rows[0][0] == "id" and rows[-1][0] == str(ROWS)
    screenshot(page, "jobs")


def test_a_slow_export_shows_an_eta_and_can_be_cancelled(
    page: Page, server: ServerProcess, files: Path
) -> None:
    page.goto(f"{server.url}/#jobs")
    page.fill("#job-table", "slow")
    page.click("#job-start")
    page.wait_for_function(
        "() => { const v = document.querySelector('#job-progress').value; return v > 0 && v < 100 }"
    )
    expect(page.locator("#job-eta")).to_contain_text(re.compile(r"\d"))
    page.click("#job-cancel")
    expect(page.locator("#job-state")).to_contain_text("cancelled")
    expect(page.locator("#job-download")).to_be_hidden()
    # The user's own Cancel: said so, no error, not in red.
    expect(page.locator("#job-result")).to_have_text("Cancelled at your request.")
    expect(page.locator("#job-error")).to_be_empty()
    assert background(page, "#job-state") != ERROR_RED


@pytest.mark.parametrize("table", ["ghost", "", "x" * 300])
def test_an_export_refused_at_validation_is_not_the_previous_jobs_failure(
    page: Page, server: ServerProcess, table: str
) -> None:
    page.goto(f"{server.url}/#jobs")
    page.fill("#job-table", "demo")
    page.click("#job-start")
    expect(page.locator("#job-state")).to_have_text("completed", timeout=30_000)
    previous = page.locator("#job-id").inner_text()
    assert previous != "—"
    statuses: list[int] = []
    page.on("response", lambda r: statuses.append(r.status) if r.url.endswith("/jobs") else None)
    page.fill("#job-table", table)
    page.click("#job-start")
    expect(page.locator("#job-state")).to_have_text("refused")
    expect(page.locator("#job-id")).to_have_text("—")  # no job: not the previous one's id
    expect(page.locator("#job-error")).to_contain_text("was refused")
    expect(page.locator("#job-download")).to_be_hidden()
    assert statuses and all(400 <= s < 500 for s in statuses), statuses


def test_a_failing_export_says_why(page: Page, server: ServerProcess) -> None:
    page.goto(f"{server.url}/#jobs")
    page.fill("#job-table", "ghost")  # allowed by the settings, missing from the database
    page.click("#job-start")
    expect(page.locator("#job-error")).not_to_be_empty()
    expect(page.locator("#job-state")).not_to_contain_text("completed")


# -- status ----------------------------------------------------------------------------------


def test_status_charts_streams_deliveries_and_generations(
    browser: Browser, page: Page, server: ServerProcess, fake: FakeLLM
) -> None:
    fake.script = Script(tokens=[f"w{i} " for i in range(12)], token_interval=0.02)
    follower = browser.new_page()
    try:
        follower.goto(f"{server.url}/#topics")
        follower.fill("#topics-input", "ui-status")
        follower.click("#topics-follow")
        expect(follower.locator("#topics-status")).to_contain_text("open")
        page.goto(f"{server.url}/#status")
        page.wait_for_function(
            "() => Number(document.querySelector('#status-open-streams').textContent"
            ".replace(/[^0-9.]/g, '')) >= 1"
        )
        delivered = page.locator('#chart-deliveries path[data-series="delivered"]')
        expect(delivered).to_have_attribute("data-count", re.compile(r"[1-9]"))
        before = int(delivered.get_attribute("data-count") or 0)
        generations = threading.Thread(target=generate, args=(server, 4), daemon=True)
        generations.start()
        for n in range(50):
            httpx.post(f"{server.url}/topics/ui-status", json={"data": n})
            time.sleep(0.04)  # spread over a few polls: a curve, not one spike
        page.wait_for_function(
            "() => Number(document.querySelector('#status-deliveries').textContent"
            ".replace(/[^0-9.]/g, '')) > 0"
        )
        # The deliveries series grows, and its peak is the events just published.
        page.wait_for_function(
            """([selector, before]) => {
                const path = document.querySelector(selector);
                return Number(path.dataset.count) > before && Number(path.dataset.max) > 0;
            }""",
            arg=['#chart-deliveries path[data-series="delivered"]', before],
        )
        assert (delivered.get_attribute("d") or "").count("L") >= 1  # a line, not a dot
        generations.join(timeout=30)
        for series in ("ttft", "perGeneration"):  # TTFT and tokens/s of those generations
            expect(page.locator(f'#status-charts path[data-series="{series}"]')).to_have_attribute(
                "data-max", re.compile(r"^[0-9.]*[1-9]")
            )
        expect(page.locator('#chart-streams path[data-series="streams"]')).to_have_attribute(
            "data-last", re.compile(r"^[1-9]")
        )
        # Axes and units labelled; the numbers readable as text too.
        expect(page.locator("#chart-deliveries figcaption")).to_have_text("Deliveries (events/s)")
        expect(page.locator("#chart-deliveries .axis-unit")).to_have_text("events/s")
        expect(page.locator("#chart-ttft .axis-unit")).to_have_text("ms")
        expect(page.locator("#chart-tokens .axis-unit")).to_have_text("tokens/s")
        expect(page.locator("#chart-deliveries .tick", has_text="now")).to_have_count(1)
        expect(page.locator("#chart-deliveries svg")).to_have_attribute("role", "img")
        expect(page.locator("#chart-deliveries-summary")).to_contain_text(
            re.compile(r"delivered: [0-9.,]+ events/s now, at most [0-9.,]*[1-9]")
        )
        expect(page.locator("#status-generations")).to_contain_text(re.compile(r"\d"))
        expect(page.locator("#status-updated")).not_to_be_empty()
        # Topics: those people use; the generations' own streams are counted apart.
        health = httpx.get(f"{server.url}/healthz").json()
        assert health["internal_topics"] >= 1
        assert metric(server, "sluiceway_topics") == health["topics"] + health["internal_topics"]
        expect(page.locator("#status-topics")).to_have_text(str(health["topics"]))
        expect(page.locator("#status-topics-internal")).to_have_text(
            f"+ {health['internal_topics']} internal"
        )
        page.wait_for_timeout(1500)  # one more poll after the last generation, for the picture
        screenshot(page, "status")
    finally:
        follower.close()


def generate(server: ServerProcess, count: int) -> None:
    """``count`` chat completions through the server, one after another (for the charts)."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for n in range(count):
            client.post(
                "/v1/chat/completions",
                json={"model": "any", "messages": [{"role": "user", "content": f"hi {n}"}]},
            ).raise_for_status()
            time.sleep(1.2)


# -- keyboard, labels, small screens ---------------------------------------------------------

VIEWS = ["chat", "topics", "jobs", "status"]


def test_tabs_work_from_the_keyboard(page: Page, server: ServerProcess) -> None:
    page.goto(f"{server.url}/")
    page.focus("#tab-chat")
    for expected in [*VIEWS[1:], VIEWS[0]]:  # ArrowRight wraps around
        page.keyboard.press("ArrowRight")
        expect(page.locator(f"#tab-{expected}")).to_be_focused()
        expect(page.locator(f"#tab-{expected}")).to_have_attribute("aria-selected", "true")
        expect(page.locator(f"#view-{expected}")).to_be_visible()
        for other in VIEWS:
            if other != expected:
                expect(page.locator(f"#view-{other}")).to_be_hidden()
    page.keyboard.press("ArrowRight")
    page.reload()  # the view is in the URL
    expect(page.locator("#view-topics")).to_be_visible()


def test_every_control_is_labelled(page: Page, server: ServerProcess) -> None:
    page.goto(f"{server.url}/")
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea, button')]
            .filter((el) => !(el.labels?.length || el.getAttribute('aria-label')
                              || el.getAttribute('aria-labelledby') || el.textContent.trim()))
            .map((el) => el.id || el.outerHTML.slice(0, 80))"""
    )
    assert unlabelled == []
    assert page.locator("html").get_attribute("lang")


def test_readable_on_a_phone_sized_screen(
    browser: Browser, server: ServerProcess, fake: FakeLLM
) -> None:
    context = browser.new_context(viewport={"width": 375, "height": 740})
    try:
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        for view in VIEWS:
            page.goto(f"{server.url}/#{view}")
            expect(page.locator(f"#view-{view}")).to_be_visible()
            width = page.evaluate("() => document.documentElement.scrollWidth")
            assert width <= 375, f"{view}: the page is {width}px wide on a 375px screen"
        # An answer with a long code line: the block scrolls, not the page.
        fake.script = Script(
            tokens=[
                "The **valve** opens in two steps:\n\n1. Check the `pressure`\n",
                "2. Turn it\n\n```sh\nsluiceway serve --host 0.0.0.0 --port 8000 ",
                "--no-anonymous-subscribe\n```\n",
            ]
        )
        page.goto(f"{server.url}/#chat")
        ask(page, "How does the valve open?")
        expect(page.locator("#chat-state")).to_have_text("done")
        expect(page.locator(ANSWER).last.locator("pre code")).to_contain_text("sluiceway serve")
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 375, f"chat with code: the page is {width}px wide on a 375px screen"
        screenshot(page, "phone-chat")
    finally:
        context.close()


def test_the_page_and_client_are_served_with_their_headers(server: ServerProcess) -> None:
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    nonce = re.search(r"script-src 'nonce-([A-Za-z0-9_-]+)'", policy)
    assert nonce is not None and "default-src 'none'" in policy
    assert f'nonce="{nonce[1]}"' in page.text  # the page's own script and style carry it
    again = httpx.get(f"{server.url}/").headers["content-security-policy"]
    assert again != policy  # a nonce per page
    # Never under the static files' own policy (script-src 'self'), which an upload satisfies.
    assert httpx.get(f"{server.url}/static/index.html").status_code == 404
    client = httpx.get(f"{server.url}/static/sluiceway.js")
    assert client.headers["content-type"].startswith("text/javascript")
    assert "export class EventStream" in client.text
    types = httpx.get(f"{server.url}/static/sluiceway.d.ts")
    assert types.status_code == 200 and "EventStream" in types.text
    missing = httpx.get(f"{server.url}/static/nope.js")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    escape = httpx.get(f"{server.url}/static/..%2f..%2fpyproject.toml")
    assert escape.status_code == 404
