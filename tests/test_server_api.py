"""The HTTP API of ``sluiceway serve``, against a real server process on a loopback port.

Each test talks HTTP to a ``python -m sluiceway.cli serve`` subprocess (see conftest.py).
Tests that need no special settings share one server per module and use their own topics.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from conftest import StartServer
from serverproc import ServerProcess, client_for, get_metrics, open_stream, wait_for

from sluiceway.control import encode_position
from sluiceway.ids import Position

pytestmark = pytest.mark.timeout(60)

SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"


async def publish(
    client: httpx.AsyncClient, topic: str, data: object, event: str | None = None, **kwargs: object
) -> str:
    body: dict[str, object] = {"data": data}
    if event is not None:
        body["event"] = event
    response = await client.post(f"/topics/{topic}", json=body, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    event_id = response.json()["id"]
    assert isinstance(event_id, str)
    return event_id


async def history(client: httpx.AsyncClient, topic: str, **params: object) -> httpx.Response:
    return await client.get(f"/topics/{topic}/history", params=params)  # type: ignore[arg-type]


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == code, body
    assert isinstance(body["detail"], str) and body["detail"]
    return body  # type: ignore[no-any-return]


async def assert_healthy(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


# -- publish and subscribe -----------------------------------------------------------------


async def test_publish_subscribe_round_trip(client: httpx.AsyncClient, topic: str) -> None:
    async with open_stream(client, f"/topics/{topic}") as stream:
        ids = [
            await publish(client, topic, "first"),
            await publish(client, topic, "second", event="greeting"),
            await publish(client, topic, {"n": 3}),
        ]
        events = await stream.events(3)

    assert [(e.data, e.event, e.id) for e in events] == [
        ("first", "message", ids[0]),
        ("second", "greeting", ids[1]),
        ('{"n":3}', "message", ids[2]),
    ]
    positions = [Position.parse(i) for i in ids]
    assert [p.offset for p in positions] == [1, 2, 3]
    assert len({p.epoch for p in positions}) == 1


@pytest.mark.parametrize(
    ("data", "wire"),
    [
        ("plain text", "plain text"),
        ("two\nlines\r\nand\rthree", "two\nlines\nand\nthree"),  # every line end becomes LF
        ("", ""),
        ("42", "42"),  # a string stays a string ...
        (42, "42"),  # ... and a number is sent as JSON
        ({"b": [1, 2.5, None], "a": "é ✓"}, '{"b":[1,2.5,null],"a":"é ✓"}'),
        ([1, "x"], '[1,"x"]'),
        (None, "null"),
        (True, "true"),
    ],
)
async def test_data_string_or_json_value(
    client: httpx.AsyncClient, topic: str, data: object, wire: str
) -> None:
    async with open_stream(client, f"/topics/{topic}") as stream:
        event_id = await publish(client, topic, data)
        event = await stream.next_event()
    assert (event.data, event.id) == (wire, event_id)
    if not isinstance(data, str):
        assert orjson.loads(event.data) == data
    # History returns the data as published (SSE itself cannot carry CR or CRLF line ends).
    page = (await history(client, topic)).json()
    assert [e["data"] for e in page["events"]] == [data if isinstance(data, str) else wire]


async def test_event_names_are_sent_as_event_types(client: httpx.AsyncClient, topic: str) -> None:
    names = ["update", "price.changed", "a:b@c", "x" * 200, "with space"]
    async with open_stream(client, f"/topics/{topic}") as stream:
        for name in names:
            await publish(client, topic, name, event=name)
        await publish(client, topic, "unnamed")
        events = await stream.events(len(names) + 1)
    assert [e.event for e in events] == [*names, "message"]
    assert [e.data for e in events] == [*names, "unnamed"]
    page = (await history(client, topic)).json()
    assert [e["event"] for e in page["events"]] == [*names, None]


async def test_sse_response_headers(client: httpx.AsyncClient, topic: str) -> None:
    for path in (f"/topics/{topic}", f"/events?topic={topic}&topic={topic}.2"):
        async with open_stream(client, path) as stream:
            headers = stream.response.headers
            assert headers["content-type"] == SSE_CONTENT_TYPE
            assert headers["cache-control"] == "no-cache"
            assert headers["x-accel-buffering"] == "no"
            assert headers["transfer-encoding"] == "chunked"
            assert "content-length" not in headers


# -- bad input -----------------------------------------------------------------------------

BAD_BODIES = [
    pytest.param(b"{not json", 400, "invalid_json", id="malformed-json"),
    pytest.param(b"", 400, "invalid_json", id="empty-body"),
    pytest.param(b'{"data": "\\ud800"}', 400, "invalid_json", id="lone-surrogate"),
    pytest.param(b"\xff\xfe", 400, "invalid_json", id="not-utf8"),
    pytest.param(b"[1, 2]", 422, "invalid_body", id="array"),
    pytest.param(b'"text"', 422, "invalid_body", id="string"),
    pytest.param(b"null", 422, "invalid_body", id="null"),
    pytest.param(b"{}", 422, "missing_data", id="empty-object"),
    pytest.param(b'{"event": "x"}', 422, "missing_data", id="event-without-data"),
    pytest.param(b'{"data": 1, "extra": 2}', 422, "unknown_field", id="unknown-field"),
    pytest.param(b'{"data": 1, "id": "7"}', 422, "unknown_field", id="id-field"),
    pytest.param(b'{"data": 1, "event": "a\\nb"}', 422, "invalid_event", id="event-lf"),
    pytest.param(b'{"data": 1, "event": "a\\rb"}', 422, "invalid_event", id="event-cr"),
    pytest.param(b'{"data": 1, "event": "a\\r\\nb"}', 422, "invalid_event", id="event-crlf"),
    pytest.param(b'{"data": 1, "event": "sluiceway.reset"}', 422, "invalid_event", id="reserved"),
    pytest.param(b'{"data": 1, "event": "sluiceway.x"}', 422, "invalid_event", id="reserved-2"),
    pytest.param(b'{"data": 1, "event": ""}', 422, "invalid_event", id="event-empty"),
    pytest.param(b'{"data": 1, "event": 5}', 422, "invalid_event", id="event-number"),
    pytest.param(b'{"data": 1, "event": "%s"}' % (b"x" * 201), 422, "invalid_event", id="long"),
]


@pytest.mark.parametrize(("body", "status", "code"), BAD_BODIES)
async def test_bad_publish_body_is_refused(
    client: httpx.AsyncClient, topic: str, body: bytes, status: int, code: str
) -> None:
    before = await get_metrics(client)
    response = await client.post(
        f"/topics/{topic}", content=body, headers={"content-type": "application/json"}
    )
    assert_error(response, status, code)
    await assert_nothing_published(client, topic, before)


async def assert_nothing_published(
    client: httpx.AsyncClient, topic: str | None, before: dict[str, float]
) -> None:
    await assert_healthy(client)
    after = await get_metrics(client)
    published = "sluiceway_events_published_total"
    assert after[published] == before[published]
    if topic is not None:
        page = (await history(client, topic)).json()
        assert page["events"] == [] and page["latest"] is None


async def test_body_over_max_body_bytes_is_refused_with_content_length(
    client: httpx.AsyncClient, topic: str
) -> None:
    before = await get_metrics(client)
    body = orjson.dumps({"data": "x" * (1024 * 1024)})  # default max_body_bytes: 1 MiB
    response = await client.post(f"/topics/{topic}", content=body)
    assert response.request.headers["content-length"] == str(len(body))
    assert_error(response, 413, "body_too_large")
    await assert_nothing_published(client, topic, before)


async def test_chunked_body_over_max_body_bytes_is_refused(
    client: httpx.AsyncClient, topic: str
) -> None:
    """No Content-Length to check up front: the limit applies while reading."""
    before = await get_metrics(client)

    async def body() -> AsyncIterator[bytes]:
        yield b'{"data": "'
        for _ in range(20):
            yield b"y" * 65536
        yield b'"}'

    response = await client.post(f"/topics/{topic}", content=body())
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_error(response, 413, "body_too_large")
    await assert_nothing_published(client, topic, before)


async def test_chunked_body_within_limit_is_accepted(client: httpx.AsyncClient, topic: str) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b'{"data": "'
        yield b"z" * 1000
        yield b'"}'

    response = await client.post(f"/topics/{topic}", content=body())
    assert response.status_code == 200, response.text
    page = (await history(client, topic)).json()
    assert [e["data"] for e in page["events"]] == ["z" * 1000]


BAD_TOPICS = [
    pytest.param("a%20b", id="space"),
    pytest.param("x" * 201, id="too-long"),
    pytest.param("%C3%A9t%C3%A9", id="non-ascii"),
    pytest.param("a%3Fb", id="question-mark"),
    pytest.param("a%22b", id="quote"),
]


@pytest.mark.parametrize("bad", BAD_TOPICS)
async def test_invalid_topic_name_is_refused_everywhere(
    client: httpx.AsyncClient, bad: str
) -> None:
    before = await get_metrics(client)
    assert_error(await client.post(f"/topics/{bad}", json={"data": 1}), 400, "invalid_topic")
    assert_error(await client.get(f"/topics/{bad}"), 400, "invalid_topic")
    assert_error(await client.get(f"/topics/{bad}/history"), 400, "invalid_topic")
    assert_error(await client.get(f"/events?topic=ok&topic={bad}"), 400, "invalid_topic")
    await assert_nothing_published(client, None, before)
    assert (await get_metrics(client))["sluiceway_open_streams"] == 0


async def test_every_allowed_topic_character_works(start_server: StartServer) -> None:
    # With "$" and "#" it is a private topic, which anonymous clients cannot read (see
    # test_api_grants.py): read it with the server's key.
    server = start_server(env={"SLUICEWAY_PUBLISH_KEY": "k"})
    name = "AZaz09_.:@~+=$#!-"
    quoted = "AZaz09_.:@~+=$%23!-"  # '#' would start the URL fragment
    async with client_for(server, headers={"authorization": "Bearer k"}) as client:
        async with open_stream(client, f"/topics/{quoted}") as stream:
            event_id = await publish(client, quoted, "ok")
            event = await stream.next_event()
        assert (event.data, event.id) == ("ok", event_id)
        page = (await history(client, quoted)).json()
        assert page["topic"] == name
        long_name = "t" * 200
        assert (await client.post(f"/topics/{long_name}", json={"data": 1})).status_code == 200


@pytest.mark.parametrize(
    "bad_id",
    ["garbage", "abc", "ABCD-1", "e-1-2", "e-", "-1", "e-x", "e-1,e-2", "é-1", "e-" + "9" * 19],
)
async def test_garbage_last_event_id_is_refused(
    client: httpx.AsyncClient, topic: str, bad_id: str
) -> None:
    header = bad_id.encode()  # as bytes: httpx refuses non-ASCII str header values
    response = await client.get(f"/topics/{topic}", headers={"Last-Event-ID": header})
    assert_error(response, 400, "invalid_last_event_id")
    response = await client.get(f"/topics/{topic}", params={"last_event_id": bad_id})
    assert_error(response, 400, "invalid_last_event_id")
    await assert_healthy(client)
    assert (await get_metrics(client))["sluiceway_open_streams"] == 0


async def test_multi_topic_stream_refuses_bad_requests(
    client: httpx.AsyncClient, topic: str
) -> None:
    assert_error(await client.get("/events"), 400, "missing_topic")
    many = "&".join(f"topic={topic}.{n}" for n in range(65))  # default limit: 64 per stream
    assert_error(await client.get(f"/events?{many}"), 400, "too_many_topics")
    event_id = await publish(client, topic, 1)
    # A cursor of one position does not fit a stream over two topics.
    response = await client.get(
        "/events", params={"topic": [topic, f"{topic}.b"]}, headers={"Last-Event-ID": event_id}
    )
    assert_error(response, 400, "invalid_last_event_id")
    await assert_healthy(client)


async def test_head_of_a_stream_is_headers_only(client: httpx.AsyncClient, topic: str) -> None:
    before = (await get_metrics(client))["sluiceway_open_streams"]
    for path in (f"/topics/{topic}", f"/events?topic={topic}"):
        response = await client.head(path)
        assert response.status_code == 200
        assert response.headers["content-type"] == SSE_CONTENT_TYPE
        assert response.content == b""
    await wait_for(
        lambda: _open_streams_is(client, before), timeout=5, what="HEAD leaves no stream open"
    )


async def _open_streams_is(client: httpx.AsyncClient, count: float) -> bool:
    return (await get_metrics(client))["sluiceway_open_streams"] == count


async def test_last_event_id_header_wins_over_query(client: httpx.AsyncClient, topic: str) -> None:
    first = await publish(client, topic, "1")
    await publish(client, topic, "2")
    async with open_stream(
        client,
        f"/topics/{topic}",
        params={"last_event_id": "not-an-id"},
        headers={"Last-Event-ID": first},
    ) as stream:
        event = await stream.next_event()
    assert event.data == "2"


# -- publish key ---------------------------------------------------------------------------


async def test_publish_key_is_required_when_configured(start_server, topic: str) -> None:
    server = start_server(env={"SLUICEWAY_PUBLISH_KEY": "s3cret"})
    async with client_for(server) as client:
        before = await get_metrics(client)
        # RFC 6750: no token, or another scheme than Bearer, 401 (no error code); a wrong one
        # 401 invalid_token; a malformed Bearer 400 invalid_request; each with its challenge.
        for headers, status, code in (
            ({}, 401, "unauthorized"),
            ({"Authorization": "Bearer wrong"}, 401, "invalid_token"),
            ({"Authorization": "Bearer s3cre"}, 401, "invalid_token"),
            ({"Authorization": "Basic s3cret"}, 401, "unauthorized"),
            ({"Authorization": "s3cret"}, 401, "unauthorized"),
            ({"Authorization": "Bearer"}, 400, "invalid_request"),
        ):
            response = await client.post(f"/topics/{topic}", json={"data": 1}, headers=headers)
            assert_error(response, status, code)
            challenge = response.headers["www-authenticate"]
            assert challenge.startswith("Bearer")
            assert (f'error="{code}"' in challenge) == (code != "unauthorized")
        await assert_nothing_published(client, topic, before)

        # Subscribing needs no key; publishing with it works and is delivered.
        async with open_stream(client, f"/topics/{topic}") as stream:
            auth = {"Authorization": "Bearer s3cret"}
            event_id = await publish(client, topic, "with key", headers=auth)
            event = await stream.next_event()
        assert (event.data, event.id) == ("with key", event_id)
        await publish(client, topic, "lowercase scheme", headers={"Authorization": "bearer s3cret"})
        assert (await get_metrics(client))["sluiceway_events_published_total"] == 2


# -- history -------------------------------------------------------------------------------


async def test_history_pages_with_after_and_limit(client: httpx.AsyncClient, topic: str) -> None:
    started = time.time()
    ids = [await publish(client, topic, f"m{n}", event="odd" if n % 2 else None) for n in range(25)]
    epoch = Position.parse(ids[0]).epoch

    page = (await history(client, topic, limit=10)).json()
    assert page["topic"] == topic
    assert page["earliest"] == f"{epoch}-0"
    assert page["latest"] == ids[-1]
    assert [e["id"] for e in page["events"]] == ids[:10]
    first = page["events"][1]
    assert (first["data"], first["event"]) == ("m1", "odd")
    assert page["events"][0]["event"] is None
    assert all(started - 5 <= e["published_at"] <= time.time() + 5 for e in page["events"])

    # Page through everything by following the last id of each page.
    seen: list[str] = []
    after: str | None = None
    while True:
        params: dict[str, object] = {"limit": 7}
        if after is not None:
            params["after"] = after
        events = (await history(client, topic, **params)).json()["events"]
        if not events:
            break
        assert len(events) <= 7
        seen += [e["id"] for e in events]
        after = events[-1]["id"]
    assert seen == ids

    default = (await history(client, topic, after=ids[4])).json()["events"]
    assert [e["data"] for e in default] == [f"m{n}" for n in range(5, 25)]  # default limit 100
    at_head = (await history(client, topic, after=ids[-1])).json()
    assert at_head["events"] == [] and at_head["latest"] == ids[-1]
    from_start = (await history(client, topic, after=f"{epoch}-0", limit=1)).json()["events"]
    assert [e["id"] for e in from_start] == ids[:1]
    assert len((await history(client, topic, limit=1000)).json()["events"]) == 25


async def test_history_errors(client: httpx.AsyncClient, topic: str) -> None:
    ids = [await publish(client, topic, n) for n in range(3)]
    epoch = Position.parse(ids[0]).epoch
    for limit in ("0", "1001", "-1", "abc", "1.5", ""):
        assert_error(await history(client, topic, limit=limit), 400, "invalid_limit")
    for after in ("garbage", "e-1-2", "ABC-1"):
        assert_error(await history(client, topic, after=after), 400, "invalid_after")
    other_epoch = "0" if epoch != "0" else "1"
    gone = assert_error(await history(client, topic, after=f"{other_epoch}-1"), 410, "history_gone")
    assert gone["earliest"] == f"{epoch}-0"
    assert_error(await history(client, topic, after=f"{epoch}-4"), 410, "history_gone")
    # An unknown topic has no history: empty without `after`, gone with one.
    empty = (await history(client, f"{topic}.none")).json()
    assert empty == {"topic": f"{topic}.none", "events": [], "earliest": None, "latest": None}
    gone = assert_error(await history(client, f"{topic}.none", after=ids[0]), 410, "history_gone")
    assert gone["earliest"] is None
    await assert_healthy(client)


# -- multi-topic streams -------------------------------------------------------------------


async def test_multi_topic_stream_and_resume_with_its_cursor(
    client: httpx.AsyncClient, topic: str
) -> None:
    a, b = f"{topic}.a", f"{topic}.b"
    posted: dict[str, str] = {}  # data -> id; data starts with the topic's letter

    async def post(name: str, data: str) -> str:
        posted[data] = await publish(client, name, data, event=f"ev-{data}")
        return posted[data]

    path = f"/events?topic={b}&topic={a}&topic={b}"  # order and repeats do not matter
    async with open_stream(client, path) as stream:
        a1 = await post(a, "a1")
        first = await stream.next_event()
        b1 = await post(b, "b1")
        second = await stream.next_event()
    # A cursor names every followed topic's position, in sorted topic-name order (a, b).
    assert (first.data, first.event, first.id) == ("a1", "ev-a1", f"{a1},{b1[:-1]}0")
    assert (second.data, second.event, second.id) == ("b1", "ev-b1", f"{a1},{b1}")

    # Missed while away: resuming with the last cursor continues every topic exactly.
    for data, name in (("b2", b), ("a2", a), ("b3", b)):
        await post(name, data)
    async with open_stream(
        client, f"/events?topic={a}&topic={b}", last_event_id=second.id
    ) as stream:
        replay = await stream.events(3)
        a3 = await post(a, "a3")
        live = await stream.next_event()
    assert_cursor_stream([*replay, live], posted, second.id)
    assert sorted(e.data for e in replay) == ["a2", "b2", "b3"]
    assert (live.data, live.id) == ("a3", f"{a3},{posted['b3']}")

    # The same cursor again, this time as ?last_event_id=: the same exact replay.
    async with open_stream(
        client, "/events", params={"topic": [a, b], "last_event_id": second.id}
    ) as stream:
        replay = await stream.events(4)
    assert_cursor_stream(replay, posted, second.id)
    assert sorted(e.data for e in replay) == ["a2", "a3", "b2", "b3"]
    assert replay[-1].id == f"{a3},{posted['b3']}"


def assert_cursor_stream(events: list, posted: dict[str, str], start: str) -> None:
    """Each event's own topic position in the cursor is the id its publish returned; each
    topic's events come in publish order; the cursor only moves forward, one step at a time."""
    previous = [Position.parse(part) for part in start.split(",")]
    for event in events:
        index = "ab".index(event.data[0])
        assert event.event == f"ev-{event.data}"
        cursor = [Position.parse(part) for part in event.id.split(",")]
        assert str(cursor[index]) == posted[event.data]
        assert cursor[index].offset == previous[index].offset + 1
        assert cursor[1 - index] == previous[1 - index]
        previous = cursor


