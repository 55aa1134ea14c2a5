"""Sans-I/O reconnection policy: what a response means, how long to wait, when to give up.

The async and the sync :class:`~sluiceway.client.EventSource` share this; they only add I/O.
"""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from sluiceway.client.errors import ReconnectExhausted
from sluiceway.sse import Parser

#: Statuses worth another try: the server (or a proxy) is overloaded, restarting or timed out.
#: Any other non-2xx (401, 403, 404, ...) will not change by asking again.
RETRYABLE_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600))

#: The smallest step of exponential backoff, so that ``retry: 0`` cannot become a retry storm.
MIN_BACKOFF_UNIT = 0.1


class Verdict(enum.Enum):
    """What to do with a response, decided from its status and content type alone."""

    OPEN = "open"  # 2xx text/event-stream: read events
    STOP = "stop"  # 204: the server says "do not reconnect"
    RETRY = "retry"  # 408, 429, 5xx: try again after a delay
    FAIL = "fail"  # any other status: raise HTTPStatusError
    NOT_SSE = "not_sse"  # 2xx but not text/event-stream: raise ContentTypeError


def classify(status: int, content_type: str) -> Verdict:
    """>>> classify(200, "text/event-stream; charset=utf-8"), classify(503, "")
    (<Verdict.OPEN: 'open'>, <Verdict.RETRY: 'retry'>)
    """
    if status == 204:
        return Verdict.STOP
    if 200 <= status < 300:
        media_type = content_type.split(";", 1)[0].strip().lower()
        return Verdict.OPEN if media_type == "text/event-stream" else Verdict.NOT_SSE
    if status in RETRYABLE_STATUSES:
        return Verdict.RETRY
    return Verdict.FAIL


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date).

    >>> parse_retry_after("120"), parse_retry_after("soon")
    (120.0, None)
    """
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass(frozen=True, slots=True)
class RetryInfo:
    """Passed to ``on_retry`` before each wait: why the client reconnects and how long it waits."""

    #: Consecutive failed attempts so far; 0 when a working stream simply ended.
    failures: int
    delay: float
    reason: str
    last_event_id: str


class ReconnectState:
    """The state an event source keeps across connections.

    Delays: after a working stream ends, wait the reconnection time (the server's ``retry:``,
    else ``retry_delay``), as the spec asks.  After ``n`` consecutive failures, wait that time
    plus full jitter over an exponential step: ``retry + uniform(0, min(max_backoff, unit * 2 **
    (n - 1)))``.  The server's ``retry:`` is thus a floor, and clients that lost the same server
    at the same moment spread out instead of returning together.  A ``Retry-After`` is a floor
    too.  Reaching ``max_attempts`` consecutive failures, or failing for longer than
    ``max_elapsed`` seconds, raises :class:`ReconnectExhausted`.
    """

    def __init__(
        self,
        *,
        last_event_id: str,
        retry_delay: float,
        max_backoff: float,
        max_attempts: int | None,
        max_elapsed: float | None,
        clock: Callable[[], float] = time.monotonic,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self.last_event_id = last_event_id
        self.retry_delay = retry_delay
        self.max_backoff = max_backoff
        self.max_attempts = max_attempts
        self.max_elapsed = max_elapsed
        self.failures = 0
        #: Connections made after the first (successful or not).
        self.reconnects = 0
        self._failing_since: float | None = None
        self._clock = clock
        self._uniform = uniform

    def request_headers(self, extra: Mapping[str, str]) -> dict[str, str]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-store", **extra}
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        return headers

    def opened(self) -> None:
        """A stream was established: the backoff starts over."""
        self.failures = 0
        self._failing_since = None

    def new_parser(self) -> Parser:
        return Parser(self.last_event_id)

    def absorb(self, parser: Parser) -> None:
        """Take the last event id and ``retry:`` the parser has seen so far."""
        self.last_event_id = parser.last_event_id
        if parser.retry is not None:
            self.retry_delay = parser.retry / 1000

    def ended(self) -> RetryInfo:
        """A working stream ended cleanly: reconnect after the reconnection time."""
        return self._schedule(self.retry_delay, "the server ended the stream")

    def failed(self, reason: str, retry_after: float | None = None) -> RetryInfo:
        """An attempt failed (network error, timeout, retryable status): back off, or give up."""
        now = self._clock()
        self.failures += 1
        if self._failing_since is None:
            self._failing_since = now
        elapsed = now - self._failing_since
        if self.max_attempts is not None and self.failures >= self.max_attempts:
            raise ReconnectExhausted(self.failures, elapsed, reason)
        unit = max(self.retry_delay, MIN_BACKOFF_UNIT)
        step = min(self.max_backoff, unit * 2 ** (self.failures - 1))
        delay = self.retry_delay + self._uniform(0.0, step)
        if retry_after is not None:
            delay = max(delay, retry_after)
        if self.max_elapsed is not None and elapsed + delay > self.max_elapsed:
            raise ReconnectExhausted(self.failures, elapsed, reason)
        return self._schedule(delay, reason)

    def _schedule(self, delay: float, reason: str) -> RetryInfo:
        self.reconnects += 1
        return RetryInfo(self.failures, delay, reason, self.last_event_id)
