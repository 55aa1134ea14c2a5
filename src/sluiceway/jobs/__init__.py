"""Background jobs with progress: start one, follow it as a resumable event stream, cancel it.

A job runs detached from the request that started it (like an LLM generation) and reports
through a hub topic, so clients can leave, come back with ``Last-Event-ID`` and miss nothing.

>>> from sluiceway.jobs import Jobs
>>> jobs = Jobs(hub, context=context, max_running=4)                # doctest: +SKIP
>>> job = await jobs.start("export", {"table": "demo", "format": "ndjson"})  # doctest: +SKIP
>>> job.topic                      # follow it: hub.subscribe([job.topic])  # doctest: +SKIP
'sluiceway.job:job_...'

Add kinds of your own with :func:`register_job_kind`.
"""

from sluiceway.jobs.job import TOPIC_PREFIX, Job, JobState
from sluiceway.jobs.manager import Jobs, job_topic_bounds
from sluiceway.jobs.progress import Progress
from sluiceway.jobs.registry import (
    JobFailed,
    JobKind,
    JobRefused,
    JobRegistry,
    default_registry,
    register_job_kind,
)

__all__ = [
    "TOPIC_PREFIX",
    "Job",
    "JobFailed",
    "JobKind",
    "JobRefused",
    "JobRegistry",
    "JobState",
    "Jobs",
    "Progress",
    "default_registry",
    "job_topic_bounds",
    "register_job_kind",
]