# -- reset events --------------------------------------------------------------------------


async def test_reset_after_server_restart(start_server, topic: str) -> None:
    server: ServerProcess = start_server()
    other = f"{topic}.z"
    async with client_for(server) as client:
        old = [await publish(client, topic, n) for n in range(3)]
        old_other = await publish(client, other, "z")
    server.restart()  # a fresh in-memory hub: the old ids belong to an epoch nobody knows
    async with client_for(server) as client:
        async with open_stream(client, f"/topics/{topic}", last_event_id=old[1]) as stream:
            reset = await stream.next_event()
            live_id = await publish(client, topic, "after restart")
            live = await stream.next_event()
        assert reset.event == "sluiceway.reset"
        epoch = Position.parse(live_id).epoch
        assert orjson.loads(reset.data) == {
            "topics": [
                {
                    "topic": topic,
                    "reason": "unknown_epoch",
                    "requested": old[1],
                    "earliest": f"{epoch}-0",
                    "resumed_at": f"{epoch}-0",
                }
            ]
        }
        assert reset.id == f"{epoch}-0"  # resuming from the reset's id is exact
        assert (live.data, live.id) == ("after restart", live_id)
        assert Position.parse(live_id) == Position(epoch, 1)

        # A multi-topic cursor from before the restart: both topics are reported.
        cursor = f"{old[2]},{old_other}"
        async with open_stream(
            client, f"/events?topic={topic}&topic={other}", last_event_id=cursor
        ) as stream:
            reset = await stream.next_event()
            other_id = await publish(client, other, "live")
            live = await stream.next_event()
        detail = orjson.loads(reset.data)["topics"]
        assert [(t["topic"], t["reason"], t["requested"]) for t in detail] == [
            (topic, "unknown_epoch", old[2]),
            (other, "unknown_epoch", old_other),
        ]
        assert reset.id == f"{live_id},{Position.parse(other_id).epoch}-0"
        assert (live.data, live.id) == ("live", f"{live_id},{other_id}")
        assert (await get_metrics(client))["sluiceway_resets_total"] == 2


