"""The hub's contract: ids, history, resume, reset, bounds and overflow policies.

These tests use the hub directly (no HTTP); the same contract is exercised over HTTP in
test_server_api.py and test_streaming.py.
"""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from conftest import MakeHub

from sluiceway.hub import (
    RESET_EVENT,
    ClaimTaken,
    CloseReason,
    HistoryGone,
    HubClosed,
    HubConfig,
    InvalidEventId,
    InvalidTopic,
    Subscription,
    TooManyTopics,
    TopicBounds,
    TopicFinished,
)
from sluiceway.ids import Position
from sluiceway.sse import Event, Parser


def drain(sub: Subscription) -> list[Event]:
    """Everything the subscription has ready now, parsed as a client would."""
    parser = Parser()
    events: list[Event] = []
    while (chunk := sub.next_chunk()) is not None:
        events.extend(parser.feed(chunk))
    return events


async def test_ids_are_ordered_positions_in_one_epoch(make_hub: MakeHub) -> None:
    hub = await make_hub()
    ids = [await hub.publish("t", str(n)) for n in range(3)]
    positions = [Position.parse(i) for i in ids]
    assert [p.offset for p in positions] == [1, 2, 3]
    assert len({p.epoch for p in positions}) == 1
    assert Position.parse(await hub.publish("other", "x")).offset == 1  # offsets are per topic


async def test_live_subscriber_receives_events_with_ids_and_types(make_hub: MakeHub) -> None:
    hub = await make_hub()
    sub = await hub.subscribe(["t"])
    assert sub.next_chunk() is None  # no replay without a last event id
    first = await hub.publish("t", "hello", event="greeting")
    second = await hub.publish("t", {"n": 1})
    events = drain(sub)
    assert [(e.data, e.event, e.id) for e in events] == [
        ("hello", "greeting", first),
        ('{"n":1}', "message", second),
    ]


async def test_every_subscriber_gets_the_same_bytes_object(make_hub: MakeHub) -> None:
    hub = await make_hub()
    subs = [await hub.subscribe(["t"]) for _ in range(3)]
    await hub.publish("t", "x")
    chunks = [sub.next_chunk() for sub in subs]
    assert chunks[0] is chunks[1] is chunks[2]  # encoded once, fanned out as is


async def test_pending_events_are_coalesced_into_one_chunk(make_hub: MakeHub) -> None:
    hub = await make_hub()
    sub = await hub.subscribe(["t"])
    for n in range(5):
        await hub.publish("t", str(n))
    chunk = sub.next_chunk()
    assert chunk is not None
    assert [e.data for e in Parser().feed(chunk)] == ["0", "1", "2", "3", "4"]
    assert sub.next_chunk() is None


async def test_coalesced_chunks_respect_max_chunk_bytes(make_hub: MakeHub) -> None:
    hub = await make_hub(HubConfig(max_chunk_bytes=1000))
    sub = await hub.subscribe(["t"])
    for _ in range(20):
        await hub.publish("t", "x" * 300)
    chunks = []
    while (chunk := sub.next_chunk()) is not None:
        chunks.append(chunk)
    assert all(len(c) <= 1000 for c in chunks)
    assert sum(len(Parser().feed(c)) for c in chunks) == 20


async def test_resume_replays_exactly_what_was_missed_then_continues_live(
    make_hub: MakeHub,
) -> None:
    hub = await make_hub()
    ids = [await hub.publish("t", str(n)) for n in range(10)]
    sub = await hub.subscribe(["t"], last_event_id=ids[3])
    await hub.publish("t", "10")  # published between replay and live: no seam
    events = drain(sub)
    assert [e.data for e in events] == [str(n) for n in range(4, 11)]
    assert [e.id for e in events[:-1]] == ids[4:]


async def test_resume_at_head_replays_nothing(make_hub: MakeHub) -> None:
    hub = await make_hub()
    last = await hub.publish("t", "a")
    sub = await hub.subscribe(["t"], last_event_id=last)
    assert drain(sub) == []


