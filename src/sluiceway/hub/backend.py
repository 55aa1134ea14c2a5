"""The contract between the hub and a shared store of history (the Redis backend).

Without a backend the hub's topic logs are the history.  With one, the store is the history
and assigns ids, and each process keeps a *mirror* of the topics its clients follow: the same
log, filled from the store's snapshot and then from its live notifications, so that fan-out,
resume and the native stream path stay local and identical.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A topic's history as the store holds it: its epoch, its newest offset (0 when empty)
    and the retained events after ``after`` (oldest first)."""

    epoch: str
    head: int
    events: Sequence[Publication]


class Backend(Protocol):
    """A shared history store with live notifications (see :mod:`sluiceway.hub.redis`)."""

    #: False while the store is unreachable (publishing then fails; ``/healthz`` says so).
    healthy: bool

    async def start(
        self,
        on_publication: Callable[[Publication], None],
        on_reconnect: Callable[[], None],
    ) -> None:
        """Connect; then call ``on_publication`` for each live notification of a watched topic
        (in the store's order) and ``on_reconnect`` after the notification channel was lost
        and re-established (notifications may have been missed)."""

    async def publish(
        self,
        topic: str,
        data: str,
        event: str | None,
        bounds: tuple[int, float] | None = None,
    ) -> Publication:
        """Append atomically: assign the position, store, trim to ``bounds`` (history size,
        history TTL in seconds; the backend's own when None), and notify, in one step."""

    async def watch(self, topic: str) -> None:
        """Start receiving live notifications of ``topic``."""

    async def unwatch(self, topic: str) -> None: ...

    async def snapshot(self, topic: str, after: int | None, limit: int) -> Snapshot:
        """The epoch and head of ``topic`` (creating its epoch if it has none) and at most
        ``limit`` retained events after offset ``after`` (the newest ``limit`` when None)."""

    async def heads(self, topics: Sequence[str]) -> dict[str, tuple[str | None, int]]:
        """(epoch or None when the store lost it, head offset) of each topic."""

    async def fork(self, topic: str, epoch: str, seen_head: int | None) -> bool:
        """A new epoch for ``topic`` if it still has ``epoch`` and, given ``seen_head``, a
        head below it (the store lost events a process saw; with None: its events at some
        offsets are not the ones a process saw).  True if this call forked it."""

    async def aclose(self) -> None: ...