async def test_reset_after_history_was_trimmed(start_server, topic: str) -> None:
    server: ServerProcess = start_server(env={"SLUICEWAY_HISTORY_SIZE": "5"})
    async with client_for(server) as client:
        ids = [await publish(client, topic, f"m{n}") for n in range(12)]  # offsets 1..12
        epoch = Position.parse(ids[0]).epoch
        page = (await history(client, topic)).json()
        assert [e["data"] for e in page["events"]] == [f"m{n}" for n in range(7, 12)]
        assert page["earliest"] == f"{epoch}-7"

        async with open_stream(client, f"/topics/{topic}", last_event_id=ids[1]) as stream:
            reset = await stream.next_event()
            live_id = await publish(client, topic, "live")
            live = await stream.next_event()
        assert reset.event == "sluiceway.reset"
        assert orjson.loads(reset.data)["topics"] == [
            {
                "topic": topic,
                "reason": "expired",
                "requested": ids[1],
                "earliest": f"{epoch}-7",
                "resumed_at": f"{epoch}-12",
            }
        ]
        assert reset.id == ids[-1]
        # No partial replay of m7..m11: the stream goes on live.
        assert (live.data, live.id) == ("live", live_id)

        # A two-topic cursor where only one topic lost its place: the reset names that topic
        # alone, and the other topic's missed events are replayed exactly.
        other = f"{topic}.other"
        other_ids = [await publish(client, other, f"o{n}") for n in range(2)]
        cursor = ",".join([ids[1], other_ids[0]])  # sorted: topic < topic.other
        async with open_stream(
            client, "/events", params={"topic": [other, topic]}, last_event_id=cursor
        ) as stream:
            reset, replayed = await stream.events(2)
        (detail,) = orjson.loads(reset.data)["topics"]
        assert (detail["topic"], detail["reason"]) == (topic, "expired")
        assert reset.id == f"{live_id},{other_ids[0]}"
        assert (replayed.data, replayed.id) == ("o1", f"{live_id},{other_ids[1]}")

        # "live" (offset 13) trimmed offset 8 too.
        gone = assert_error(await history(client, topic, after=ids[1]), 410, "history_gone")
        assert gone["earliest"] == f"{epoch}-8"

        # Resuming from the earliest retained position is still exact.
        async with open_stream(client, f"/topics/{topic}", last_event_id=f"{epoch}-8") as stream:
            replay = await stream.events(5)
        assert [e.data for e in replay] == [*(f"m{n}" for n in range(8, 12)), "live"]
        assert all(e.event == "message" for e in replay)
        assert (await get_metrics(client))[
            "sluiceway_resets_total"
        ] == 2  # the two streams that began with one


