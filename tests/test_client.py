"""``sluiceway.client.EventSource`` against scripted servers: statuses, resume, ``retry:``,
idle timeout, bodies, closing.  Every test runs the async and the sync API."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from sse_servers import Connection, ScriptedServer

from sluiceway.client import (
    ContentTypeError,
    EventSource,
    HTTPStatusError,
    ReconnectExhausted,
    Reset,
    RetryInfo,
    StreamInterrupted,
)
from sluiceway.sse import Event

MODES = ["async", "sync"]


def take(source: EventSource, mode: str, count: int | None = None) -> list[Event]:
    """Events until the iteration ends, or the first ``count`` of them."""

    def done(events: list[Event]) -> bool:
        return count is not None and len(events) >= count

    if mode == "sync":
        events: list[Event] = []
        with source:
            for event in source:
                events.append(event)
                if done(events):
                    break
        return events

    async def run() -> list[Event]:
        events: list[Event] = []
        async with source:
            async for event in source:
                events.append(event)
                if done(events):
                    break
        return events

    return asyncio.run(asyncio.wait_for(run(), 30))


def calls(handler_steps: list) -> object:
    """A handler that runs the n-th step for the n-th request (the last one repeats)."""
    count = 0

    async def handler(connection: Connection) -> None:
        nonlocal count
        step = handler_steps[min(count, len(handler_steps) - 1)]
        count += 1
        await step(connection)

    return handler


async def no_content(connection: Connection) -> None:
    await connection.respond(204)


def events_then_close(*blocks: bytes) -> object:
    async def step(connection: Connection) -> None:
        await connection.send_head()
        for block in blocks:
            await connection.send(block)
        await connection.end()

    return step


@pytest.mark.parametrize("mode", MODES)
def test_reconnects_after_the_end_with_last_event_id_and_stops_on_204(mode: str) -> None:
    steps = [events_then_close(b"id: 1\ndata: a\n\n", b"id: 2\ndata: b\n\n"), no_content]
    with ScriptedServer(calls(steps)) as server:
        source = EventSource(server.url + "/s", retry_delay=0.01)
        events = take(source, mode)
    assert [(e.id, e.data) for e in events] == [("1", "a"), ("2", "b")]
    assert [r.headers.get("last-event-id") for r in server.requests] == [None, "2"]
    assert server.requests[0].headers["accept"] == "text/event-stream"
    assert source.reconnects == 1


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("status", [401, 403, 404])
def test_client_errors_raise_with_status_and_body_and_are_not_retried(
    mode: str, status: int
) -> None:
    async def refuse(connection: Connection) -> None:
        body = orjson.dumps({"error": "nope", "detail": f"status {status}"})
        await connection.respond(status, body, content_type="application/json")

    with ScriptedServer(refuse) as server, pytest.raises(HTTPStatusError) as caught:
        take(EventSource(server.url + "/s", retry_delay=0.01), mode)
    assert caught.value.status == status
    assert orjson.loads(caught.value.body) == {"error": "nope", "detail": f"status {status}"}
    assert str(status) in str(caught.value)
    assert len(server.requests) == 1


@pytest.mark.parametrize("mode", MODES)
def test_a_response_that_is_not_an_event_stream_raises(mode: str) -> None:
    async def html(connection: Connection) -> None:
        await connection.respond(200, b"<html>login</html>", content_type="text/html")

    with ScriptedServer(html) as server, pytest.raises(ContentTypeError, match="text/html"):
        take(EventSource(server.url + "/s"), mode)
    assert len(server.requests) == 1


@pytest.mark.parametrize("mode", MODES)
def test_503_twice_then_success(mode: str) -> None:
    async def unavailable(connection: Connection) -> None:
        await connection.respond(503, b"busy")

    retries: list[RetryInfo] = []
    steps = [unavailable, unavailable, events_then_close(b"id: 1\ndata: ok\n\n"), no_content]
    with ScriptedServer(calls(steps)) as server:
        source = EventSource(server.url + "/s", retry_delay=0.01, on_retry=retries.append)
        events = take(source, mode)
    assert [e.data for e in events] == ["ok"]
    assert len(server.requests) == 4
    assert [(r.failures, r.reason) for r in retries] == [
        (1, "HTTP 503"),
        (2, "HTTP 503"),
        (0, "the server ended the stream"),
    ]


@pytest.mark.parametrize("mode", MODES)
def test_429_retry_after_is_honoured(mode: str) -> None:
    async def too_many(connection: Connection) -> None:
        await connection.respond(429, b"slow down", Retry_After="1")

    steps = [too_many, events_then_close(b"data: ok\n\n"), no_content]
    with ScriptedServer(calls(steps)) as server:
        events = take(EventSource(server.url + "/s", retry_delay=0.01), mode)
    assert [e.data for e in events] == ["ok"]
    gap = server.requests[1].at - server.requests[0].at
    assert gap >= 1.0


@pytest.mark.parametrize("mode", MODES)
def test_max_attempts_gives_up_with_the_last_failure(mode: str) -> None:
    async def unavailable(connection: Connection) -> None:
        await connection.respond(503)

    with ScriptedServer(unavailable) as server, pytest.raises(ReconnectExhausted, match="503"):
        take(EventSource(server.url + "/s", retry_delay=0.01, max_attempts=3), mode)
    assert len(server.requests) == 3


@pytest.mark.parametrize("mode", MODES)
def test_server_retry_sets_the_reconnection_time(mode: str) -> None:
    steps = [events_then_close(b"retry: 400\nid: 1\ndata: a\n\n"), no_content]
    with ScriptedServer(calls(steps)) as server:
        source = EventSource(server.url + "/s")  # 3 s by default: the server's 0.4 s must win
        take(source, mode)
    gap = server.requests[1].at - server.requests[0].at
    assert 0.4 <= gap < 2.0
    assert source.retry_delay == 0.4


@pytest.mark.parametrize("mode", MODES)
def test_idle_timeout_reconnects_a_silent_connection(mode: str) -> None:
    async def then_silence(connection: Connection) -> None:
        await connection.send_head()
        await connection.send(b"id: 1\ndata: a\n\n")
        await connection.hold()

    with ScriptedServer(calls([then_silence, no_content])) as server:
        started = time.monotonic()
        events = take(EventSource(server.url + "/s", idle_timeout=0.5, retry_delay=0.01), mode)
        elapsed = time.monotonic() - started
    assert [e.data for e in events] == ["a"]
    assert server.requests[1].headers["last-event-id"] == "1"
    assert 0.5 <= elapsed < 5


@pytest.mark.parametrize("mode", MODES)
def test_keep_alive_comments_keep_a_quiet_stream_open(mode: str) -> None:
    async def quiet(connection: Connection) -> None:
        await connection.send_head()
        for _ in range(8):  # 1.6 s of comments only, with an idle timeout of 0.5 s
            await connection.send(b": ping\n\n")
            await asyncio.sleep(0.2)
        await connection.send(b"data: late\n\n")
        await connection.end()

    with ScriptedServer(calls([quiet, no_content])) as server:
        events = take(EventSource(server.url + "/s", idle_timeout=0.5, retry_delay=0.01), mode)
    assert [e.data for e in events] == ["late"]
    assert len(server.requests) == 2  # the stream, then the 204: no idle reconnect


@pytest.mark.parametrize("mode", MODES)
def test_closing_the_client_closes_the_socket(mode: str) -> None:
    async def one_then_hold(connection: Connection) -> None:
        await connection.send_head()
        await connection.send(b"data: a\n\n")
        await connection.hold()

    with ScriptedServer(one_then_hold) as server:
        events = take(EventSource(server.url + "/s"), mode, count=1)
        assert [e.data for e in events] == ["a"]
        assert server.wait_disconnects(1, timeout=2.0)


def test_cancelling_the_reading_task_closes_the_socket() -> None:
    async def hold(connection: Connection) -> None:
        await connection.send_head()
        await connection.hold()

    async def main(url: str) -> None:
        async def read() -> None:
            async for _ in EventSource(url):
                pass

        task = asyncio.create_task(read())
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with ScriptedServer(hold) as server:
        asyncio.run(main(server.url + "/s"))
        assert server.wait_disconnects(1, timeout=2.0)


@pytest.mark.parametrize("mode", MODES)
def test_a_cut_mid_event_resumes_from_the_last_complete_event(mode: str) -> None:
    async def first(connection: Connection) -> None:
        await connection.send_head()
        await connection.send(b"id: 1\ndata: a\n\nid: 2\ndata: half-of-b")  # then the cut

    second = events_then_close(b"id: 2\ndata: b\n\n")
    with ScriptedServer(calls([first, second, no_content])) as server:
        events = take(EventSource(server.url + "/s", retry_delay=0.01), mode)
    assert [(e.id, e.data) for e in events] == [("1", "a"), ("2", "b")]
    assert server.requests[1].headers["last-event-id"] == "1"


@pytest.mark.parametrize("mode", MODES)
def test_post_json_with_headers_resumes_once_it_has_an_id(mode: str) -> None:
    async def break_after_one(connection: Connection) -> None:
        await connection.send_head()
        await connection.send(b"id: g-1\ndata: Hel\n\n")
        connection.writer.transport.abort()

    rest = events_then_close(b"id: g-2\ndata: lo\n\n")
    body = {"messages": [{"role": "user", "content": "hi"}]}
    with ScriptedServer(calls([break_after_one, rest])) as server:
        source = EventSource(
            server.url + "/v1/gen",
            method="POST",
            json=body,
            headers={"Authorization": "Bearer k"},
            retry_delay=0.01,
        )
        events = take(source, mode)
    assert "".join(e.data or "" for e in events) == "Hello"
    assert len(server.requests) == 2  # the clean end of a POST is the end: no third request
    for request in server.requests:
        assert request.method == "POST"
        assert orjson.loads(request.body) == body
        assert request.headers["authorization"] == "Bearer k"
    assert server.requests[1].headers["last-event-id"] == "g-1"


@pytest.mark.parametrize("mode", MODES)
def test_post_without_an_id_is_not_sent_twice(mode: str) -> None:
    async def break_early(connection: Connection) -> None:
        await connection.send_head()
        await connection.send(b"data: no id here\n\n")
        connection.writer.transport.abort()

    with ScriptedServer(break_early) as server, pytest.raises(StreamInterrupted):
        take(EventSource(server.url + "/gen", method="POST", json={}, retry_delay=0.01), mode)
    assert len(server.requests) == 1


@pytest.mark.parametrize("mode", MODES)
def test_post_cut_after_only_a_position_is_not_sent_twice(mode: str) -> None:
    """A position event gives an id to resume a GET from, not leave to send a body again:
    the endpoint might start a second (billed) generation rather than resume."""

    async def break_after_the_position(connection: Connection) -> None:
        await connection.send_head()
        await connection.send(b'id: p-0\nevent: sluiceway.position\ndata: {"position":"p-0"}\n\n')
        connection.writer.transport.abort()

    with ScriptedServer(break_after_the_position) as server, pytest.raises(StreamInterrupted):
        take(EventSource(server.url + "/gen", method="POST", json={}, retry_delay=0.01), mode)
    assert len(server.requests) == 1


@pytest.mark.parametrize("mode", MODES)
def test_reset_events_are_yielded_counted_and_reported(mode: str) -> None:
    reset = (
        b"event: sluiceway.reset\nid: e-9\n"
        b'data: {"topics":[{"topic":"news","reason":"expired","requested":"e-1",'
        b'"earliest":"e-5","resumed_at":"e-9"}]}\n\n'
    )
    resets: list[Reset] = []
    with ScriptedServer(
        calls([events_then_close(reset, b"id: e-10\ndata: x\n\n"), no_content])
    ) as server:
        source = EventSource(server.url + "/s", retry_delay=0.01, on_reset=resets.append)
        events = take(source, mode)
    assert [e.event for e in events] == ["sluiceway.reset", "message"]
    assert source.resets == 1
    assert resets[0].event_id == "e-9"
    assert [(t.topic, t.reason, t.earliest) for t in resets[0].topics] == [
        ("news", "expired", "e-5")
    ]


@pytest.mark.parametrize("mode", MODES)
def test_json_data(mode: str) -> None:
    steps = [events_then_close(b'data: {"n": 1,\ndata:  "ok": true}\n\n'), no_content]
    with ScriptedServer(calls(steps)) as server:
        events = take(EventSource(server.url + "/s", retry_delay=0.01), mode)
    assert events[0].json() == {"n": 1, "ok": True}
