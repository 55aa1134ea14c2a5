"""``/jobs`` against a real server: the ``export`` job's progress and result (a file identical
to the streamed export), exact resume with ``Last-Event-ID`` and 204 after the end, cancel
mid-way (the partial file removed), a job failing, every refusal; and the job manager in
process, with kinds of its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from conftest import StartServer
from pydantic import BaseModel
from serverproc import ServerProcess
from test_exports import BOOM_AT, IDENTITY, ROWS, demo_database, export_env

from sluiceway.client import EventSource
from sluiceway.hub import Hub
from sluiceway.jobs import (
    JobFailed,
    JobRefused,
    JobRegistry,
    Jobs,
    JobState,
    Progress,
    default_registry,
    register_job_kind,
)
from sluiceway.sse import Event

pytestmark = pytest.mark.timeout(60)

MAX_JOBS = 2


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("job-files")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, files: Path) -> Iterator[ServerProcess]:
    database = demo_database(tmp_path_factory.getbasetemp())
    env = {
        **export_env(database),
        "SLUICEWAY_FILES_DIR": str(files),
        "SLUICEWAY_MAX_JOBS": str(MAX_JOBS),
    }
    process = ServerProcess(env=env).start()
    yield process
    process.stop()


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30.0) as client:
        yield client


def start(http: httpx.Client, params: dict[str, Any], kind: str = "export") -> dict[str, Any]:
    response = http.post("/jobs", json={"kind": kind, "params": params})
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    assert response.headers["location"] == f"/jobs/{job['id']}"
    return job


def follow(
    server: ServerProcess,
    job_id: str,
    last_event_id: str = "",
    headers: dict[str, str] | None = None,
) -> list[Event]:
    """Every event from ``last_event_id`` on, until the server says there is no more (204)."""
    url = f"{server.url}/jobs/{job_id}/events"
    with EventSource(
        url, headers=headers, last_event_id=last_event_id, retry_delay=0.05, max_attempts=3
    ) as source:
        return list(source)


def wire(events: list[Event]) -> list[tuple[str | None, str | None, str | None]]:
    return [(e.id, e.event, e.data) for e in events]


def data(event: Event) -> Any:
    assert event.data is not None
    return orjson.loads(event.data)


def leftovers(files: Path, job_id: str) -> list[str]:
    exports = files / "exports"
    return sorted(p.name for p in exports.glob(f"*{job_id}*")) if exports.exists() else []


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"] == code, response.text


# -- the export job ------------------------------------------------------------------------


def test_export_job_reports_progress_then_its_result(
    http: httpx.Client, server: ServerProcess, files: Path
) -> None:
    rows = 60_000
    job = start(http, {"table": "demo", "where": {"id.lte": rows}})
    assert job["state"] == "running"
    assert job["kind"] == "export"
    assert job["events"] == f"/jobs/{job['id']}/events"
    assert job["params"]["format"] == "csv"

    events = follow(server, job["id"])
    assert [e.event for e in events[:-1]] == ["progress"] * (len(events) - 1)
    assert events[-1].event == "result"
    progress = [data(e) for e in events[:-1]]
    assert len(progress) >= 3, progress
    assert progress[0]["done"] == 0
    assert [p["done"] for p in progress] == sorted(p["done"] for p in progress)
    assert all(p["total"] == rows for p in progress[1:])
    assert [p["percent"] for p in progress[1:]] == sorted(p["percent"] for p in progress[1:])
    assert progress[-1]["done"] == rows and progress[-1]["percent"] == 100.0
    assert progress[-1]["eta_s"] == 0.0 and progress[-1]["rate"] > 0
    assert all(p["eta_s"] is not None and p["eta_s"] >= 0 for p in progress[1:])

    result = data(events[-1])
    name = f"demo-{job['id']}.csv"
    assert result["path"] == f"exports/{name}"
    assert result["download"] == f"/files/exports/{name}"
    content = (files / result["path"]).read_bytes()
    assert result["rows"] == rows
    assert result["bytes"] == len(content)
    assert result["sha256"] == hashlib.sha256(content).hexdigest()
    # The file is exactly what the streamed export of the same query sends.
    streamed = http.get("/exports/demo.csv", params={"where.id.lte": rows}, headers=IDENTITY)
    assert content == streamed.content
    assert http.get(result["download"]).content == content
    assert leftovers(files, job["id"]) == [name]  # no .part left behind

    state = http.get(f"/jobs/{job['id']}").json()
    assert state["state"] == "completed"
    assert state["result"] == result
    assert state["progress"]["done"] == rows
    assert job["id"] in [j["id"] for j in http.get("/jobs").json()["jobs"]]


def test_export_job_with_columns_filters_order_and_ndjson(
    http: httpx.Client, server: ServerProcess, files: Path
) -> None:
    params = {
        "table": "demo",
        "format": "ndjson",
        "columns": "id,name,amount",
        "where": {"active": False, "email.null": True, "id.lt": 5000},
        "order_by": ["-id"],
        "limit": 50,
    }
    job = start(http, params)
    result = data(follow(server, job["id"])[-1])
    content = (files / result["path"]).read_bytes()
    query = {
        "columns": "id,name,amount",
        "where.active": "false",
        "where.email.null": "true",
        "where.id.lt": "5000",
        "order_by": "-id",
        "limit": "50",
    }
    assert content == http.get("/exports/demo.ndjson", params=query).content
    lines = [orjson.loads(line) for line in content.splitlines()]
    assert len(lines) == result["rows"] == 50
    assert [line["id"] for line in lines] == [i for i in range(4999, 0, -1) if i % 21 == 0][:50]


def test_resume_with_last_event_id_is_exact(http: httpx.Client, server: ServerProcess) -> None:
    job = start(http, {"table": "slow", "where": {"id.lte": 30_000}})
    url = f"{server.url}/jobs/{job['id']}/events"
    seen: list[Event] = []
    with EventSource(url, retry_delay=0.05) as source:
        for event in source:
            seen.append(event)
            if len(seen) == 3:
                break  # the client leaves mid-job...
    assert data(seen[-1])["done"] < 30_000, "the job ended before the client left"
    resumed = follow(server, job["id"], last_event_id=seen[-1].id or "")  # ...and comes back
    full = follow(server, job["id"])
    assert wire(seen + resumed) == wire(full)  # nothing lost, nothing twice
    assert full[-1].event == "result"
    for k in (0, len(full) // 2, len(full) - 2):
        assert wire(follow(server, job["id"], last_event_id=full[k].id or "")) == wire(
            full[k + 1 :]
        )
    # Everything received: 204, so that a browser's EventSource stops reconnecting.
    response = http.get(job["events"], headers={"Last-Event-ID": full[-1].id or ""})
    assert response.status_code == 204
    assert http.get(job["events"], params={"last_event_id": full[-1].id}).status_code == 204
    assert_error(
        http.get(job["events"], headers={"Last-Event-ID": "garbage"}), 400, "invalid_last_event_id"
    )


def test_cancel_mid_way_removes_the_partial_file(
    http: httpx.Client, server: ServerProcess, files: Path
) -> None:
    job = start(http, {"table": "slow"})  # 200,000 rows at ~30 µs: seconds
    url = f"{server.url}/jobs/{job['id']}/events"
    after: list[Event] = []
    with EventSource(url, retry_delay=0.05) as source:
        events = iter(source)
        for event in events:
            if event.event == "progress" and data(event)["done"] > 0:
                break
        assert leftovers(files, job["id"]) == [f"slow-{job['id']}.csv.part"]
        response = http.delete(f"/jobs/{job['id']}")
        assert response.status_code == 200
        assert response.json()["state"] == "cancelled"
        assert leftovers(files, job["id"]) == []  # removed before the answer
        after = list(events)  # the stream ends by itself (then 204 on reconnect)
    assert after[-1].event == "error"
    assert data(after[-1]) == {
        "error": "cancelled",
        "message": "the job was cancelled",
        "state": "cancelled",
    }
    assert all(e.event == "progress" for e in after[:-1])
    again = http.delete(f"/jobs/{job['id']}")  # idempotent
    assert again.status_code == 200 and again.json()["state"] == "cancelled"
    state = http.get(f"/jobs/{job['id']}").json()
    assert state["state"] == "cancelled"
    assert state["error"]["error"] == "cancelled"
    assert state["progress"]["done"] < ROWS
    assert "Error closing cursor" not in server.output()  # the fetch in flight was let end


def test_a_job_whose_database_fails_ends_with_an_error(
    http: httpx.Client, server: ServerProcess, files: Path
) -> None:
    job = start(http, {"table": "boom", "format": "ndjson"})
    events = follow(server, job["id"])
    assert events[-1].event == "error"
    assert data(events[-1]) == {
        "error": "database_error",
        "message": "OperationalError: integer overflow",
        "state": "failed",
    }
    assert all(data(e)["done"] < BOOM_AT for e in events[:-1])
    assert http.get(f"/jobs/{job['id']}").json()["state"] == "failed"
    assert leftovers(files, job["id"]) == []
    completed = http.delete(f"/jobs/{job['id']}")  # cancelling an ended job changes nothing
    assert completed.status_code == 200 and completed.json()["state"] == "failed"


def test_shutdown_cancels_running_jobs_and_removes_their_files(
    start_server: StartServer, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    database = demo_database(tmp_path_factory.getbasetemp())
    env = {
        "SLUICEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
        "SLUICEWAY_EXPORT_TABLES": '["slow"]',
        "SLUICEWAY_FILES_DIR": str(tmp_path),
    }
    server = start_server(env=env)
    with httpx.Client(base_url=server.url, timeout=10.0) as client:
        job = start(client, {"table": "slow"})
        deadline = time.monotonic() + 10
        while not leftovers(tmp_path, job["id"]):  # under way: its .part file exists
            assert time.monotonic() < deadline
            time.sleep(0.02)
    server.proc.send_signal(signal.SIGTERM)
    assert server.wait(10) == 0
    assert leftovers(tmp_path, job["id"]) == []


def test_too_many_jobs_is_429(http: httpx.Client) -> None:
    running = [start(http, {"table": "slow"}) for _ in range(MAX_JOBS)]
    try:
        response = http.post("/jobs", json={"kind": "export", "params": {"table": "demo"}})
        assert_error(response, 429, "too_many_jobs")
    finally:
        for job in running:
            assert http.delete(f"/jobs/{job['id']}").json()["state"] == "cancelled"
    job = start(http, {"table": "demo", "limit": 10})  # a slot is free again
    deadline = time.monotonic() + 10
    while http.get(f"/jobs/{job['id']}").json()["state"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.02)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"[]", 422, "invalid_body"),
        (b"{}", 422, "invalid_body"),
        (b'{"kind": "export", "params": {}, "extra": 1}', 422, "invalid_body"),
        (b'{"kind": "export", "params": []}', 422, "invalid_body"),
        (b'{"kind": "nope"}', 422, "unknown_job_kind"),
        (b'{"kind": "export"}', 422, "invalid_params"),
        (
            b'{"kind": "export", "params": {"table": "demo", "format": "xml"}}',
            422,
            "invalid_params",
        ),
        (b'{"kind": "export", "params": {"table": "demo", "limit": -1}}', 422, "invalid_params"),
        (b'{"kind": "export", "params": {"table": "demo", "bogus": 1}}', 422, "invalid_params"),
        (b'{"kind": "export", "params": {"table": "secret"}}', 422, "unknown_table"),
        (b'{"kind": "export", "params": {"table": "ghost"}}', 422, "unknown_table"),
        (
            b'{"kind": "export", "params": {"table": "demo", "columns": ["nope"]}}',
            422,
            "invalid_column",
        ),
        (
            b'{"kind": "export", "params": {"table": "demo", "where": {"id.gt": "x"}}}',
            422,
            "invalid_filter",
        ),
        (
            b'{"kind": "export", "params": {"table": "demo", "order_by": "nope"}}',
            422,
            "invalid_order_by",
        ),
        (b'{"kind": "export", "params": {"table": "' + b"x" * (2 << 20) + b'"}}', 413, ""),
    ],
)
def test_refusals(http: httpx.Client, body: bytes, status: int, code: str) -> None:
    response = http.post("/jobs", content=body)
    assert_error(response, status, code or "body_too_large")


def test_unknown_jobs_are_404(http: httpx.Client) -> None:
    for method, path in [
        ("GET", "/jobs/job_nope"),
        ("DELETE", "/jobs/job_nope"),
        ("GET", "/jobs/job_nope/events"),
    ]:
        assert_error(http.request(method, path), 404, "unknown_job")


# -- the manager, in process ---------------------------------------------------------------


class Count(BaseModel):
    to: int
    fail: str | None = None
    delay: float = 0.0


async def count(progress: Progress, params: Count) -> dict[str, Any]:
    progress.set_total(params.to)
    for _ in range(params.to):
        await asyncio.sleep(params.delay)
        await progress.advance()
    if params.fail == "cleanly":
        raise JobFailed("too_high", "counted too far")
    if params.fail == "badly":
        raise RuntimeError("boom")
    return {"counted": progress.done, "context": progress.context}


async def refuse_thirteen(context: Any, params: Count) -> None:
    if params.to == 13:
        raise JobRefused(422, "unlucky", "not 13")


def counting_jobs(**options: Any) -> tuple[Hub, Jobs]:
    registry = JobRegistry()
    registry.register("count", Count, count, check=refuse_thirteen)
    hub = Hub()
    return hub, Jobs(hub, context="the context", registry=registry, report_interval=0.0, **options)


async def topic_events(hub: Hub, topic: str) -> list[tuple[str | None, Any]]:
    page = await hub.history(topic, limit=1000)
    return [(e.event, orjson.loads(e.data)) for e in page.events]


async def test_a_kind_of_your_own() -> None:
    hub, jobs = counting_jobs()
    job = await jobs.start("count", {"to": 3})
    await asyncio.wait_for(job.done.wait(), 5)
    events = await topic_events(hub, job.topic)
    assert [(name, body["done"] if name == "progress" else body) for name, body in events] == [
        ("progress", 0),
        ("progress", 1),
        ("progress", 2),
        ("progress", 3),
        ("result", {"counted": 3, "context": "the context"}),
    ]
    assert job.state is JobState.COMPLETED
    assert job.describe()["progress"]["percent"] == 100.0
    await jobs.aclose()
    await hub.aclose(0.1)


@pytest.mark.parametrize(
    ("fail", "error"),
    [
        ("cleanly", {"error": "too_high", "message": "counted too far", "state": "failed"}),
        ("badly", {"error": "job_failed", "message": "RuntimeError: boom", "state": "failed"}),
    ],
)
async def test_failing_kinds(fail: str, error: dict[str, str]) -> None:
    hub, jobs = counting_jobs()
    job = await jobs.start("count", {"to": 2, "fail": fail})
    await asyncio.wait_for(job.done.wait(), 5)
    assert (await topic_events(hub, job.topic))[-1] == ("error", error)
    assert job.state is JobState.FAILED
    await hub.aclose(0.1)


async def test_refusals_in_process() -> None:
    hub, jobs = counting_jobs(max_running=1)
    for kind, params, status, code in [
        ("count", {"to": 13}, 422, "unlucky"),
        ("count", {"to": "many"}, 422, "invalid_params"),
        ("other", {}, 422, "unknown_job_kind"),
    ]:
        with pytest.raises(JobRefused) as refused:
            await jobs.start(kind, params)
        assert (refused.value.status, refused.value.code) == (status, code)
    slow = await jobs.start("count", {"to": 1000, "delay": 0.01})
    with pytest.raises(JobRefused) as refused:
        await jobs.start("count", {"to": 1})
    assert refused.value.status == 429
    await jobs.aclose()
    assert slow.state is JobState.CANCELLED
    with pytest.raises(JobRefused) as refused:
        await jobs.start("count", {"to": 1})
    assert refused.value.status == 503
    await hub.aclose(0.1)


async def test_cancel_before_it_ran_and_retention() -> None:
    hub, jobs = counting_jobs(retention=60.0, max_retained=2)
    job = await jobs.start("count", {"to": 5})
    assert (await jobs.cancel(job.id)) is job  # before its task took a step
    assert job.state is JobState.CANCELLED
    assert await topic_events(hub, job.topic) == [
        ("error", {"error": "cancelled", "message": "the job was cancelled", "state": "cancelled"})
    ]
    done = [await jobs.start("count", {"to": 1}) for _ in range(2)]
    await asyncio.wait_for(asyncio.gather(*(j.done.wait() for j in done)), 5)
    jobs.forget_expired(time.monotonic())
    assert jobs.get(job.id) is None  # the oldest beyond max_retained
    assert all(jobs.get(j.id) is j for j in done)
    jobs.forget_expired(time.monotonic() + 61)
    assert jobs.list() == []
    assert await jobs.cancel("job_unknown") is None
    await hub.aclose(0.1)


def test_registry_rules() -> None:
    registry = JobRegistry()
    registry.register("count", Count, count)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("count", Count, count)
    registry.register("count", Count, count, replace=True)
    with pytest.raises(ValueError, match="identifier"):
        registry.register("no spaces", Count, count)
    assert "export" in default_registry().names()
    register_job_kind("count_for_tests", Count, count, replace=True)
    assert default_registry().get("count_for_tests") is not None
