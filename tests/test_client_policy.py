"""The client's sans-I/O policy: response verdicts, Retry-After, delays, giving up."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sluiceway.client import ReconnectExhausted, ReconnectState, Verdict, classify
from sluiceway.client.policy import MIN_BACKOFF_UNIT, parse_retry_after
from sluiceway.sse import Parser


@pytest.mark.parametrize(
    ("status", "content_type", "verdict"),
    [
        (200, "text/event-stream", Verdict.OPEN),
        (200, "Text/Event-Stream; charset=utf-8", Verdict.OPEN),
        (200, "application/json", Verdict.NOT_SSE),
        (200, "", Verdict.NOT_SSE),
        (204, "", Verdict.STOP),
        (401, "application/json", Verdict.FAIL),
        (404, "text/event-stream", Verdict.FAIL),
        (408, "", Verdict.RETRY),
        (429, "", Verdict.RETRY),
        (500, "", Verdict.RETRY),
        (503, "", Verdict.RETRY),
        (302, "", Verdict.FAIL),
    ],
)
def test_classify(status: int, content_type: str, verdict: Verdict) -> None:
    assert classify(status, content_type) is verdict


def test_retry_after_seconds_and_dates() -> None:
    now = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Mon, 23 Nov 2026 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("Mon, 23 Nov 2026 11:00:00 GMT", now) == 0.0  # in the past
    assert parse_retry_after("tomorrow") is None
    assert parse_retry_after("") is None
    assert parse_retry_after(None) is None


def _state(**kwargs: object) -> tuple[ReconnectState, list[float]]:
    now = [0.0]
    options: dict = {
        "last_event_id": "",
        "retry_delay": 1.0,
        "max_backoff": 30.0,
        "max_attempts": None,
        "max_elapsed": None,
    }
    options.update(kwargs)
    # uniform() returns the top of its range: the longest delay the policy allows.
    state = ReconnectState(**options, clock=lambda: now[0], uniform=lambda low, high: high)
    return state, now


def test_a_clean_end_waits_exactly_the_reconnection_time() -> None:
    state, _ = _state(retry_delay=2.5)
    assert state.ended().delay == 2.5
    assert state.failures == 0


def test_failures_back_off_exponentially_above_the_retry_floor_up_to_the_cap() -> None:
    state, _ = _state(retry_delay=1.0, max_backoff=10.0)
    delays = [state.failed("boom").delay for _ in range(6)]
    assert delays == [2.0, 3.0, 5.0, 9.0, 11.0, 11.0]  # 1 + min(10, 1 * 2**(n-1))
    state.opened()  # a successful connection starts the backoff over
    assert state.failed("boom").delay == 2.0


def test_full_jitter_spreads_delays_between_floor_and_step() -> None:
    state = ReconnectState(
        last_event_id="", retry_delay=1.0, max_backoff=30.0, max_attempts=None, max_elapsed=None
    )
    delays = []
    for _ in range(200):
        state.opened()
        state.failed("a")
        delays.append(state.failed("b").delay)  # second failure: 1 + uniform(0, 2)
    assert all(1.0 <= d <= 3.0 for d in delays)
    assert max(delays) - min(delays) > 1.0  # spread, not a constant


def test_retry_zero_still_backs_off_on_failures() -> None:
    state, _ = _state(retry_delay=0.0)
    assert state.ended().delay == 0.0
    assert state.failed("x").delay == MIN_BACKOFF_UNIT


def test_retry_after_is_a_floor() -> None:
    state, _ = _state(retry_delay=1.0)
    assert state.failed("429", retry_after=20.0).delay == 20.0
    assert state.failed("429", retry_after=0.5).delay == 3.0


def test_max_attempts_counts_consecutive_failures() -> None:
    state, _ = _state(max_attempts=3)
    state.failed("a")
    state.failed("b")
    with pytest.raises(ReconnectExhausted, match="3 failed attempt") as caught:
        state.failed("c")
    assert caught.value.last_failure == "c"


def test_max_elapsed_counts_time_since_the_first_failure() -> None:
    state, now = _state(retry_delay=1.0, max_elapsed=10.0)
    state.failed("a")  # at t=0, waits 2
    now[0] = 8.0
    with pytest.raises(ReconnectExhausted):
        state.failed("b")  # 8 s failing + a 3 s wait would pass 10 s


def test_the_server_retry_and_last_event_id_come_from_the_parser() -> None:
    state, _ = _state(last_event_id="7")
    parser = state.new_parser()
    events = parser.feed(b"retry: 250\ndata: x\n\nid: 9\n\n")
    assert events[0].id == "7"  # the previous connection's id is still in effect
    state.absorb(parser)
    assert (state.retry_delay, state.last_event_id) == (0.25, "9")
    assert state.request_headers({"X": "1"}) == {
        "Accept": "text/event-stream",
        "Cache-Control": "no-store",
        "X": "1",
        "Last-Event-ID": "9",
    }


def test_parser_carries_the_initial_last_event_id() -> None:
    parser = Parser("a-5")
    assert parser.last_event_id == "a-5"
    assert parser.feed(b"data: x\n\n")[0].id == "a-5"
