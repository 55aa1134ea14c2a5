"""``sluiceway.js`` in Chromium: the tabs of one origin share one connection per stream.

Over HTTP/1.1 Chromium opens at most 6 connections per origin for all its tabs together: the
7th tab's stream waits forever (shown first, without sharing). With sharing, 10 tabs hold one
connection: the leader tab (Web Locks) connects and passes every event over BroadcastChannel;
when it closes, reloads or freezes mid-stream another tab takes over from its own position,
and every tab gets every event exactly once, in order.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from browserproc import CHROMIUM, launch_chromium
from playwright.async_api import BrowserContext, Page, async_playwright
from serverproc import ServerProcess
from tokens import mint

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing: tab sharing is NOT tested"
)

#: The page's script, loaded before any stream opens: once six streams hold Chromium's six
#: connections to the origin, no other request to it would go out.
LOAD_JS = """async () => { window.sluiceway = await import("/static/sluiceway.js"); }"""

#: In each page: a stream of the topic whose messages land in window.got as [id, data].
OPEN_JS = """([path, options]) => {
  window.got = [];
  window.stream = new window.sluiceway.EventStream(path, options);
  window.stream.addEventListener("message", (e) => window.got.push([e.lastEventId, e.data]));
}"""


SECRET = "tab-sharing-test-secret-long-enough-for-hs256"


@pytest.fixture(scope="module")
def server() -> AsyncIterator[ServerProcess]:
    process = ServerProcess(env={"SLUICEWAY_TOKEN_HMAC_SECRET": SECRET}).start()
    yield process  # type: ignore[misc]
    process.stop()


@pytest.fixture
async def context() -> AsyncIterator[BrowserContext]:
    """One browser profile: its tabs share Chromium's connection limit per origin."""
    async with async_playwright() as playwright:
        browser = await launch_chromium(playwright)
        try:
            yield await browser.new_context()
        finally:
            await browser.close()


async def open_tabs(
    context: BrowserContext, server: ServerProcess, topic: str, count: int, **options: Any
) -> list[Page]:
    """``count`` tabs of the server's origin, each following ``topic`` with ``options``."""
    pages = []
    for _ in range(count):
        page = await context.new_page()
        await page.goto(f"{server.url}/healthz")  # an origin; the page itself holds no stream
        await page.evaluate(LOAD_JS)
        pages.append(page)
    for page in pages:
        await page.evaluate(OPEN_JS, [f"/topics/{topic}", options])
    return pages


async def open_streams(server: ServerProcess) -> int:
    async with httpx.AsyncClient() as http:
        return int((await http.get(f"{server.url}/healthz")).json()["open_streams"])


async def publish(server: ServerProcess, topic: str, texts: list[str], pace: float = 0.01) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        for text in texts:
            response = await http.post(f"/topics/{topic}", json={"data": text})
            assert response.status_code == 200
            await asyncio.sleep(pace)


async def received(page: Page) -> list[str]:
    return [data for _, data in await page.evaluate("window.got")]


