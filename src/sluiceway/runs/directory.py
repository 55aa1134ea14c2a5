"""Where a run can be found from any process.

A run goes on in the process that started it. With the Redis backend its topic is shared, so
any process can replay and follow it; this directory shares the rest:

* a description of each run (its owner, creation time, meta, what its wire formats need, its
  state once it ended), so another process can answer for it (:class:`RemoteRun`);
* cancel requests, published to every process, acted on by the one that runs it;
* which runs are followed somewhere: a reader in another process keeps a run from being
  abandoned;
* the Vercel AI SDK's chat → run index.

In one process (:class:`RunDirectory`) all of this is a no-op: a run is found where it goes;
:mod:`sluiceway.runs.redis_directory` shares it through Redis.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sluiceway.runs.items import TERMINAL_EVENTS

if TYPE_CHECKING:
    from sluiceway.runs.run import Run

logger = logging.getLogger("sluiceway.runs")


class DirectoryUnavailable(ConnectionError):
    """The shared directory cannot be reached now (a 503 to the client)."""


@dataclass
class RemoteRun:
    """A run that goes (or went) on in another process, as this one can serve it."""

    id: str
    topic: str
    created: float
    state: str
    finish_reason: str | None = None
    background: bool = False
    annotations: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    owner: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    #: The events that end its stream (a job's are not a run's: see
    #: :attr:`sluiceway.runs.Run.terminal_events`).
    terminal_events: frozenset[str] = TERMINAL_EVENTS

    def __post_init__(self) -> None:
        if self.state != "running":
            self.done.set()

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def model(self) -> str:
        return str(self.meta.get("model", ""))

    @property
    def provider(self) -> str:
        return str(self.meta.get("provider", ""))


class RunDirectory:
    """The in-process directory: runs are only found where they go on."""

    shared = False

    async def start(self, on_cancel: Callable[[str], object]) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def register(self, run: Run) -> None:
        return None

    async def ended(self, run: Run) -> None:
        return None

    async def lookup(self, run_id: str) -> RemoteRun | None:
        return None

    async def request_cancel(self, run_id: str) -> None:
        return None

    async def cancel_requested(self, run_ids: list[str]) -> set[str]:
        """Which of ``run_ids`` (this process's) another process asked to cancel: the durable
        record behind the cancel notification, which a reconnecting listener can miss."""
        return set()

    async def mark_watched(self, run_ids: list[str]) -> None:
        return None

    async def watched(self, run_ids: list[str]) -> set[str]:
        return set()

    async def set_chat(self, chat_id: str, run_id: str | None) -> None:
        return None

    async def chat(self, chat_id: str) -> str | None:
        return None