async def test_reset_for_a_position_never_published(client: httpx.AsyncClient, topic: str) -> None:
    first = await publish(client, topic, "only")
    epoch = Position.parse(first).epoch
    async with open_stream(client, f"/topics/{topic}", last_event_id=f"{epoch}-99") as stream:
        reset = await stream.next_event()
    assert reset.event == "sluiceway.reset"
    (detail,) = orjson.loads(reset.data)["topics"]
    assert detail["reason"] == "unknown_position"
    assert detail["requested"] == f"{epoch}-99"
    assert detail["resumed_at"] == first


# -- metrics and retry ---------------------------------------------------------------------


async def test_metrics_reflect_publishes_and_deliveries(
    client: httpx.AsyncClient, topic: str
) -> None:
    before = await get_metrics(client)
    async with open_stream(client, f"/topics/{topic}") as one:
        async with open_stream(client, f"/topics/{topic}") as two:
            opened = await get_metrics(client)
            assert opened["sluiceway_open_streams"] == before["sluiceway_open_streams"] + 2
            for n in range(5):
                await publish(client, topic, f"event {n}")
            got_one = await one.events(5)
            got_two = await two.events(5)
            assert [e.data for e in got_one] == [e.data for e in got_two]
            streamed = len(one.raw) + len(two.raw)
        after = await get_metrics(client)

    def delta(name: str) -> float:
        return after[name] - before[name]

    assert delta("sluiceway_events_published_total") == 5
    assert delta("sluiceway_events_delivered_total") == 10
    assert delta("sluiceway_bytes_sent_total") >= streamed
    assert delta("sluiceway_streams_opened_total") == 2
    assert after["sluiceway_topics"] >= 1

    async def closed() -> bool:
        metrics = await get_metrics(client)
        return metrics["sluiceway_open_streams"] == before["sluiceway_open_streams"]

    await wait_for(closed, timeout=5)


