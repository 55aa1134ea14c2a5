"""``Jobs``: starts jobs within a limit, finds them again, cancels them, forgets them later.

>>> jobs = Jobs(hub, context=context, max_running=4)                # doctest: +SKIP
>>> job = await jobs.start("export", {"table": "demo", "format": "csv"})  # doctest: +SKIP
>>> # clients follow the hub topic job.topic; await jobs.cancel(job.id)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from pydantic import ValidationError

from sluiceway.hub import Hub, HubError, TopicBounds
from sluiceway.jobs.job import TOPIC_PREFIX, Job, JobState, new_job_id
from sluiceway.jobs.progress import REPORT_INTERVAL, Progress
from sluiceway.jobs.registry import JobFailed, JobKind, JobRefused, JobRegistry, default_registry

logger = logging.getLogger("sluiceway.jobs")

#: Seconds a finished job stays known (state, result, replayable events).
RETENTION = 3600.0
#: Finished jobs kept at most; beyond it the oldest are forgotten first.
MAX_RETAINED = 1000
#: How often finished jobs are checked for retention.
SWEEP_INTERVAL = 1.0


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
    """The jobs of one server (or app): at most ``max_running`` at once, each finished job
    remembered for ``retention`` seconds (at most ``max_retained`` of them)."""

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
    ) -> None:
        self.hub = hub
        self.context = context
        self.registry = registry if registry is not None else default_registry()
        self.max_running = max_running
        self.retention = retention
        self.max_retained = max_retained
        self.report_interval = report_interval
        self._by_id: dict[str, Job] = {}
        self._checking = 0  # jobs between "a slot is free" and "started": they hold a slot
        self._sweeper: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def running(self) -> int:
        return sum(1 for job in self._by_id.values() if job.running)

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
            raise JobRefused(
                429, "too_many_jobs", f"{self.max_running} jobs are running; try again later"
            )
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
        job_id = new_job_id()
        progress = Progress(
            job_id,
            lambda snapshot: self._publish(job, "progress", snapshot),
            context=self.context,
            interval=self.report_interval,
        )
        job = Job(kind, model, progress, owner)
        self._by_id[job.id] = job
        job.task = asyncio.get_running_loop().create_task(self._run(job, job_kind), name=job.id)
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        return job

    def get(self, job_id: str) -> Job | None:
        return self._by_id.get(job_id)

    def list(self) -> list[Job]:
        """Known jobs, oldest first."""
        return list(self._by_id.values())

    async def cancel(self, job_id: str, wait: float = 2.0) -> Job | None:
        """Cancel a running job and wait (up to ``wait`` s) for it to end; an ended job is
        returned as it is (idempotent); ``None`` if unknown."""
        job = self._by_id.get(job_id)
        if job is None or not job.running:
            return job
        job.cancel_requested = True
        task = job.task
        if job.started and not job.ending and task is not None and not task.done():
            task.cancel()
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=wait)
        return job

    async def aclose(self, wait: float = 5.0) -> None:
        """Refuse new jobs, cancel the running ones and wait (up to ``wait`` s) for them."""
        self._closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        running = [job for job in self._by_id.values() if job.running]
        for job in running:
            job.cancel_requested = True
            if job.started and not job.ending and job.task is not None:
                job.task.cancel()
        tasks = {job.task for job in running if job.task is not None}
        if tasks:
            await asyncio.wait(tasks, timeout=wait)

    # -- running -----------------------------------------------------------------------------

    async def _run(self, job: Job, kind: JobKind) -> None:
        job.started = True
        task = asyncio.current_task()
        try:
            if job.cancel_requested:  # cancelled before it began
                raise asyncio.CancelledError
            await job.progress.flush()  # a first event at once: the job is under way
            result = await kind.run(job.progress, job.params)
        except asyncio.CancelledError:
            if task is not None:
                task.uncancel()  # we end the job ourselves, publishing its last event
            self._end(job, JobState.CANCELLED, "cancelled", "the job was cancelled")
        except JobFailed as exc:
            self._end(job, JobState.FAILED, exc.code, exc.message)
        except Exception as exc:
            logger.exception("job %s (%s) failed", job.id, job.kind)
            self._end(job, JobState.FAILED, "job_failed", f"{type(exc).__name__}: {exc}"[:500])
        else:
            job.result = dict(result or {})
            self._end(job, JobState.COMPLETED)
        try:
            if job.error is None:
                await job.progress.flush()  # the last progress (e.g. 100 %) before the result
                await self._publish(job, "result", job.result or {})
            else:
                await self._publish(job, "error", {**job.error, "state": job.state.value})
        finally:
            with contextlib.suppress(HubError):
                self.hub.finish(job.topic)
            job.done.set()

    @staticmethod
    def _end(job: Job, state: JobState, code: str | None = None, message: str = "") -> None:
        job.ending = True  # from here on, a cancel changes nothing
        job.state = state
        if code is not None:
            job.error = {"error": code, "message": message}
        job.finished_at = time.monotonic()
        job.progress.stop()

    async def _publish(self, job: Job, event: str, data: dict[str, Any]) -> None:
        try:
            await self.hub.publish(job.topic, data, event=event)
        except HubError as exc:  # shutting down, or a backend gone: the job goes on regardless
            logger.warning("job %s: %s event not published: %s", job.id, event, exc)

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


__all__ = ["MAX_RETAINED", "RETENTION", "Jobs", "job_topic_bounds"]
