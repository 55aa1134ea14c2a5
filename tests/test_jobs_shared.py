"""Jobs across processes: two ``sluiceway serve`` sharing one Redis (and one files directory).
A job runs where it was started; the other process describes it, streams it (replay, exact
resume, 204 at the end) and cancels it (its partial file removed before the answer), with the
owner rules of one process: someone else's job is refused. Unknown and malformed ids are
404s, never a 5xx.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redisproc import RedisProcess
from serverproc import ServerProcess
from test_exports import demo_database, export_env
from test_jobs import data, leftovers, wire
from test_jobs import follow as follow_as
from tokens import bearer, mint

from sluiceway.client import EventSource
from sluiceway.sse import Event

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

SECRET = "jobs-shared-test-secret-long-enough-for-hs256"
TABLES = ["/exports/demo", "/exports/slow", "/exports/boom"]
ANA = bearer(mint(SECRET, publish=["/jobs"], subscribe=TABLES, sub="ana"))
# Bo may start, read and cancel jobs: his own, not Ana's.
BO = bearer(mint(SECRET, publish=["/jobs"], subscribe=["/jobs"], sub="bo"))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("shared-job-files")


@pytest.fixture(scope="module")
def pair(
    redis_server: RedisProcess, files: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    env = {
        **export_env(demo_database(tmp_path_factory.getbasetemp())),
        "SLUICEWAY_FILES_DIR": str(files),
        "SLUICEWAY_TOKEN_HMAC_SECRET": SECRET,
    }
    args = ["--backend", redis_server.url]
    first = ServerProcess(args=args, env=env).start()
    try:
        second = ServerProcess(args=args, env=env).start()
    except BaseException:
        first.stop()
        raise
    yield first, second
    for server in (first, second):
        server.stop()
        assert "Traceback" not in server.output(), server.output()


@pytest.fixture
def clients(pair: tuple[ServerProcess, ServerProcess]) -> Iterator[tuple[httpx.Client, ...]]:
    with (
        httpx.Client(base_url=pair[0].url, timeout=15.0) as first,
        httpx.Client(base_url=pair[1].url, timeout=15.0) as second,
    ):
        yield first, second


def start(http: httpx.Client, params: dict[str, Any]) -> str:
    response = http.post("/jobs", json={"kind": "export", "params": params}, headers=ANA)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def follow(server: ServerProcess, job_id: str, last_event_id: str = "") -> list[Event]:
    """As ``test_jobs.follow``, as Ana (who owns the jobs here)."""
    return follow_as(server, job_id, last_event_id, headers=ANA)


def test_a_job_is_followed_resumed_and_described_on_another_process(
    pair: tuple[ServerProcess, ServerProcess], clients: tuple[httpx.Client, ...], files: Path
) -> None:
    first, second = pair
    on_first, on_second = clients
    rows = 20_000
    job_id = start(on_first, {"table": "demo", "where": {"id.lte": rows}})

    elsewhere = follow(second, job_id)  # from its first event, live, until its result
    assert [e.event for e in elsewhere[:-1]] == ["progress"] * (len(elsewhere) - 1)
    assert elsewhere[-1].event == "result"
    assert wire(follow(first, job_id)) == wire(elsewhere)  # the same ids on both
    middle = len(elsewhere) // 2
    resumed = follow(second, job_id, last_event_id=elsewhere[middle].id or "")
    assert wire(resumed) == wire(elsewhere[middle + 1 :])  # exact resume, elsewhere
    last = elsewhere[-1].id or ""
    ended = on_second.get(f"/jobs/{job_id}/events", headers={**ANA, "Last-Event-ID": last})
    assert ended.status_code == 204  # everything received: the client stops reconnecting
    garbage = on_second.get(f"/jobs/{job_id}/events", headers={**ANA, "Last-Event-ID": "x"})
    assert garbage.status_code == 400
    assert garbage.json()["error"] == "invalid_last_event_id"

    here = on_first.get(f"/jobs/{job_id}", headers=ANA).json()
    there = on_second.get(f"/jobs/{job_id}", headers=ANA).json()
    result = data(elsewhere[-1])
    assert there["state"] == here["state"] == "completed"
    assert there["result"] == here["result"] == result
    assert there["progress"] == data(elsewhere[-2]) == here["progress"]
    assert there["progress"]["done"] == rows
    for key in ("id", "kind", "params", "created", "error", "url", "events"):
        assert there[key] == here[key], key
    assert (files / result["path"]).stat().st_size == result["bytes"]


def test_a_job_is_cancelled_from_another_process(
    pair: tuple[ServerProcess, ServerProcess], clients: tuple[httpx.Client, ...], files: Path
) -> None:
    second = pair[1]
    on_first, on_second = clients
    job_id = start(on_first, {"table": "slow"})  # 200,000 rows at ~30 µs: seconds
    url = f"{second.url}/jobs/{job_id}/events"
    with EventSource(url, headers=ANA, retry_delay=0.05) as source:
        events = iter(source)
        for event in events:
            if event.event == "progress" and data(event)["done"] > 0:
                break
        running = on_second.get(f"/jobs/{job_id}", headers=ANA).json()
        assert running["state"] == "running"
        assert running["kind"] == "export" and running["params"]["table"] == "slow"
        assert leftovers(files, job_id) == [f"slow-{job_id}.csv.part"]

        # Someone else may neither read it nor cancel it, from either process.
        for client in (on_first, on_second):
            for method, path in [
                ("GET", f"/jobs/{job_id}"),
                ("GET", f"/jobs/{job_id}/events"),
                ("DELETE", f"/jobs/{job_id}"),
            ]:
                refused = client.request(method, path, headers=BO)
                assert refused.status_code == 403, (method, path, refused.text)

        cancelled = on_second.delete(f"/jobs/{job_id}", headers=ANA)
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["state"] == "cancelled"
        assert cancelled.json()["error"] == {
            "error": "cancelled",
            "message": "the job was cancelled",
        }
        assert leftovers(files, job_id) == []  # removed before the answer
        after = list(events)  # the stream on the second process ends by itself
    assert after[-1].event == "error"
    assert data(after[-1]) == {
        "error": "cancelled",
        "message": "the job was cancelled",
        "state": "cancelled",
    }
    assert on_first.get(f"/jobs/{job_id}", headers=ANA).json()["state"] == "cancelled"
    again = on_second.delete(f"/jobs/{job_id}", headers=ANA)  # idempotent
    assert again.status_code == 200 and again.json()["state"] == "cancelled"


def test_a_failed_job_reads_the_same_everywhere(clients: tuple[httpx.Client, ...]) -> None:
    on_first, on_second = clients
    job_id = start(on_first, {"table": "boom", "format": "ndjson"})
    deadline = time.monotonic() + 15
    while (here := on_first.get(f"/jobs/{job_id}", headers=ANA).json())["state"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)  # polling interval, not an assertion
    there = on_second.get(f"/jobs/{job_id}", headers=ANA).json()
    assert there["state"] == here["state"] == "failed"
    assert there["error"] == here["error"]
    assert there["error"]["error"] == "database_error"


@pytest.mark.parametrize(
    "job_id",
    [
        "job_" + "0" * 24,  # the shape of an id, nobody's
        "job_nope",
        "run_" + "0" * 24,
        "job_" + "0" * 23 + "G",
        "job_%2e%2e",
        "job_%00",
        "%20",
        "job_" + "a" * 5000,
    ],
)
def test_unknown_and_malformed_ids_are_404_everywhere(
    clients: tuple[httpx.Client, ...], job_id: str
) -> None:
    for client in clients:
        for method, path in [
            ("GET", f"/jobs/{job_id}"),
            ("DELETE", f"/jobs/{job_id}"),
            ("GET", f"/jobs/{job_id}/events"),
        ]:
            response = client.request(method, path, headers=ANA)
            assert response.status_code == 404, (method, path, response.text)
            assert response.json()["error"] == "unknown_job"
