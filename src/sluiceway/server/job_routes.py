"""``/jobs``: start a background job, follow its progress (resumable SSE), cancel it.

| request | answer |
|---|---|
| ``POST /jobs`` ``{"kind", "params"}`` | 202 the job (``id``, ``state``, ``events``...) |
| ``GET /jobs`` | ``{"jobs": [...]}``: this process's that the caller may read (its own) |
| ``GET /jobs/{id}`` | the job |
| ``GET /jobs/{id}/events`` | SSE: ``progress``..., then ``result`` or ``error``; resumable |
| ``DELETE /jobs/{id}`` | cancels it (idempotent): 200 the job |

With the Redis backend, ``/jobs/{id}`` answers the same from every process: a job runs in the
process that started it, and any other one describes it, streams it and cancels it (the
jobs are runs: :mod:`sluiceway.jobs.manager`).

Wiring: ``routes`` into the app; the app's :class:`~sluiceway.server.services.Services` hold the
jobs, and its shutdown closes them
(before the hub closes, so that cancelled jobs can still say so).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sluiceway.auth import Grants
from sluiceway.auth.resources import JOBS, export_resource, owner_of
from sluiceway.jobs import Job, JobRefused, Jobs
from sluiceway.runs import RemoteRun, run_response
from sluiceway.runs.directory import DirectoryUnavailable
from sluiceway.server.access import (
    PUBLISH,
    SUBSCRIBE,
    admission_of,
    require,
    require_reader,
    require_run,
)
from sluiceway.server.errors import APIError, JSONResponse
from sluiceway.server.generation_routes import read_json, validation_detail
from sluiceway.server.services import services_of


class JobRequest(BaseModel):
    """``POST /jobs``."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field(min_length=1, max_length=100)
    params: dict[str, Any] = Field(default_factory=dict)


def jobs_of(request: Request) -> Jobs:
    return services_of(request).jobs


def with_urls(described: dict[str, Any]) -> dict[str, Any]:
    job_id = described["id"]
    return {**described, "url": f"/jobs/{job_id}", "events": f"/jobs/{job_id}/events"}


async def _authorized(request: Request, action: str) -> tuple[Job | RemoteRun, Grants]:
    """The job (run by this process or, with the Redis backend, by another one), if the
    request may read (``subscribe``) or cancel (``publish``) it, and the request's grants;
    else :class:`APIError` (401/403; 404 for an unknown or malformed id, to whoever could
    act on their own jobs; 503 when Redis cannot be reached)."""
    job_id = request.path_params["job_id"]
    try:
        job = await jobs_of(request).find(job_id)
    except (DirectoryUnavailable, OSError) as exc:
        raise APIError(503, "backend_unavailable", f"cannot look the job up: {exc}") from None
    owner = job.owner if job is not None else None
    grants = require_run(request, action, JOBS, job_id, owner, exists=job is not None)
    if job is None:
        raise APIError(404, "unknown_job", "no such job (or it ended too long ago)")
    return job, grants


async def create(request: Request) -> Response:
    grants = require(request, PUBLISH, JOBS)
    try:
        body = JobRequest.model_validate(await read_json(request))
    except ValidationError as exc:
        raise APIError(422, "invalid_body", validation_detail(exc)) from None
    table = body.params.get("table")
    if body.kind == "export" and isinstance(table, str):
        # What the job writes is a download for whoever may read its file: the table must be
        # readable by the one who asks, as for GET /exports/{table}.
        require(request, SUBSCRIBE, export_resource(table))
    try:
        job = await jobs_of(request).start(body.kind, body.params, owner=owner_of(grants))
    except JobRefused as exc:
        raise APIError(exc.status, exc.code, exc.detail) from None
    return JSONResponse(
        with_urls(job.describe()), status_code=202, headers={"location": f"/jobs/{job.id}"}
    )


async def list_jobs(request: Request) -> Response:
    """The jobs of this process the caller may read: its own, and those a grant names."""
    grants = require_reader(request)
    admission = admission_of(request)
    visible = [
        with_urls(job.describe())
        for job in jobs_of(request).list()
        if admission.may_act_on_run(grants, SUBSCRIBE, JOBS, job.id, job.owner)
    ]
    return JSONResponse({"jobs": visible})


async def show(request: Request) -> Response:
    job, _ = await _authorized(request, SUBSCRIBE)
    return JSONResponse(with_urls(await jobs_of(request).describe(job)))


async def events(request: Request) -> Response:
    job, grants = await _authorized(request, SUBSCRIBE)
    last_event_id = request.headers.get("last-event-id") or request.query_params.get(
        "last_event_id"
    )
    # The runs' stream: resumable, 204 once the client has every event of an ended job, 400
    # for an id that is not one of this job's, and read until its last event when the job
    # goes on in another process.
    return await run_response(
        jobs_of(request).runs,
        job,
        last_event_id=last_event_id or None,
        ends_at=grants.read_deadline,
        retry=services_of(request).settings.retry_ms,
        id_header="x-job-id",
    )


async def cancel(request: Request) -> Response:
    job, _ = await _authorized(request, PUBLISH)
    jobs = jobs_of(request)
    try:
        ended = await jobs.cancel_anywhere(job)
    except (DirectoryUnavailable, OSError) as exc:
        raise APIError(503, "backend_unavailable", f"cannot reach the job: {exc}") from None
    return JSONResponse(with_urls(await jobs.describe(ended)))


routes: list[Route] = [
    Route("/jobs", create, methods=["POST"]),
    Route("/jobs", list_jobs, methods=["GET"]),
    Route("/jobs/{job_id}", show, methods=["GET"]),
    Route("/jobs/{job_id}", cancel, methods=["DELETE"]),
    Route("/jobs/{job_id}/events", events, methods=["GET"]),
]
