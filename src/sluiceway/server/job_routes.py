"""``/jobs``: start a background job, follow its progress (resumable SSE), cancel it.

| request | answer |
|---|---|
| ``POST /jobs`` ``{"kind", "params"}`` | 202 the job (``id``, ``state``, ``events``...) |
| ``GET /jobs`` | ``{"jobs": [...]}``: those the caller may read (its own) |
| ``GET /jobs/{id}`` | the job |
| ``GET /jobs/{id}/events`` | SSE: ``progress``..., then ``result`` or ``error``; resumable |
| ``DELETE /jobs/{id}`` | cancels it (idempotent): 200 the job |

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

from sluiceway.asgi import EventStreamResponse
from sluiceway.auth import Grants
from sluiceway.auth.resources import JOBS, export_resource, owner_of
from sluiceway.jobs import Job, JobRefused, Jobs
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


def describe(job: Job) -> dict[str, Any]:
    return {**job.describe(), "url": f"/jobs/{job.id}", "events": f"/jobs/{job.id}/events"}


def _authorized(request: Request, action: str) -> tuple[Job, Grants]:
    """The job, if the request may read (``subscribe``) or cancel (``publish``) it, and the
    request's grants; else :class:`APIError` (401/403; 404 for an unknown id, to whoever
    could act on their own jobs)."""
    job_id = request.path_params["job_id"]
    job = jobs_of(request).get(job_id)
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
    return JSONResponse(describe(job), status_code=202, headers={"location": f"/jobs/{job.id}"})


async def list_jobs(request: Request) -> Response:
    """The jobs the caller may read: its own, and those a grant names."""
    grants = require_reader(request)
    admission = admission_of(request)
    visible = [
        describe(job)
        for job in jobs_of(request).list()
        if admission.may_act_on_run(grants, SUBSCRIBE, JOBS, job.id, job.owner)
    ]
    return JSONResponse({"jobs": visible})


async def show(request: Request) -> Response:
    job, _ = _authorized(request, SUBSCRIBE)
    return JSONResponse(describe(job))


async def events(request: Request) -> Response:
    job, grants = _authorized(request, SUBSCRIBE)
    hub = services_of(request).hub
    last_event_id = request.headers.get("last-event-id") or request.query_params.get(
        "last_event_id"
    )
    if job.done.is_set() and last_event_id == hub.latest_id(job.topic):
        # The client has every event of an ended job: 204 tells it not to reconnect.
        return Response(status_code=204)
    start = last_event_id or hub.earliest_id(job.topic)
    subscription = hub.subscribe_nowait([job.topic], start)
    return EventStreamResponse(
        subscription,
        headers={"x-job-id": job.id},
        retry=services_of(request).settings.retry_ms,
        ends_at=grants.read_deadline,
    )


async def cancel(request: Request) -> Response:
    job, _ = _authorized(request, PUBLISH)
    await jobs_of(request).cancel(job.id)
    return JSONResponse(describe(job))


routes: list[Route] = [
    Route("/jobs", create, methods=["POST"]),
    Route("/jobs", list_jobs, methods=["GET"]),
    Route("/jobs/{job_id}", show, methods=["GET"]),
    Route("/jobs/{job_id}", cancel, methods=["DELETE"]),
    Route("/jobs/{job_id}/events", events, methods=["GET"]),
]