@pytest.mark.parametrize(
    ("make_id", "reason"),
    [
        (lambda ids: ids[0], "expired"),  # trimmed by history_size
        (lambda ids: "deadbeef-3", "unknown_epoch"),  # e.g. ids from before a restart
        (lambda ids: ids[-1].rsplit("-", 1)[0] + "-999", "unknown_position"),
    ],
)
async def test_resume_from_a_lost_position_sends_a_reset_then_continues_live(
    make_hub: MakeHub, make_id: object, reason: str
) -> None:
    hub = await make_hub(HubConfig(history_size=3))
    ids = [await hub.publish("t", str(n)) for n in range(6)]
    sub = await hub.subscribe(["t"], last_event_id=make_id(ids))  # type: ignore[operator]
    await hub.publish("t", "live")
    events = drain(sub)
    assert events[0].event == RESET_EVENT
    detail = orjson.loads(events[0].data)["topics"][0]
    assert detail["topic"] == "t"
    assert detail["reason"] == reason
    assert detail["resumed_at"] == ids[-1]
    assert events[0].id == ids[-1]  # resuming from the reset's id is exact
    # No partial replay: only what was published after the subscription.
    assert [e.data for e in events[1:]] == ["live"]
    assert hub.stats.resets == 1


async def test_garbage_last_event_id_is_refused(make_hub: MakeHub) -> None:
    hub = await make_hub()
    for bad in ["nonsense", "abc-", "-1", "UPPER-1", "a-1,b-2", "a-1\n", "a-1 "]:
        with pytest.raises(InvalidEventId):
            await hub.subscribe(["t"], last_event_id=bad)


async def test_invalid_topic_names_are_refused(make_hub: MakeHub) -> None:
    hub = await make_hub()
    for bad in ["", "a/b", "a b", "x" * 201, "é"]:
        with pytest.raises(InvalidTopic):
            await hub.publish(bad, "x")
        with pytest.raises(InvalidTopic):
            await hub.subscribe([bad])


async def test_multi_topic_stream_resumes_every_topic_from_one_cursor(make_hub: MakeHub) -> None:
    hub = await make_hub()
    sub = await hub.subscribe(["b", "a"])
    await hub.publish("a", "a1")
    await hub.publish("b", "b1")
    events = drain(sub)
    assert sorted(e.data for e in events) == ["a1", "b1"]
    cursor = events[-1].id
    assert len(cursor.split(",")) == 2  # one position per followed topic, sorted by name
    sub.release()
    await hub.publish("a", "a2")
    await hub.publish("b", "b2")
    await hub.publish("a", "a3")
    resumed = await hub.subscribe(["a", "b"], last_event_id=cursor)
    assert sorted(e.data for e in drain(resumed)) == ["a2", "a3", "b2"]


async def test_multi_topic_cursor_must_match_the_topic_count(make_hub: MakeHub) -> None:
    hub = await make_hub()
    one = await hub.publish("a", "x")
    with pytest.raises(InvalidEventId):
        await hub.subscribe(["a", "b"], last_event_id=one)


async def test_multi_topic_reset_covers_only_the_lost_topic(make_hub: MakeHub) -> None:
    hub = await make_hub(HubConfig(history_size=2))
    sub = await hub.subscribe(["a", "b"])
    await hub.publish("a", "a1")
    await hub.publish("b", "b1")
    cursor = drain(sub)[-1].id
    sub.release()
    for n in range(5):
        await hub.publish("a", f"a{n + 2}")  # trims a's history past the cursor
    await hub.publish("b", "b2")
    resumed = await hub.subscribe(["a", "b"], last_event_id=cursor)
    events = drain(resumed)
    assert events[0].event == RESET_EVENT
    assert [t["topic"] for t in orjson.loads(events[0].data)["topics"]] == ["a"]
    assert [e.data for e in events[1:]] == ["b2"]  # b is resumed exactly, a goes on live


async def test_overflow_closes_a_slow_subscriber_who_can_resume_without_loss(
    make_hub: MakeHub,
) -> None:
    hub = await make_hub(HubConfig(buffer_events=5, history_size=100))
    sub = await hub.subscribe(["t"])
    first = await hub.publish("t", "0")
    sub_chunk = sub.next_chunk()
    assert sub_chunk is not None
    ids = [first] + [await hub.publish("t", str(n)) for n in range(1, 10)]
    assert sub.next_chunk() is None
    assert sub.close_reason is CloseReason.OVERFLOW
    assert hub.stats.overflow_disconnects == 1
    resumed = await hub.subscribe(["t"], last_event_id=ids[0])
    assert [e.data for e in drain(resumed)] == [str(n) for n in range(1, 10)]


async def test_overflow_by_bytes(make_hub: MakeHub) -> None:
    hub = await make_hub(HubConfig(buffer_bytes=1000))
    sub = await hub.subscribe(["t"])
    for _ in range(5):
        await hub.publish("t", "x" * 400)
    assert sub.next_chunk() is None
    assert sub.close_reason is CloseReason.OVERFLOW


