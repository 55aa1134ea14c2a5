"""The contract between the hub and a shared store of history (the Redis backend).

Without a backend the hub's topic logs are the history.  With one, the store is the history
and assigns ids, and each process keeps a *mirror* of the topics its clients follow: the same
log, filled from the store's snapshot and then from its live notifications, so that fan-out,
resume and the native stream path stay local and identical.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Publication:
    """One event as stored: its topic, position and content."""

    topic: str
    epoch: str
    offset: int
    event: str | None
    data: str
    #: Unix time when it was published.
    published_at: float
    #: What it was published with (string to string); empty without.
    tags: Mapping[str, str] = field(default_factory=dict)


#: The event type of the notification that a topic was finished (reserved: no publisher's).
FINISH_NOTICE = "sluiceway.finish"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A topic's history as the store holds it: its epoch, its newest offset (0 when empty)
    and the retained events after ``after`` (oldest first); whether it is finished."""

    epoch: str
    head: int
    events: Sequence[Publication]
    finished: bool = False


@dataclass(frozen=True, slots=True)
class Head:
    """Where a topic stands in the store: epoch (None when the store lost it), newest offset,
    finished."""

    epoch: str | None
    head: int
    finished: bool = False


class Backend(Protocol):
    """A shared history store with live notifications (see :mod:`sluiceway.hub.redis`)."""

    #: False while the store is unreachable (publishing then fails; ``/healthz`` says so).
    healthy: bool

    async def start(
        self,
        on_publication: Callable[[Publication], None],
        on_reconnect: Callable[[], None],
        on_finish: Callable[[str, str, int], None],
    ) -> None:
        """Connect; then call ``on_publication`` for each live notification of a watched topic
        (in the store's order), ``on_finish(topic, epoch, head)`` when one is finished, and
        ``on_reconnect`` after the notification channel was lost and re-established
        (notifications may have been missed)."""

    async def publish(
        self,
        topic: str,
        data: str,
        event: str | None,
        bounds: tuple[int, float] | None = None,
        claim: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> Publication:
        """Append atomically: assign the position, store (with ``tags``), trim to ``bounds``
        (history size, history TTL in seconds; the backend's own when None), and notify, in
        one step.
        Raises :class:`ClaimTaken` when ``claim`` is given and a retained event of the topic
        was published with it, :class:`TopicFinished` once the topic is finished."""

    async def publish_many(
        self,
        topic: str,
        events: Sequence[tuple[str | None, str]],
        bounds: tuple[int, float] | None = None,
    ) -> list[Publication]:
        """Append ``events`` (event type, data) at consecutive offsets, atomically, in one
        round trip (a token stream's pending tokens). Raises :class:`TopicFinished`."""

    async def finish(self, topic: str) -> None:
        """Mark ``topic`` finished (publishing is refused from then on) and notify."""

    async def watch(self, topic: str) -> None:
        """Start receiving live notifications of ``topic``."""

    async def unwatch(self, topic: str) -> None: ...

    async def snapshot(self, topic: str, after: int | None, limit: int) -> Snapshot:
        """The epoch and head of ``topic`` (creating its epoch if it has none) and at most
        ``limit`` retained events after offset ``after`` (the newest ``limit`` when None)."""

    async def heads(self, topics: Sequence[str]) -> dict[str, Head]:
        """Where each topic stands in the store."""

    async def fork(self, topic: str, epoch: str, seen_head: int | None) -> bool:
        """A new epoch for ``topic`` if it still has ``epoch`` and, given ``seen_head``, a
        head below it (the store lost events a process saw; with None: its events at some
        offsets are not the ones a process saw).  True if this call forked it."""

    async def aclose(self) -> None: ...
