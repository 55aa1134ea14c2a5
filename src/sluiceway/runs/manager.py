"""``Runs``: a family of runs — starts them within bounds, finds them again, watches them.

>>> runs = Runs(hub, family="chat", limits=RunLimits(max_per_owner=2))   # doctest: +SKIP
>>> run = runs.start(answer(question), owner="alice")                     # doctest: +SKIP
>>> # clients follow run.topic; runs.cancel(run.id); await runs.aclose() on shutdown

A run nobody follows for ``abandon_after`` seconds is cancelled (or, with ``on_abandon=
"finish"``, left to complete); an ended run stays replayable for ``retention`` seconds. With
a shared (Redis) hub, the runs of every process are found, followed and cancelled from any of
them (:class:`~sluiceway.runs.redis_directory.RedisRunDirectory`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from sluiceway.asgi.shutdown import end_streams_on_uvicorn_exit, stop_first
from sluiceway.hub import Hub, TopicBounds
from sluiceway.runs.chats import Chats
from sluiceway.runs.directory import RemoteRun, RunDirectory
from sluiceway.runs.follow import run_batches
from sluiceway.runs.limits import RunLimits
from sluiceway.runs.run import Run, RunObserver, RunState

if TYPE_CHECKING:
    from starlette.responses import Response
    from starlette.routing import BaseRoute

    from sluiceway.runs.fastapi import RunRouter
    from sluiceway.runs.formats import Format
    from sluiceway.runs.http import Identify

logger = logging.getLogger("sluiceway.runs")

__all__ = ["RunRefused", "Runs"]

R = TypeVar("R", bound=Run)

#: How often running runs are checked for followers and ended ones for retention.
SWEEP_INTERVAL = 0.25


class RunRefused(Exception):
    """Not started: ``status`` (429, 503) and ``code`` say why."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


