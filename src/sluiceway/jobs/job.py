"""One job: a kind's ``run`` on validated parameters, detached from any connection, telling
its progress through a hub topic that clients follow, leave and resume."""

from __future__ import annotations

import asyncio
import enum
import secrets
import time
from typing import Any

from pydantic import BaseModel

from sluiceway.jobs.progress import Progress

#: The hub topic of job ``id`` is ``TOPIC_PREFIX + id``.
TOPIC_PREFIX = "sluiceway.job:"


class JobState(enum.StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"  # ``run`` returned: a ``result`` event
    FAILED = "failed"  # ``run`` raised: an ``error`` event
    CANCELLED = "cancelled"  # DELETE /jobs/{id} (or shutdown): an ``error`` event, "cancelled"


def new_job_id() -> str:
    return "job_" + secrets.token_hex(12)


class Job:
    """A job's state; :class:`~sluiceway.jobs.manager.Jobs` runs it.

    Its topic receives ``progress`` ``{"done", "total", "percent", "eta_s", "rate"}`` events,
    then ``result`` (the object ``run`` returned) or ``error`` ``{"error", "message",
    "state"}`` (``state``: ``failed`` or ``cancelled``); then the topic is finished.
    """

    def __init__(
        self, kind: str, params: BaseModel, progress: Progress, owner: str | None = None
    ) -> None:
        self.id = progress.job_id
        self.topic = TOPIC_PREFIX + self.id
        self.kind = kind
        self.params = params
        #: Who started it (a token's ``sub``; None without one): it is theirs to follow and
        #: cancel (see :func:`sluiceway.auth.resources.may_act_on_run`).
        self.owner = owner
        self.progress = progress
        self.state = JobState.RUNNING
        self.created = time.time()
        self.finished_at: float | None = None  # time.monotonic() when it ended
        self.result: dict[str, Any] | None = None
        self.error: dict[str, str] | None = None
        self.task: asyncio.Task[None] | None = None
        #: Set once the terminal event is published and the topic finished.
        self.done = asyncio.Event()
        self.cancel_requested = False
        self.started = False  # ``run`` was entered (a task cancelled before that never runs)
        self.ending = False  # the terminal event is being published: too late to cancel

    @property
    def running(self) -> bool:
        return self.state is JobState.RUNNING

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
            "error": self.error,
        }


__all__ = ["TOPIC_PREFIX", "Job", "JobState", "new_job_id"]
