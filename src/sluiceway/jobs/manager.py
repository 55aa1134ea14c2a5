"""``Jobs``: starts jobs within a limit, finds them again (here or in another process),
cancels them, forgets them later.

>>> jobs = Jobs(hub, context=context, max_running=4)                # doctest: +SKIP
>>> job = await jobs.start("export", {"table": "demo", "format": "csv"})  # doctest: +SKIP
>>> # clients follow the hub topic job.topic; await jobs.cancel(job.id)

Jobs are runs (family ``job``, :class:`~sluiceway.runs.Runs`): with a hub shared through
Redis, whose job topics are shared too (``process_local_topics`` without ``sluiceway.job:*``),
every process finds, describes, follows and cancels every job through the runs' directory,
after :meth:`Jobs.start_sharing`. A job still runs in the process that started it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from pydantic import ValidationError

from sluiceway.hub import Hub, TopicBounds
from sluiceway.jobs.job import FAMILY, TERMINAL_EVENTS, TOPIC_PREFIX, Job, JobState, is_job_id
from sluiceway.jobs.progress import REPORT_INTERVAL
from sluiceway.jobs.registry import JobRefused, JobRegistry, default_registry
from sluiceway.runs.directory import RemoteRun, RunDirectory
from sluiceway.runs.limits import RunLimits
from sluiceway.runs.manager import RunRefused, Runs

#: Seconds a finished job stays known (state, result, replayable events).
RETENTION = 3600.0
#: Finished jobs kept at most; beyond it the oldest are forgotten first.
MAX_RETAINED = 1000
#: How often finished jobs are checked for retention.
SWEEP_INTERVAL = 1.0
#: Seconds a job may run; then it ends with state ``time_limit``. A bound on what one
#: request can set going, and on how long its directory entry is kept.
MAX_DURATION = 24 * 3600.0
#: The progress of a job that has reported none.
NO_PROGRESS: dict[str, Any] = {
    "done": 0,
    "total": None,
    "percent": None,
    "eta_s": None,
    "rate": 0.0,
}


def job_topic_bounds(retention: float = RETENTION) -> TopicBounds:
    """Hub bounds for job topics: a job's events stay replayable while it is retained.

    At most ten ``progress`` events a second: 40,000 cover 66 minutes of running job.
    """
    return TopicBounds(TOPIC_PREFIX + "*", history_size=40_000, history_ttl=retention)


def validation_detail(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in error['loc']) or 'params'}: {error['msg']}"
        for error in exc.errors()
    )


class Jobs:
    """The jobs of one server (or app): at most ``max_running`` at once in this process, each
    finished job remembered for ``retention`` seconds (at most ``max_retained`` of them), each
    ended after ``max_duration`` seconds. ``directory``: where jobs are shared with other
    processes; by default the hub's Redis when its job topics are shared (see the module
    doc)."""

    def __init__(
        self,
        hub: Hub,
        *,
        context: Any = None,
        registry: JobRegistry | None = None,
        max_running: int = 4,
        retention: float = RETENTION,
        max_retained: int = MAX_RETAINED,
        report_interval: float = REPORT_INTERVAL,
        max_duration: float = MAX_DURATION,
        directory: RunDirectory | None = None,
    ) -> None:
        self.hub = hub
        self.context = context
        self.registry = registry if registry is not None else default_registry()
        self.max_running = max_running
        self.retention = retention
        self.max_retained = max_retained
        self.report_interval = report_interval
        limits = RunLimits(
            max_concurrent=max_running,
            max_duration=max_duration,
            first_item_timeout=max_duration,  # a job is under way from its start (Job._consume)
            max_bytes=None,  # its events are progress reports, ten a second at most
            retention=retention,
        )
        if directory is None and hub.config.is_process_local(TOPIC_PREFIX + FAMILY):
            directory = RunDirectory()  # its topics stay in this process: so do its jobs
        self.runs = Runs(hub, family=FAMILY, limits=limits, directory=directory)
        hub.configure_topics(job_topic_bounds(retention))  # before the runs' own bounds
        self._by_id: dict[str, Job] = {}  # this process's, oldest first
        self._checking = 0  # jobs between "a slot is free" and "started": they hold a slot
        self._sweeper: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def running(self) -> int:
        return self.runs.running

    async def start(self, kind: str, params: Any, *, owner: str | None = None) -> Job:
        """Validate ``params`` for ``kind`` and start the job (it runs detached) for
        ``owner`` (who may then follow and cancel it).

        Raises :class:`JobRefused`: 422 ``unknown_job_kind`` / ``invalid_params`` (or the
        kind's own check), 429 ``too_many_jobs``, 503 ``shutting_down``.
        """
        if self._closing:
            raise JobRefused(503, "shutting_down", "the server is shutting down")
        job_kind = self.registry.get(kind)
        if job_kind is None:
            known = ", ".join(self.registry.names())
            raise JobRefused(422, "unknown_job_kind", f"no job kind {kind!r} (known: {known})")
        if self.running + self._checking >= self.max_running:
            raise too_many(self.max_running)
        self._checking += 1
        try:
            try:
                model = job_kind.params_model.model_validate(params)
            except ValidationError as exc:
                raise JobRefused(422, "invalid_params", validation_detail(exc)) from None
            if job_kind.check is not None:
                await job_kind.check(self.context, model)
        finally:
            self._checking -= 1
        job = Job(
            self.runs,
            job_kind,
            model,
            owner=owner,
            context=self.context,
            report_interval=self.report_interval,
        )
        try:
            self.runs.launch(job)
        except RunRefused as exc:  # shutting down meanwhile
            if exc.status == 429:
                raise too_many(self.max_running) from None
            raise JobRefused(exc.status, exc.code, exc.detail) from None
        self._by_id[job.id] = job
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        return job

    def get(self, job_id: str) -> Job | None:
        """A job of this process."""
        return self._by_id.get(job_id)

    def list(self) -> list[Job]:
        """This process's jobs, oldest first."""
        return list(self._by_id.values())

    async def find(self, job_id: str) -> Job | RemoteRun | None:
        """A job of this process, or of another one that shares the directory (None once
        its retention is over, or for an id that is no job's). Raises
        :class:`~sluiceway.runs.directory.DirectoryUnavailable` when Redis is out of reach."""
        found = self._by_id.get(job_id)
        if found is not None:
            return found
        if not is_job_id(job_id) or not self.runs.directory.shared:
            return None
        remote = await self.runs.directory.lookup(job_id)
        if remote is None:
            return None
        remote.terminal_events = TERMINAL_EVENTS
        if not remote.running:
            # Its entry outlives its events (max_duration + retention): without them, it is
            # a job whose retention is over, as for the process that ran it.
            log = await self.hub.retained(remote.topic)
            if log is None or log.head < log.base:
                return None
        return remote

    async def describe(self, job: Job | RemoteRun) -> dict[str, Any]:
        """A job's JSON summary (``GET /jobs/{id}``); one of another process is read from its
        description in the directory and the last events of its topic."""
        if isinstance(job, Job):
            return job.describe()
        state = job.state
        progress: dict[str, Any] | None = None
        result: dict[str, Any] | None = None
        error: dict[str, Any] | None = None
        log = await self.hub.retained(job.topic)
        if log is not None:
            for offset in range(log.head, log.base - 1, -1):  # from its last event back
                event, data, _ = log.record_at(offset)
                if event == "progress":
                    progress = orjson.loads(data)
                    break
                if event == "result":
                    state, result = JobState.COMPLETED.value, orjson.loads(data)
                elif event == "error":
                    error = orjson.loads(data)
                    state = error.pop("state", state)
        return {
            "id": job.id,
            "kind": job.annotations.get("kind"),
            "state": state,
            "params": job.annotations.get("params", {}),
            "created": round(job.created, 3),
            "progress": progress or dict(NO_PROGRESS),
            "result": result,
            "error": error,
        }

    async def cancel(self, job_id: str, wait: float = 2.0) -> Job | None:
        """Cancel a running job of this process and wait (up to ``wait`` s) for it to end;
        an ended job is returned as it is (idempotent); ``None`` if unknown."""
        job = self._by_id.get(job_id)
        if job is None or not job.running:
            return job
        job.stop(JobState.CANCELLED)
        if job.task is not None and not job.task.done():
            await asyncio.wait({job.task}, timeout=wait)
        return job

    async def cancel_anywhere(self, job: Job | RemoteRun, wait: float = 2.0) -> Job | RemoteRun:
        """Cancel ``job`` wherever it runs and wait (up to ``wait`` s) until it has ended
        (its partial output removed); the job as it stands then. Idempotent. Raises
        :class:`~sluiceway.runs.directory.DirectoryUnavailable` when Redis is out of reach."""
        if isinstance(job, Job):
            await self.cancel(job.id, wait)
            return job
        await self.runs.cancel_and_wait(job, wait)  # until its last event, read here
        return await self.find(job.id) or job

    async def start_sharing(self) -> None:
        """Take cancel requests from other processes (with a shared directory)."""
        await self.runs.start_sharing()

    async def aclose(self, wait: float = 5.0) -> None:
        """Refuse new jobs, cancel the running ones and wait (up to ``wait`` s) for them."""
        self._closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        for job in self._by_id.values():
            # Cancelled, as by a client (not the runs' "shutdown"): the same last event.
            job.stop(JobState.CANCELLED)
        await self.runs.aclose(wait)

    # -- retention ---------------------------------------------------------------------------

    async def _sweep(self) -> None:
        while self._by_id:
            await asyncio.sleep(SWEEP_INTERVAL)
            self.forget_expired(time.monotonic())

    def forget_expired(self, now: float) -> None:
        """Forget jobs finished more than ``retention`` s ago, and the oldest finished ones
        beyond ``max_retained``."""
        finished = [job for job in self._by_id.values() if job.finished_at is not None]
        finished.sort(key=lambda job: job.finished_at or 0.0)
        excess = len(finished) - self.max_retained
        for index, job in enumerate(finished):
            assert job.finished_at is not None
            if index < excess or now - job.finished_at > self.retention:
                del self._by_id[job.id]
                self.runs.forget(job.id)


def too_many(max_running: int) -> JobRefused:
    return JobRefused(429, "too_many_jobs", f"{max_running} jobs are running; try again later")


__all__ = ["MAX_DURATION", "MAX_RETAINED", "RETENTION", "Jobs", "job_topic_bounds"]
