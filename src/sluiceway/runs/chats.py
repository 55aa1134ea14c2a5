"""Which run answers each chat now: for clients that name a chat, not a run.

The Vercel AI SDK's ``useChat({ resume: true })`` reconnects with ``GET {api}/{chatId}/stream``:
the server must know the chat's latest run. :class:`Chats` keeps that index for one family of
runs, in this process (bounded) and, with a shared directory, in Redis for every process.
"""

from __future__ import annotations

import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from sluiceway.runs.directory import DirectoryUnavailable, RunDirectory

logger = logging.getLogger("sluiceway.runs")

__all__ = ["ChatIndex", "Chats"]

#: Chats remembered per family in one process (their latest run each).
CHAT_CAPACITY = 4096


class ChatIndex:
    """The latest run started for each chat id, in one process.

    Bounded: the least recently started chats are forgotten beyond ``capacity`` (their runs
    outlive them only until their retention anyway).

    >>> index = ChatIndex(capacity=2)
    >>> index.set("a", "run_1"); index.set("b", "run_2"); index.set("c", "run_3")
    >>> index.get("a") is None, index.get("c")
    (True, 'run_3')
    """

    def __init__(self, capacity: int = CHAT_CAPACITY) -> None:
        self.capacity = capacity
        self._latest: OrderedDict[str, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._latest)

    def get(self, chat_id: str) -> str | None:
        return self._latest.get(chat_id)

    def set(self, chat_id: str, run_id: str) -> str | None:
        """Record ``run_id`` for ``chat_id``; returns the run it replaces."""
        previous = self._latest.pop(chat_id, None)
        self._latest[chat_id] = run_id
        while len(self._latest) > self.capacity:
            self._latest.popitem(last=False)
        return previous

    def restore(self, chat_id: str, run_id: str, previous: str | None) -> None:
        """Undo :meth:`set` (the run failed before its first item), unless the chat has
        moved on to another run since."""
        if self._latest.get(chat_id) != run_id:
            return
        if previous is None:
            del self._latest[chat_id]
        else:
            self._latest[chat_id] = previous


class Chats:
    """The chat → latest run index of one family, here and in the shared directory."""

    def __init__(self, family: str, directory: RunDirectory) -> None:
        self.family = family
        self.directory = directory
        self.local = ChatIndex()

    def _key(self, chat_id: str) -> str:
        return f"{self.family}:{chat_id}"

    async def latest(self, chat_id: str) -> str | None:
        """The id of the chat's latest run (here, else from the shared directory)."""
        found = self.local.get(chat_id)
        if found is None and self.directory.shared:
            found = await self.directory.chat(self._key(chat_id))
        return found

    async def bind(self, chat_id: str, run_id: str) -> Callable[[], Awaitable[None]]:
        """Make ``run_id`` the chat's latest run; returns what undoes it (for a run that
        failed before its first item: the chat resumes its previous answer again)."""
        previous = self.local.set(chat_id, run_id)
        shared = self.directory.shared
        shared_previous: str | None = None
        if shared:
            try:
                shared_previous = await self.directory.chat(self._key(chat_id))
                await self.directory.set_chat(self._key(chat_id), run_id)
            except (DirectoryUnavailable, OSError):
                # The answer goes on; only a resume through another process misses it.
                logger.warning("could not record chat %s's run in Redis", chat_id)
                shared = False

        async def undo() -> None:
            self.local.restore(chat_id, run_id, previous)
            if shared:
                with contextlib.suppress(DirectoryUnavailable, OSError):
                    await self.directory.set_chat(self._key(chat_id), shared_previous)

        return undo
