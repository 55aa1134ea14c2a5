"""One job: a run whose work is a kind's ``run`` on validated parameters, detached from any
connection, telling its progress through its hub topic, which clients follow, leave and
resume, from any process that shares the hub.

A job is a :class:`~sluiceway.runs.Run` (family ``job``): its task, its cancellation (from
any process), its retention and its description in the run directory are the runs'. What
is its own is its stream, unchanged for the clients of ``/jobs``: ``progress`` events, then
``result`` or ``error`` ``{"error", "message", "state"}`` (no ``start``, no ``done``).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, ClassVar

import orjson
from pydantic import BaseModel

from sluiceway.jobs.progress import Progress
from sluiceway.jobs.registry import JobFailed, JobKind
from sluiceway.runs.items import RunError, Stored
from sluiceway.runs.run import Run, RunState, run_topic

if TYPE_CHECKING:
    from sluiceway.runs.manager import Runs

logger = logging.getLogger("sluiceway.jobs")

#: The family of jobs among runs: their ids are ``job_<hex>``.
FAMILY = "job"
#: The hub topic of job ``id`` is ``TOPIC_PREFIX + id``.
TOPIC_PREFIX = run_topic(FAMILY, "")
_JOB_ID = re.compile(FAMILY + r"_[0-9a-f]{24}")  # what new_run_id makes
#: A job's stream ends with one of these.
TERMINAL_EVENTS = frozenset({"result", "error"})

#: A job's states are a run's: ``running``, then ``completed`` (a ``result`` event),
#: ``failed`` (``error``), ``cancelled`` (``error``, ``"cancelled"``: ``DELETE /jobs/{id}`` or
#: shutdown), or ``time_limit`` (``error``: it ran past its ``max_duration``).
JobState = RunState


def is_job_id(value: str) -> bool:
    """Whether ``value`` has the shape of a job's id (``job_`` and 24 hex digits), so that a
    malformed one is refused before any lookup.

    >>> is_job_id("job_" + "0" * 24), is_job_id("job_../x")
    (True, False)
    """
    return _JOB_ID.fullmatch(value) is not None


class Job(Run):
    """A job of ``kind`` on ``params`` (see the module doc); :class:`~sluiceway.jobs.Jobs`
    makes and starts it. ``owner``: who may follow and cancel it (see
    :func:`sluiceway.auth.resources.may_act_on_run`)."""

    terminal_events: ClassVar[frozenset[str]] = TERMINAL_EVENTS

    def __init__(
        self,
        runs: Runs,
        kind: JobKind,
        params: BaseModel,
        *,
        owner: str | None = None,
        context: Any = None,
        report_interval: float,
    ) -> None:
        super().__init__(
            _no_items(),
            runs.hub,
            family=FAMILY,
            limits=runs.limits,
            owner=owner,
            background=True,  # it goes on whether anyone follows it or not
            # What another process needs to describe it (GET /jobs/{id} anywhere).
            annotations={"kind": kind.name, "params": params.model_dump(mode="json")},
            directory=runs.directory,
        )
        self.kind = kind.name
        self.params = params
        self.progress = Progress(self.id, self._report, context=context, interval=report_interval)
        #: What ``run`` returned (once it has).
        self.result: dict[str, Any] | None = None
        self._work = kind.run

    async def _report(self, snapshot: dict[str, Any]) -> None:
        await self._publish([("progress", _json(snapshot))])

    async def _consume(self, deadline: asyncio.Timeout) -> None:
        # Under way from the start (its first progress event): the deadline set at the start,
        # first_item_timeout, is its max_duration, and reaching it is a time limit.
        self.first_item_at = time.monotonic()
        if not self.opened.done():
            self.opened.set_result(None)
        await self.progress.flush()  # a first event at once: the job is under way
        try:
            result = await self._work(self.progress, self.params)
        except JobFailed as exc:
            raise RunError(exc.code, exc.message) from None
        except Exception as exc:  # the kind's bug: it ends the job, never the server
            logger.exception("job %s (%s) failed", self.id, self.kind)
            raise RunError("job_failed", f"{type(exc).__name__}: {exc}"[:500]) from None
        # No await from here to the end of _consume: a cancel cannot land after the work
        # is done (an export renamed into place) and turn it into "cancelled".
        self.result = dict(result or {})

    def _opening(self) -> list[Stored]:
        return []  # no ``start``: a job's stream is its progress

    def _closing(self) -> list[Stored]:
        self.progress.stop()  # the rate stops changing
        error = self.error_info()
        if error is not None:
            return [("error", _json({**error, "state": self.state.value}))]
        last = self.progress.take_unreported()  # e.g. 100 %, before the result
        progress: list[Stored] = [("progress", _json(last))] if last is not None else []
        return [*progress, ("result", _json(self.result or {}))]

    def error_info(self) -> dict[str, str] | None:
        """``{"error", "message"}`` of a job that ended otherwise than completed."""
        if self.error is not None:
            return {"error": self.error[0], "message": self.error[1]}
        state = self.state
        if state in (RunState.RUNNING, RunState.COMPLETED):
            return None
        if state is RunState.TIME_LIMIT:
            limit = self.limits.max_duration
            return {"error": "time_limit", "message": f"the job ran for more than {limit:g} s"}
        return {"error": "cancelled", "message": "the job was cancelled"}

    def describe(self) -> dict[str, Any]:
        """A JSON summary (``GET /jobs/{id}``)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state.value,
            "params": self.params.model_dump(mode="json"),
            "created": round(self.created, 3),
            "progress": self.progress.snapshot(),
            "result": self.result,
            "error": self.error_info(),
        }


async def _no_items() -> AsyncIterator[Any]:
    """A job's producer: it yields nothing (its events are its progress and its end)."""
    nothing: tuple[Any, ...] = ()
    for item in nothing:
        yield item


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


__all__ = ["FAMILY", "TERMINAL_EVENTS", "TOPIC_PREFIX", "Job", "JobState", "is_job_id"]