class Runs:
    """The runs of one family (``run``, ``gen``, ``chat``...: the prefix of their ids and of
    their internal topics ``sluiceway.<family>:<id>``), in one hub.

    ``directory``: shares runs with other processes; by default the hub's Redis when it has
    one (:meth:`for_hub`), else runs are found only where they go on. ``observer``: told of
    every run's life (metrics).
    """

    def __init__(
        self,
        hub: Hub,
        *,
        family: str = "run",
        limits: RunLimits | None = None,
        directory: RunDirectory | None = None,
        observer: RunObserver | None = None,
    ) -> None:
        if not family.isidentifier() or not family.isascii():
            raise ValueError(f"a family name is a short identifier, not {family!r}")
        self.hub = hub
        self.family = family
        self.limits = limits = limits or RunLimits()
        self.directory = directory if directory is not None else _directory_of(hub, limits)
        self.observer = observer
        #: Which run answers each chat now (the AI SDK's resume names chats).
        self.chats = Chats(family, self.directory)
        self._by_id: dict[str, Run] = {}
        # The runs going on, and how many per owner: counted, not scanned, on each start
        # (_by_id also holds every ended run of the retention period).
        self._going: set[Run] = set()
        self._going_per_owner: Counter[str] = Counter()
        # Ended runs in the order they ended: forgotten from the left once retention passed.
        self._ended_order: deque[tuple[float, Run]] = deque()
        self._unwatched_since: dict[str, float] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._sharing = False
        self._closing = False
        hub.configure_topics(topic_bounds(family, limits))

    # -- starting ----------------------------------------------------------------------------

    @property
    def running(self) -> int:
        return len(self._going)

    def start(
        self,
        producer: AsyncIterator[Any],
        *,
        owner: str | None = None,
        background: bool = False,
        meta: Mapping[str, Any] | None = None,
        annotations: Mapping[str, Any] | None = None,
        partial_json: bool = False,
    ) -> Run:
        """Start consuming ``producer`` in a run of its own (it goes on detached); returns at
        once. Raises :class:`RunRefused`: 503 while shutting down, 429 beyond
        ``max_concurrent`` or ``max_per_owner`` (the producer is then closed unstarted)."""
        run = Run(
            producer,
            self.hub,
            family=self.family,
            limits=self.limits,
            owner=owner,
            background=background,
            meta=meta,
            annotations=annotations,
            partial_json=partial_json,
            directory=self.directory,
            observer=self.observer,
        )
        return self.launch(run)

    def launch(self, run: R) -> R:
        """Start ``run``, made for this family (its hub, limits and directory): a run of
        another kind, such as a :class:`~sluiceway.jobs.Job`. Raises :class:`RunRefused` as
        :meth:`start` does (the producer is then closed unstarted)."""
        if run.family != self.family or run.hub is not self.hub:
            raise ValueError(f"run {run.id} is not of this family's hub")
        try:
            self._admit(run.owner)
        except RunRefused:
            close_unstarted(run.producer)
            raise
        self._by_id[run.id] = run
        self._going.add(run)
        if run.owner is not None:
            self._going_per_owner[run.owner] += 1
        run.start()
        assert run.task is not None
        run.task.add_done_callback(lambda _task: self._ended(run))
        self._ensure_sweeper()
        return run

    def _admit(self, owner: str | None) -> None:
        if self._closing:
            raise RunRefused(503, "shutting_down", "the server is shutting down")
        limits = self.limits
        if self.running >= limits.max_concurrent:
            raise RunRefused(
                429, "too_many_runs", f"{limits.max_concurrent} runs are going; try again shortly"
            )
        per_owner = limits.max_per_owner
        if (
            per_owner is not None
            and owner is not None
            and self._going_per_owner[owner] >= per_owner
        ):
            raise RunRefused(
                429, "too_many_runs", f"you have {per_owner} runs going; wait for one to end"
            )

    def _ended(self, run: Run) -> None:
        self._going.discard(run)
        self._unwatched_since.pop(run.id, None)
        self._ended_order.append((time.monotonic(), run))
        if run.owner is not None:
            self._going_per_owner[run.owner] -= 1
            if self._going_per_owner[run.owner] <= 0:
                del self._going_per_owner[run.owner]

    # -- finding -----------------------------------------------------------------------------

    def get(self, run_id: str) -> Run | None:
        """A run of this process."""
        return self._by_id.get(run_id)

    def forget(self, run_id: str) -> None:
        """Forget an ended run of this process before its retention is over (a bound on how
        many are kept, such as the jobs'); its events stay in the hub until they expire."""
        run = self._by_id.get(run_id)
        if run is not None and not run.running:
            del self._by_id[run_id]

    async def find(self, run_id: str) -> Run | RemoteRun | None:
        """A run of this process, or of another one that shares the directory."""
        found = self._by_id.get(run_id)
        if found is not None:
            return found
        if not run_id.startswith(f"{self.family}_"):
            return None  # another family's (or nobody's): not ours to find
        return await self.directory.lookup(run_id)

    # -- stopping ----------------------------------------------------------------------------

    def cancel(self, run_id: str) -> Run | None:
        """Cancel a run of this process (idempotent: an ended run is returned as it is);
        None if unknown."""
        run = self._by_id.get(run_id)
        if run is not None:
            run.stop(RunState.CANCELLED)
        return run

    async def cancel_anywhere(self, run_id: str) -> Run | RemoteRun | None:
        """Cancel a run wherever it goes on (idempotent); None if unknown."""
        local = self.cancel(run_id)
        if local is not None:
            return local
        remote = await self.find(run_id)
        if isinstance(remote, RemoteRun) and remote.running:
            await self.directory.request_cancel(run_id)
        return remote

    async def cancel_and_wait(self, run: Run | RemoteRun, within: float = 2.0) -> Run | RemoteRun:
        """Cancel ``run`` wherever it goes on and wait (at most ``within`` s) until it has
        ended; the run as it stands then. Raises what the directory raises (Redis down)."""
        await self.cancel_anywhere(run.id)
        if isinstance(run, Run):
            if run.task is not None and not run.task.done():
                await asyncio.wait({run.task}, timeout=within)
            return run
        if run.running:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(within):
                    async for _ in run_batches(self.hub, run):
                        pass  # until its last event: the process that runs it stopped it
            return await self.find(run.id) or run
        return run

    async def describe(self, run: Run | RemoteRun) -> dict[str, Any]:
        """A JSON summary of a run, here or in another process (then read back from its
        shared topic)."""
        if isinstance(run, Run):
            return run.describe()
        text: list[str] = []
        done: dict[str, Any] = {}
        error: dict[str, Any] | None = None
        items = 0
        page = await self.hub.history(run.topic, None, 1_000_000)
        for event in page.events:
            if event.event == "token":
                text.append(orjson.loads(event.data)["text"])
            elif event.event == "done":
                done = orjson.loads(event.data)
            elif event.event == "error":
                error = orjson.loads(event.data)
            if event.event not in ("start", "step", "done", "error"):
                items += 1
        description: dict[str, Any] = {
            "id": run.id,
            "state": run.state,
            "created": int(run.created),
            **run.meta,
            "finish_reason": run.finish_reason,
            "items": done.get("items", items),
            "followers": self.hub.subscriber_count(run.topic),
        }
        if "usage" in done or text:
            description["usage"] = done.get("usage")
            description["text"] = "".join(text)
        if error is not None:
            description["error"] = error
        return description

    # -- the family's life -------------------------------------------------------------------

    async def start_sharing(self) -> None:
        """Take cancel requests from other processes, and tell them which of their runs are
        followed here (with a shared directory)."""
        if self.directory.shared and not self._sharing:
            self._sharing = True
            await self.directory.start(self.cancel)
            self._ensure_sweeper()

    async def aclose(self, wait: float = 5.0) -> None:
        """Refuse new runs, end every running one with state ``shutdown`` (each stream gets
        its last event while the hub still takes it), and wait (up to ``wait`` s)."""
        self._closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        await self.directory.aclose()
        running = list(self._going)
        for run in running:
            run.stop(RunState.SHUTDOWN)
        tasks = [run.task for run in running if run.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=wait)

    @asynccontextmanager
    async def lifespan(self, app: Any = None) -> AsyncIterator[None]:
        """For ``FastAPI(lifespan=runs.lifespan)`` (or inside your own): starts the hub (and
        closes it after), shares runs across processes while the app runs, and ends them
        cleanly when it stops: under uvicorn, at the start of its shutdown, so that every
        stream gets its run's last event (``done`` ``{"state": "shutdown"}``) before it
        ends."""
        await self.hub.start()
        await self.start_sharing()
        end_streams_on_uvicorn_exit()
        forget = stop_first(self.aclose, self.hub.aclose)
        try:
            yield
        finally:
            forget()
            await self.aclose()
            await self.hub.aclose()

    # -- HTTP (sluiceway.runs.http, sluiceway.runs.fastapi) ----------------------------------

    async def respond(
        self,
        producer: AsyncIterator[Any],
        *,
        owner: str | None = None,
        format: Format = "sse",
        chat_id: str | None = None,
        meta: Mapping[str, Any] | None = None,
        annotations: Mapping[str, Any] | None = None,
        background: bool = False,
        partial_json: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        """Start a run of ``producer`` and answer with its stream: what an endpoint returns
        (see :func:`sluiceway.runs.http.respond`)."""
        from sluiceway.runs.http import respond

        return await respond(
            self,
            producer,
            owner=owner,
            format=format,
            chat_id=chat_id,
            meta=meta,
            annotations=annotations,
            background=background,
            partial_json=partial_json,
            headers=headers,
        )

    def router(
        self,
        *,
        prefix: str = "/runs",
        identify: Any = None,
        chats: str | None = None,
        **router_options: Any,
    ) -> RunRouter:
        """A FastAPI router: follow, describe and cancel this family's runs under ``prefix``
        (and resume chats under ``chats``); see :class:`sluiceway.runs.fastapi.RunRouter`."""
        from sluiceway.runs.fastapi import RunRouter

        return RunRouter(self, prefix=prefix, identify=identify, chats=chats, **router_options)

    def routes(
        self, prefix: str = "/runs", *, identify: Identify | None = None, chats: str | None = None
    ) -> list[BaseRoute]:
        """The same endpoints as Starlette routes (:func:`sluiceway.runs.http.run_routes`)."""
        from sluiceway.runs.http import run_routes

        return run_routes(self, prefix, identify=identify, chats=chats)

    def _ensure_sweeper(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        shared = self.directory.shared
        next_share = 0.0
        while self._by_id or shared:
            await asyncio.sleep(SWEEP_INTERVAL)
            try:
                now = time.monotonic()
                unwatched = self._check(now)
                if shared and (unwatched or now >= next_share):
                    next_share = now + 1.0
                    await self._share_watchers(unwatched)
            except Exception:  # keep watching: abandonment and retention depend on it
                logger.exception("run sweep failed")

    async def _share_watchers(self, unwatched: list[Run]) -> None:
        """Mark the other processes' runs followed here as followed; abandon this process's
        runs that nobody follows here, unless a reader elsewhere marked them."""
        prefix = f"sluiceway.{self.family}:"
        read_here = [
            name.removeprefix(prefix)
            for name in self.hub.topic_names()
            if name.startswith(prefix)
            and name.removeprefix(prefix) not in self._by_id
            and self.hub.subscriber_count(name)
        ]
        await self.directory.mark_watched(read_here)
        for run_id in await self.directory.cancel_requested([r.id for r in self._going]):
            self.cancel(run_id)
        if unwatched:
            elsewhere = await self.directory.watched([run.id for run in unwatched])
            for run in unwatched:
                if run.id in elsewhere:
                    self._unwatched_since.pop(run.id, None)
                else:
                    run.stop(RunState.ABANDONED)

    def _check(self, now: float) -> list[Run]:
        """Retention and abandonment; returns the runs to abandon that a shared directory
        must first confirm nobody follows elsewhere."""
        limits = self.limits
        ended = self._ended_order
        while ended and now - ended[0][0] > limits.retention:
            self._by_id.pop(ended.popleft()[1].id, None)  # None: forgotten already
        confirm: list[Run] = []
        for run in list(self._going):
            run_id = run.id
            if run.background or self.hub.subscriber_count(run.topic):
                self._unwatched_since.pop(run_id, None)
                continue
            since = self._unwatched_since.setdefault(run_id, now)
            if now - since >= limits.abandon_after and limits.on_abandon == "cancel":
                if self.directory.shared:
                    confirm.append(run)
                else:
                    run.stop(RunState.ABANDONED)
        return confirm


def topic_bounds(family: str, limits: RunLimits) -> TopicBounds:
    """Hub bounds for a family's topics: a run's whole stream stays replayable for its
    retention (bounded by ``max_items`` and ``max_bytes``)."""
    size = 2 * limits.max_items + 64 if limits.max_items is not None else 1_000_000
    history_bytes = limits.max_bytes + 64 * 1024 if limits.max_bytes is not None else None
    return TopicBounds(
        f"sluiceway.{family}:*",
        history_size=size,
        history_ttl=limits.retention,
        history_bytes=history_bytes,
    )


def _directory_of(hub: Hub, limits: RunLimits) -> RunDirectory:
    """The hub's Redis as the directory when it has one; in-process otherwise."""
    redis = getattr(hub.backend, "redis", None)
    if redis is None:
        return RunDirectory()
    from sluiceway.runs.redis_directory import RedisRunDirectory

    return RedisRunDirectory(
        redis,
        keep_for=limits.max_duration + limits.retention + 60,
        batched=getattr(hub.backend, "batched", None),
    )


def close_unstarted(producer: AsyncIterator[Any]) -> None:
    """Close a producer that will never run (an unstarted async generator closes at once)."""
    aclose = getattr(producer, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            closing = aclose()
            if asyncio.iscoroutine(closing):
                asyncio.get_running_loop().create_task(closing)