@pytest.mark.parametrize("native", ["true", "false"], ids=["native", "asgi"])
async def test_retry_headers_and_reset_in_both_stream_writers(
    start_server, native: str, topic: str
) -> None:
    """Both stream writers (native and ASGI): retry first, the SSE headers, then a reset
    event for a position never published, then live events."""
    server: ServerProcess = start_server(
        env={"SLUICEWAY_RETRY_MS": "1234", "SLUICEWAY_NATIVE_STREAMS": native}
    )
    async with client_for(server) as client:
        first = await publish(client, topic, "before")
        epoch = Position.parse(first).epoch
        for path, resume in (
            (f"/topics/{topic}", f"{epoch}-9"),
            (f"/events?topic={topic}&topic={topic}.x", None),
        ):
            async with open_stream(client, path, last_event_id=resume) as stream:
                headers = stream.response.headers
                assert headers["content-type"] == SSE_CONTENT_TYPE
                assert headers["cache-control"] == "no-cache"
                assert headers["x-accel-buffering"] == "no"
                await stream.until_raw(b"\n\n")
                assert bytes(stream.raw).startswith(b"retry: 1234\n\n")
                if resume is not None:
                    reset = await stream.next_event()
                    assert reset.event == "sluiceway.reset"
                    assert orjson.loads(reset.data)["topics"][0]["reason"] == "unknown_position"
                    assert reset.id == first
                event_id = await publish(client, topic, "after retry")
                event = await stream.next_event()
                assert event.data == "after retry"
                assert event.id.split(",")[0] == event_id
                assert stream.parser.retry == 1234


async def test_no_retry_by_default(client: httpx.AsyncClient, topic: str) -> None:
    async with open_stream(client, f"/topics/{topic}") as stream:
        event_id = await publish(client, topic, "x")
        await stream.next_event()
        # Only the position the stream started at (before event 1 of this epoch), then x.
        position = event_id.rsplit("-", 1)[0] + "-0"
        assert (
            bytes(stream.raw) == encode_position(position) + f"data: x\nid: {event_id}\n\n".encode()
        )
        assert stream.parser.retry is None


async def test_healthz(client: httpx.AsyncClient, topic: str) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert isinstance(body["open_streams"], int) and isinstance(body["topics"], int)
    async with open_stream(client, f"/topics/{topic}"):
        assert (await client.get("/healthz")).json()["open_streams"] == body["open_streams"] + 1
    assert_error(await client.get("/no/such/path"), 404, "not_found")
    assert_error(await client.delete(f"/topics/{topic}"), 405, "method_not_allowed")
