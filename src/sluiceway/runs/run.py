"""One run: a producer's items published into the hub, detached from any request.

A :class:`Run` takes any async iterator (the user's own generator, a provider's stream) and
consumes it in a task of its own, publishing each item (see :mod:`sluiceway.runs.items`) into
the run's internal topic, ``sluiceway.<family>:<id>``. Clients follow that topic, resume it
by ``Last-Event-ID``, and come and go; the run goes on until its producer ends, fails, is
cancelled, is abandoned, hits a limit, or the server shuts down — and in every case its
stream ends with an explicit last event: ``done`` ``{"state", ...}`` or ``error``.

Stopping a run cancels its task: the producer is closed at once (``aclose()``), so its
``finally`` blocks run and an SDK's HTTP connection to the upstream is closed with it.

Runs are made by :class:`~sluiceway.runs.Runs`, which bounds, finds, follows and forgets them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from enum import StrEnum
from typing import Any, ClassVar, Protocol

import orjson

from sluiceway.hub import Hub, HubError
from sluiceway.llm.chunks import UpstreamError
from sluiceway.runs.directory import RunDirectory
from sluiceway.runs.items import TERMINAL_EVENTS, ItemEncoder, RunError, Stored
from sluiceway.runs.limits import RunLimits

#: Queued events past which the producer waits for the backend (bounds the queue's memory).
MAX_PENDING = 1024

logger = logging.getLogger("sluiceway.runs")

__all__ = ["Run", "RunObserver", "RunState", "new_run_id", "run_topic"]


class RunState(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"  # the producer ended
    FAILED = "failed"  # the producer raised: an ``error`` event
    CANCELLED = "cancelled"  # someone cancelled it
    ABANDONED = "abandoned"  # nobody followed it for ``abandon_after`` seconds
    TIME_LIMIT = "time_limit"  # ``max_duration``
    LIMIT = "limit"  # ``max_items`` or ``max_bytes``
    SHUTDOWN = "shutdown"  # the server stopped


def new_run_id(family: str) -> str:
    """A run's id: its family and 96 random bits (an id is hard to guess, not a secret).

    >>> new_run_id("run").startswith("run_")
    True
    """
    return f"{family}_{secrets.token_hex(12)}"


def run_topic(family: str, run_id: str) -> str:
    """The internal hub topic of a run (unreachable through the topic API).

    >>> run_topic("gen", "gen_1")
    'sluiceway.gen:gen_1'
    """
    return f"sluiceway.{family}:{run_id}"


class RunObserver(Protocol):
    """Told what happens to runs (metrics: the LLM faces count tokens and time)."""

    def started(self, run: Run) -> None: ...

    def first_item(self, run: Run, delay: float) -> None: ...

    def item(self, run: Run, item: Any, now: float) -> None: ...

    def ended(self, run: Run) -> None: ...


class Run:
    """A producer's items, published to ``topic`` as they come (see the module doc).

    ``owner``: who may follow and cancel it (see :func:`~sluiceway.auth.resources.owner_of`
    for the server's; any string in an application). ``meta``: published in the ``start``
    event and the description (a generation's ``model`` and ``provider``). ``annotations``:
    what a wire format needs to describe it again, from any process (JSON). ``background``:
    it runs to its end even when nobody follows it.
    """

    #: The events that end its stream: a reader stops at the first of them.
    terminal_events: ClassVar[frozenset[str]] = TERMINAL_EVENTS

    def __init__(
        self,
        producer: AsyncIterator[Any],
        hub: Hub,
        *,
        family: str = "run",
        limits: RunLimits | None = None,
        owner: str | None = None,
        background: bool = False,
        meta: Mapping[str, Any] | None = None,
        annotations: Mapping[str, Any] | None = None,
        partial_json: bool = False,
        directory: RunDirectory | None = None,
        observer: RunObserver | None = None,
    ) -> None:
        self.id = new_run_id(family)
        self.family = family
        self.topic = run_topic(family, self.id)
        self.producer = producer
        self.hub = hub
        self.limits = limits or RunLimits()
        self.owner = owner
        self.background = background
        self.meta: dict[str, Any] = dict(meta or {})
        self.annotations: dict[str, Any] = dict(annotations or {})
        self.directory = directory or RunDirectory()
        self.observer = observer
        self.encoder = ItemEncoder(partial_json=partial_json)
        self.created = time.time()
        self.started_at = time.monotonic()
        self.first_item_at: float | None = None
        self.finished_at: float | None = None
        self.state = RunState.RUNNING
        #: ``(code, message)`` of a failed run.
        self.error: tuple[str, str] | None = None
        #: The error before the first item, as raised (for an HTTP answer).
        self.failure: BaseException | None = None
        self.items = 0
        self.bytes = 0
        #: Encoded events not yet stored (a shared topic): stored by ``_flusher``, in batches.
        self._pending: list[Stored] = []
        self._flusher: asyncio.Task[None] | None = None
        #: Resolved when the first item was published or the run ended before one.
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        #: Set once the last event is published.
        self.done = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self._stop_as: RunState | None = None
        self._entered = False

    # -- what others see ---------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.state is RunState.RUNNING

    @property
    def finish_reason(self) -> str | None:
        if self.running:
            return None
        return self.summary_reason

    @property
    def summary_reason(self) -> str:
        if self.state is not RunState.COMPLETED:
            return self.state.value
        return self.encoder.finish_reason or "stop"

    @property
    def model(self) -> str:
        return str(self.meta.get("model", ""))

    def describe(self) -> dict[str, Any]:
        """A JSON summary (``GET .../{id}``): state, owner-free fields, what it produced."""
        description: dict[str, Any] = {
            "id": self.id,
            "state": self.state.value,
            "created": int(self.created),
            **self.meta,
            "finish_reason": self.finish_reason,
            "items": self.items,
            "followers": self.hub.subscriber_count(self.topic),
        }
        encoder = self.encoder
        if encoder.steps:
            summary = encoder.summary(self.state.value)
            description["usage"] = summary["usage"]
            description["text"] = encoder.text
        if self.error is not None:
            description["error"] = {"error": self.error[0], "message": self.error[1]}
        return description

    # -- its life ----------------------------------------------------------------------------

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run(), name=self.id)

    def stop(self, state: RunState) -> bool:
        """End it as ``state`` (cancelled, abandoned, shutdown...): the producer is closed at
        once. False when it had already ended."""
        if not self.running or self.task is None:
            return False
        if self._stop_as is None:
            self._stop_as = state
            if self._entered:
                self.task.cancel()
            # Else _run has not begun (a task cancelled then would never run, and the run
            # would never end): it sees _stop_as as it begins.
        return True

    async def _run(self) -> None:
        self._entered = True
        if self.observer is not None:
            self.observer.started(self)
        limits = self.limits
        producer = self.producer
        try:
            # Described before its first event, so that any process can answer for it.
            await self.directory.register(self)
            await self._publish(self._opening())
            if self._stop_as is not None:
                raise asyncio.CancelledError  # stopped before it began
            async with asyncio.timeout(limits.first_item_timeout) as deadline:
                await self._consume(deadline)
            if self.state is RunState.RUNNING:
                self.state = RunState.COMPLETED
        except TimeoutError:
            if self.first_item_at is None:
                waited = limits.first_item_timeout
                self._fail(UpstreamError("timeout", f"nothing came in {waited:g} s"))
            else:
                self.state = RunState.TIME_LIMIT
        except asyncio.CancelledError:
            self.state = self._stop_as or RunState.CANCELLED
        except Exception as exc:  # the producer's: it ends the run, never the server
            self._fail(exc)
        finally:
            aclose = getattr(producer, "aclose", None)
            if aclose is not None:
                # The producer's finally runs now; an SDK's connection is closed with it.
                with contextlib.suppress(Exception):
                    await aclose()
        await self._finish()

    async def _consume(self, deadline: asyncio.Timeout) -> None:
        """Publish the producer's items until it ends or a limit is reached (``deadline``:
        ``first_item_timeout``, moved to ``max_duration`` at the first item). A run of another
        kind does its own work here (a job runs its kind's function)."""
        limits = self.limits
        loop = asyncio.get_running_loop()
        async for item in self.producer:
            now = time.monotonic()
            if self.first_item_at is None:
                self.first_item_at = now
                left = self.started_at + limits.max_duration - now
                deadline.reschedule(loop.time() + max(0.0, left))
                if self.observer is not None:
                    self.observer.first_item(self, now - self.started_at)
            events = self.encoder.encode(item, now)
            self.items += 1
            if self.observer is not None:
                self.observer.item(self, item, now)
            if events:
                await self._publish_soon(events)
            if not self.opened.done():
                self.opened.set_result(None)
            if self._over_limits():
                self.state = RunState.LIMIT
                break

    def _over_limits(self) -> bool:
        limits = self.limits
        return (limits.max_items is not None and self.items >= limits.max_items) or (
            limits.max_bytes is not None and self.bytes >= limits.max_bytes
        )

    def _fail(self, exc: BaseException) -> None:
        self.state = RunState.FAILED
        if isinstance(exc, RunError):
            self.error = (exc.code, exc.message)
        elif isinstance(exc, UpstreamError):
            self.error = (exc.kind, exc.message)
        else:
            logger.error("run %s: its producer failed", self.id, exc_info=exc)
            self.error = ("producer_failed", "the run's producer failed")
        if not self.opened.done():
            self.failure = exc
            self.opened.set_result(None)

    async def _finish(self) -> None:
        await self._flushed()
        self.finished_at = time.monotonic()
        await self.directory.ended(self)  # before the last event: a reader then sees both
        await self._publish(self._closing())
        if not self.opened.done():  # ended before its first item: not an error in itself
            self.opened.set_result(None)
        with contextlib.suppress(HubError):
            await self.hub.finish(self.topic)
        if self.observer is not None:
            self.observer.ended(self)
        self.done.set()

    def _opening(self) -> list[Stored]:
        """The events before the first item: ``start``."""
        return [("start", _start(self))]

    def _closing(self) -> list[Stored]:
        """The last events, ending with one of :attr:`terminal_events`: ``error``, or the
        last ``partial`` and ``done``."""
        if self.error is not None:
            code, message = self.error
            return [("error", _json({"error": code, "message": message}))]
        return [*self.encoder.final(), ("done", _json(self._summary()))]

    def _summary(self) -> dict[str, Any]:
        assert self.finished_at is not None
        first = self.first_item_at
        extra: dict[str, Any] = {
            "duration_ms": round((self.finished_at - self.started_at) * 1000, 1),
            "items": self.items,
        }
        if self.encoder.steps:
            extra["ttft_ms"] = round((first - self.started_at) * 1000, 1) if first else None
            extra["tokens_per_s"] = self.tokens_per_second()
        return self.encoder.summary(self.state.value, **extra)

    def tokens_per_second(self) -> float | None:
        if self.first_item_at is None or self.finished_at is None:
            return None
        elapsed = self.finished_at - self.first_item_at
        usage = self.encoder.usage
        tokens = (usage and usage.completion_tokens) or self.encoder.output_tokens
        return round(tokens / elapsed, 1) if elapsed > 0 and tokens > 1 else None

    async def _publish(self, events: list[Stored]) -> None:
        for _event, data in events:
            self.bytes += len(data)
        try:
            await self.hub.publish_many(self.topic, events)
        except HubError:  # shutting down, or a backend gone: the run goes on regardless
            logger.debug("run %s: could not publish %d event(s)", self.id, len(events))

    async def _publish_soon(self, events: list[Stored]) -> None:
        """The producer's events: stored at once in-process; with a shared backend, queued
        for the flusher, so that the producer never waits for a round trip per token and the
        tokens that arrive meanwhile go in one batch (one round trip)."""
        if not self.hub.is_shared(self.topic):
            await self._publish(events)
            return
        for _event, data in events:
            self.bytes += len(data)  # counted now: the limits apply to what was produced
        self._pending.extend(events)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        if len(self._pending) >= MAX_PENDING:
            await self._flushed()  # the backend is slower than the producer: wait for it

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await self.hub.publish_many(self.topic, batch)
            except HubError:
                logger.debug("run %s: could not publish %d event(s)", self.id, len(batch))

    async def _flushed(self) -> None:
        """Until every queued event is stored (before the closing events: order)."""
        if self._flusher is not None:
            await asyncio.shield(self._flusher)


def _start(run: Run) -> str:
    return _json({"id": run.id, "created": int(run.created), **run.meta})


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()