async def test_keep_latest_topics_skip_to_the_newest_event(make_hub: MakeHub) -> None:
    hub = await make_hub(HubConfig(buffer_events=3, keep_latest_topics=("dash.*",)))
    sub = await hub.subscribe(["dash.cpu"])
    ids = [await hub.publish("dash.cpu", str(n)) for n in range(10)]
    events = drain(sub)
    assert [(e.data, e.id) for e in events] == [("9", ids[-1])]
    assert sub.close_reason is None
    assert hub.stats.skipped_to_latest == 1


async def test_publisher_never_waits_and_memory_is_bounded_by_history(make_hub: MakeHub) -> None:
    hub = await make_hub(HubConfig(history_size=50, buffer_events=50))
    subs = [await hub.subscribe(["t"]) for _ in range(100)]  # none of them reads
    # Each publish is a round trip to Redis (~0.2 ms here), so fewer there; none may block.
    count = 20_000 if hub.backend is None else 2_000
    started = time.perf_counter()
    for n in range(count):
        await hub.publish("t", str(n))
    assert time.perf_counter() - started < 5
    topic = hub._table.get("t")
    assert len(topic._frames) == 50
    assert all(sub.next_chunk() is None and sub.closed for sub in subs)


async def test_history_is_bounded_by_count_bytes_and_age(make_hub: MakeHub) -> None:
    hub = await make_hub(HubConfig(history_size=5, history_bytes=10_000, history_ttl=60))
    for n in range(8):
        await hub.publish("count", str(n))
    page = await hub.history("count")
    assert [e.data for e in page.events] == ["3", "4", "5", "6", "7"]

    for _ in range(4):
        await hub.publish("bytes", "x" * 4000)
    assert len((await hub.history("bytes")).events) == 2

    await hub.publish("age", "old")
    await hub.history("age")  # with a shared backend, this process now mirrors the topic
    topic = hub._table.get("age")
    topic.trim_expired(time.monotonic() + 61)
    page = await hub.history("age")
    assert page.events == []
    assert page.latest is not None
    assert page.latest.offset == 1  # the offset is not reused after expiry


async def test_history_pages_and_refuses_a_gone_position(make_hub: MakeHub) -> None:
    hub = await make_hub(HubConfig(history_size=10))
    ids = [await hub.publish("t", str(n)) for n in range(15)]
    page = await hub.history("t", after=ids[7], limit=3)
    assert [e.id for e in page.events] == ids[8:11]
    assert str(page.latest) == ids[-1]
    assert str(page.earliest) == ids[4]
    with pytest.raises(HistoryGone) as gone:
        await hub.history("t", after=ids[2])
    assert str(gone.value.earliest) == ids[4]
    with pytest.raises(InvalidEventId):
        await hub.history("t", after="garbage")
    unknown = await hub.history("never-used")
    assert unknown.events == []
    # The in-process hub knows no such topic; a shared backend answers with an empty one.
    assert unknown.latest is None or unknown.latest.offset == 0


async def test_reserved_event_types_are_refused(make_hub: MakeHub) -> None:
    hub = await make_hub()
    with pytest.raises(ValueError, match="reserved"):
        await hub.publish("t", "x", event=RESET_EVENT)


async def test_wait_wakes_on_publish(make_hub: MakeHub) -> None:
    hub = await make_hub()
    sub = await hub.subscribe(["t"])
    # Opened without an id: the stream first says where it starts, at once.
    (position,) = Parser().feed(await asyncio.wait_for(sub.__anext__(), 1))
    assert (position.event, position.id) == ("sluiceway.position", hub.latest_id("t"))
    waiter = asyncio.create_task(sub.__anext__())
    await asyncio.sleep(0)
    assert not waiter.done()
    event_id = await hub.publish("t", "x")
    chunk = await asyncio.wait_for(waiter, 1)
    assert Parser().feed(chunk)[0].id == event_id


async def test_idle_subscribers_get_pings_from_the_sweeper(make_hub: MakeHub) -> None:
    hub = await make_hub(HubConfig(ping_interval=0.1))
    sub = await hub.subscribe(["t"])
    assert b"event: sluiceway.position\n" in await asyncio.wait_for(sub.__anext__(), 2)
    chunk = await asyncio.wait_for(sub.__anext__(), 2)
    assert chunk.startswith(b":")
    sub.release()
    await hub.aclose()


async def test_aclose_flushes_pending_events_then_ends_streams(make_hub: MakeHub) -> None:
    hub = await make_hub()
    sub = await hub.subscribe(["t"])
    await hub.publish("t", "last words")
    received: list[bytes] = []

    async def writer() -> None:
        async with sub:
            async for chunk in sub:
                received.append(chunk)

    task = asyncio.create_task(writer())
    await asyncio.sleep(0)
    await asyncio.wait_for(hub.aclose(), 2)
    await asyncio.wait_for(task, 1)
    events = Parser().feed(b"".join(received))
    assert [e.event for e in events] == ["sluiceway.position", "message"]
    assert events[1].data == "last words"
    assert hub.open_streams == 0
    with pytest.raises(HubClosed):
        await hub.publish("t", "too late")
    with pytest.raises(HubClosed):
        await hub.subscribe(["t"])