async def until(predicate: Any, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not await predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def roles(pages: list[Page]) -> list[str | None]:
    return [await page.evaluate("window.stream.sharing") for page in pages]


async def test_without_sharing_the_seventh_tab_gets_nothing(
    server: ServerProcess, context: BrowserContext
) -> None:
    topic = f"tabs.alone{time.time_ns()}"
    pages = await open_tabs(context, server, topic, 7, share=False)
    await until(lambda: open_streams_at_least(server, 6))
    await publish(server, topic, ["hello"])
    await until(lambda: all_have(pages[:6], ["hello"]))
    await asyncio.sleep(2)  # the 7th tab's request is still queued behind the other six
    assert await received(pages[6]) == []
    assert await pages[6].evaluate("window.stream.readyState") == "connecting"
    assert await roles(pages) == [None] * 7
    assert await open_streams(server) == 6


async def open_streams_at_least(server: ServerProcess, count: int) -> bool:
    return await open_streams(server) >= count


async def all_have(pages: list[Page], texts: list[str]) -> bool:
    return all([await received(page) == texts for page in pages])


async def test_ten_tabs_share_one_connection_through_closes_and_reloads(
    server: ServerProcess, context: BrowserContext
) -> None:
    topic = f"tabs.shared{time.time_ns()}"
    pages = await open_tabs(context, server, topic, 10)
    await until(lambda: all_open(pages))
    assert sorted(await roles(pages), key=str) == ["follower"] * 9 + ["leader"]
    assert await open_streams(server) == 1

    first = [f"a{n}" for n in range(30)]
    await publish(server, topic, first)
    await until(lambda: all_have(pages, first))

    # The leader tab closes mid-stream: another takes over from its own position.
    leader = pages[(await roles(pages)).index("leader")]
    second = [f"b{n}" for n in range(60)]
    publishing = asyncio.ensure_future(publish(server, topic, second))
    await asyncio.sleep(0.2)
    await leader.close()
    pages.remove(leader)
    await publishing
    await until(lambda: all_have(pages, first + second))
    assert sorted(await roles(pages), key=str) == ["follower"] * 8 + ["leader"]

    # Two tabs reload mid-stream, the new leader among them: they start again, live.
    leader = pages[(await roles(pages)).index("leader")]
    reloaded = [leader, pages[0] if pages[0] is not leader else pages[1]]
    third = [f"c{n}" for n in range(60)]
    publishing = asyncio.ensure_future(publish(server, topic, third))
    await asyncio.sleep(0.2)
    for page in reloaded:
        await page.reload()
        await page.evaluate(LOAD_JS)
        await page.evaluate(OPEN_JS, [f"/topics/{topic}", {}])
    await publishing
    everything = first + second + third
    others = [page for page in pages if page not in reloaded]
    await until(lambda: all_have(others, everything))
    for page in reloaded:  # what came after it reloaded: the tail, once each, in order
        got = await received(page)
        assert got == everything[len(everything) - len(got) :], got
    await until(lambda: all_open(pages))
    assert (await roles(pages)).count("leader") == 1
    fourth = [f"d{n}" for n in range(10)]
    await publish(server, topic, fourth)
    for page in reloaded:
        await until(lambda page=page: ends_with(page, fourth))
    await until(lambda: all_have(others, everything + fourth))
    assert await open_streams(server) == 1


async def all_open(pages: list[Page]) -> bool:
    states = [await page.evaluate("window.stream.readyState") for page in pages]
    return all(state == "open" for state in states)


async def ends_with(page: Page, texts: list[str]) -> bool:
    return (await received(page))[-len(texts) :] == texts


#: Stops the page's main thread for ``ms``, as a frozen (or hung) tab's is stopped: no timer,
#: no message, no read of its connection runs meanwhile. (CDP's Page.setWebLifecycleState
#: freezes only hidden pages, and headless pages are never hidden.)
HANG_JS = """(ms) => setTimeout(() => {
  const end = Date.now() + ms;
  while (Date.now() < end);
}, 0)"""


async def test_a_frozen_leader_is_taken_over_and_follows_when_it_wakes(
    server: ServerProcess, context: BrowserContext
) -> None:
    topic = f"tabs.frozen{time.time_ns()}"
    options = {"leaderTimeout": 2000}
    pages = await open_tabs(context, server, topic, 3, **options)
    await until(lambda: all_open(pages))
    leader = pages[(await roles(pages)).index("leader")]
    others = [page for page in pages if page is not leader]
    before = [f"a{n}" for n in range(10)]
    await publish(server, topic, before)
    await until(lambda: all_have(pages, before))

    await leader.evaluate(HANG_JS, 6000)
    frozen = [f"b{n}" for n in range(40)]
    await publish(server, topic, frozen, pace=0.1)  # 4 s: past the leader timeout
    await until(lambda: all_have(others, before + frozen))
    assert sorted(await roles(others), key=str) == ["follower", "leader"]

    await asyncio.sleep(2.5)  # it wakes up
    after = [f"c{n}" for n in range(10)]
    await publish(server, topic, after)
    everything = before + frozen + after
    await until(lambda: all_have(others, everything))
    # The tab that hung missed nothing either: the new leader's events waited in its channel.
    await until(lambda: all_have([leader], everything))
    assert await leader.evaluate("window.stream.sharing") == "follower"
    await until(lambda: open_streams_equal(server, 1))


async def open_streams_equal(server: ServerProcess, count: int) -> bool:
    return await open_streams(server) == count


async def test_tabs_with_other_credentials_do_not_share(
    server: ServerProcess, context: BrowserContext
) -> None:
    """The leader's request serves its group: a tab signed in as someone else, or not signed
    in, must not read through it, so it has a connection (a group) of its own."""
    topic = f"tabs.who{time.time_ns()}"
    ana, bob = (
        {"headers": {"Authorization": f"Bearer {mint(SECRET, subscribe=['*'], sub=who)}"}}
        for who in ("ana", "bob")
    )
    pages = []
    for options in (ana, ana, bob, {}):
        pages += await open_tabs(context, server, topic, 1, **options)
    await until(lambda: all_open(pages))
    assert await roles(pages[:2]) in (["leader", "follower"], ["follower", "leader"])
    assert await roles(pages[2:]) == ["leader", "leader"]
    assert await open_streams(server) == 3
    await publish(server, topic, ["hello"])
    await until(lambda: all_have(pages, ["hello"]))
