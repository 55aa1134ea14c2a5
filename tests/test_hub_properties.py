"""Property test of the hub's promise: resume is exact, or it is an explicit reset.

Hypothesis drives random programs of publishes, subscriptions (live, resumed from any mix of
positions readers have seen, or from ids the hub never gave out), reads and closes, over three
topics with a short history. After every read, each reader must have received, per topic,
exactly the events after its starting position, in order, with no gap and no duplicate. A
reset event must come exactly when the model says a position is gone, and only live events
follow it. A reader that falls further behind than history reaches is closed (overflow) and
resumes from its last id, as a client would, and the same rules hold for the new stream.
"""

from __future__ import annotations

import collections

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sluiceway.hub import RESET_EVENT, CloseReason, Hub, HubConfig, Subscription
from sluiceway.ids import parse_cursor
from sluiceway.sse import Parser

TOPICS = ("a", "b", "c")
HISTORY = 4

publish_op = st.tuples(st.just("publish"), st.sampled_from(TOPICS))
subscribe_op = st.tuples(
    st.just("subscribe"),
    st.one_of(
        st.sampled_from(TOPICS).map(lambda topic: (topic,)),
        st.sets(st.sampled_from(TOPICS), min_size=1).map(lambda s: tuple(sorted(s))),
    ),
    # An index into the positions readers have seen (small: the oldest, often trimmed since).
    st.one_of(st.none(), st.integers(0, 3), st.just("foreign")),
)
read_op = st.tuples(st.just("read"), st.integers(0, 20))
close_op = st.tuples(st.just("close"), st.integers(0, 20))
programs = st.lists(
    st.one_of(publish_op, publish_op, publish_op, subscribe_op, read_op, close_op),
    min_size=10,
    max_size=80,
)

#: What the programs exercised, to show that they reach every case (see the last test).
coverage: collections.Counter[str] = collections.Counter()


class Model:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.heads = dict.fromkeys(TOPICS, 0)
        self.seen: dict[str, list[str]] = {t: [] for t in TOPICS}  # positions readers saw

    def resumable(self, topic: str, epoch: str, offset: int) -> bool:
        head = self.heads[topic]
        same_history = epoch == self.hub._table.get(topic).epoch
        return same_history and max(0, head - HISTORY) <= offset <= head


class Reader:
    """A client: its current subscription and what the model expects from it next."""

    def __init__(self, model: Model, topics: tuple[str, ...], cursor: str | None) -> None:
        self.model = model
        self.topics = topics
        self.next_offset: dict[str, int] = {}
        self.expect_reset: set[str] = set()
        self.sub = self._open(cursor)

    def _open(self, cursor: str | None) -> Subscription:
        model = self.model
        self.parser = Parser()
        self.last_id: str | None = None
        self.expect_reset = set()
        if cursor is None:
            coverage["live"] += 1
            sub = model.hub.subscribe_nowait(self.topics)
            self.next_offset = {t: model.heads[t] + 1 for t in self.topics}
            return sub
        sub = model.hub.subscribe_nowait(self.topics, cursor)
        positions = parse_cursor(cursor, len(self.topics))
        for topic, position in zip(self.topics, positions, strict=True):
            if model.resumable(topic, position.epoch, position.offset):
                coverage["exact resume"] += 1
                self.next_offset[topic] = position.offset + 1
            else:
                foreign = position.epoch != model.hub._table.get(topic).epoch
                coverage["reset, unknown epoch" if foreign else "reset, trimmed"] += 1
                self.expect_reset.add(topic)
                self.next_offset[topic] = model.heads[topic] + 1
        return sub

    def read(self) -> None:
        heads = self.model.heads
        chunks = []
        while (chunk := self.sub.next_chunk()) is not None:
            chunks.append(chunk)
        for event in self.parser.feed(b"".join(chunks)):
            self.last_id = event.id
            if event.event == RESET_EVENT:
                lost = {t["topic"] for t in orjson.loads(event.data)["topics"]}
                assert lost == self.expect_reset, "a reset must name exactly the lost topics"
                self.expect_reset = set()
                continue
            assert not self.expect_reset, "the reset must come before any event"
            topic, offset = event.data.split(":")
            assert int(offset) == self.next_offset[topic], "gap or duplicate"
            self.next_offset[topic] += 1
        assert not self.expect_reset
        if self.sub.close_reason is CloseReason.OVERFLOW:
            # Behind further than history reaches: the stream ended; resume like a client.
            coverage["overflow"] += 1
            assert any(heads[t] - self.next_offset[t] + 1 > HISTORY for t in self.topics)
            cursor = self.last_id or self.sub.cursor
            self.sub.release()
            self.sub = self._open(cursor)
            self.read()
            return
        for topic in self.topics:  # everything published so far has arrived
            assert self.next_offset[topic] == heads[topic] + 1, "events missing"
        current = self.last_id or self.sub.cursor
        positions = parse_cursor(current, len(self.topics))
        assert [p.offset for p in positions] == [heads[t] for t in self.topics]
        for topic, position in zip(self.topics, positions, strict=True):
            self.model.seen[topic].append(str(position))


# Derandomized: the same programs on every run, so CI is stable and the coverage check below
# is deterministic.
@settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(program=programs)
async def test_resume_is_exact_or_an_explicit_reset(program: list[tuple[object, ...]]) -> None:
    hub = Hub(HubConfig(history_size=HISTORY, buffer_events=10_000))
    model = Model(hub)
    readers: list[Reader] = []
    for op in program:
        if op[0] == "publish":
            topic = str(op[1])
            model.heads[topic] += 1
            await hub.publish(topic, f"{topic}:{model.heads[topic]}")
        elif op[0] == "subscribe":
            topics: tuple[str, ...] = op[1]  # type: ignore[assignment]
            choice = op[2]
            cursor: str | None = None
            if choice == "foreign":  # well-formed, but not from this hub
                cursor = ",".join("0badcafe-1" for _ in topics)
            elif isinstance(choice, int) and all(model.seen[t] for t in topics):
                # Any mix of positions seen is a valid cursor: one position per topic.
                cursor = ",".join(model.seen[t][choice % len(model.seen[t])] for t in topics)
            reader = Reader(model, topics, cursor)
            readers.append(reader)
            reader.read()
        elif readers:
            reader = readers[int(op[1]) % len(readers)]  # type: ignore[call-overload]
            if op[0] == "read":
                reader.read()
            else:
                reader.sub.release()
                readers.remove(reader)
    for reader in readers:
        reader.read()
        reader.sub.release()
    await hub.aclose()


def test_the_programs_reach_every_case() -> None:
    """Runs after the property test (file order): it must have exercised every kind of
    resume, or it proves little."""
    cases = ("live", "exact resume", "reset, trimmed", "reset, unknown epoch", "overflow")
    for case in cases:
        assert coverage[case] >= 5, dict(coverage)