async def test_topic_count_is_bounded_and_idle_topics_are_forgotten(make_hub: MakeHub) -> None:
    hub = await make_hub(HubConfig(max_topics=3))
    subs = [await hub.subscribe([name]) for name in ("a", "b", "c")]
    with pytest.raises(TooManyTopics):
        await hub.subscribe(["d"])
    subs[0].release()  # "a" now has no subscriber and no history: it may be forgotten
    subs.append(await hub.subscribe(["d"]))
    assert sorted(hub.topic_names()) == ["b", "c", "d"]
    for sub in subs[1:]:
        sub.release()
    await hub.aclose()


async def test_brief_absence_does_not_change_a_quiet_topics_epoch(make_hub: MakeHub) -> None:
    hub = await make_hub()
    sub = await hub.subscribe(["quiet"])
    cursor = sub.cursor
    sub.release()
    hub._trim_topics(time.monotonic())  # a sweep while nobody follows the topic
    resumed = await hub.subscribe(["quiet"], last_event_id=cursor)
    assert drain(resumed) == []  # no spurious reset
    resumed.release()
    await hub.aclose()


async def test_a_long_replay_is_not_mistaken_for_a_slow_subscriber(make_hub: MakeHub) -> None:
    hub = await make_hub(HubConfig(buffer_events=5, history_size=100))
    first = await hub.publish("t", "0")
    for n in range(1, 50):
        await hub.publish("t", str(n))
    resumed = await hub.subscribe(["t"], last_event_id=first)
    assert [e.data for e in drain(resumed)] == [str(n) for n in range(1, 50)]
    assert resumed.close_reason is None


async def test_a_finished_topic_ends_its_streams_after_the_last_event(make_hub: MakeHub) -> None:
    # Finishing is this process's business: a process-local topic (jobs), on either backend.
    hub = await make_hub()
    live = await hub.subscribe(["sluiceway.job:1"])
    first = await hub.publish("sluiceway.job:1", "a")
    await hub.publish("sluiceway.job:1", "b")
    await hub.finish("sluiceway.job:1")
    received = b"".join([chunk async for chunk in live])
    assert b"data: a" in received and b"data: b" in received
    assert live.close_reason is CloseReason.COMPLETE
    # Later subscribers replay and end too; resuming mid-way replays only the rest.
    late = await hub.subscribe(["sluiceway.job:1"], last_event_id=first)
    second = first[:-1] + "2"
    assert [chunk async for chunk in late] == [f"data: b\nid: {second}\n\n".encode()]
    assert hub.latest_id("sluiceway.job:1") == second
    with pytest.raises(TopicFinished):
        await hub.publish("sluiceway.job:1", "c")
    live.release()
    late.release()
    await hub.aclose()


async def test_topic_bounds_replace_the_hub_wide_ones_for_matching_topics(
    make_hub: MakeHub,
) -> None:
    hub = await make_hub(
        HubConfig(history_size=2, topic_bounds=(TopicBounds("sluiceway.gen:*", history_size=5),))
    )
    for n in range(6):
        await hub.publish("sluiceway.gen:1", str(n))
        await hub.publish("news", str(n))
    assert len((await hub.history("sluiceway.gen:1")).events) == 5
    assert len((await hub.history("news")).events) == 2
    assert hub.earliest_id("sluiceway.gen:1").endswith("-1")  # offsets 2..6 kept: resume after 1
    await hub.aclose()


async def test_a_claim_is_refused_while_an_event_holding_it_is_retained(
    make_hub: MakeHub,
) -> None:
    hub = await make_hub(HubConfig(history_size=3))
    await hub.publish("claims", "a", claim="urn:a")
    head = await hub.publish("claims", "unclaimed")
    with pytest.raises(ClaimTaken):
        await hub.publish("claims", "a again", claim="urn:a")
    # "a" leaves history (3 kept; Redis trims whole stream nodes of 100 entries at a time).
    for n in range(250):
        await hub.publish("claims", str(n))
    later = await hub.publish("claims", "a, later", claim="urn:a")  # free again
    assert Position.parse(later).offset == Position.parse(head).offset + 251
    with pytest.raises(ClaimTaken):
        await hub.publish("claims", "a, again", claim="urn:a")
