"""``GET /exports/{table}.csv|.ndjson`` against a real server and a 200,000-row SQLite table:
rows parsed back exactly (quotes, line breaks, a leading ``#``, unicode), columns, filters,
order and limits, every refusal, a database failing mid-stream (the error marker), clients
that leave, constant memory and the time to the first byte; and ``sluiceway demo-data``.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from click.testing import CliRunner
from conftest import StartServer
from serverproc import ServerProcess

from sluiceway.cli.demo_data import demo_data
from sluiceway.server.app import create_app
from sluiceway.server.settings import Settings
from sluiceway.transfer.demo_data import demo_row, fill_demo

pytestmark = pytest.mark.timeout(60)

ROWS = 200_000
MiB = 1024 * 1024
#: The rows the ``boom`` view returns before SQLite raises "integer overflow" on the next.
BOOM_AT = 5000
TABLES = ["demo", "boom", "slow", "kinds", "ghost"]  # ghost: allowed, but not in the database
IDENTITY = {"Accept-Encoding": "identity"}


def demo_database(base: Path) -> Path:
    """The shared test database under ``base`` (made once per session): ``demo`` with ROWS
    rows; ``boom``, a view that fails at row BOOM_AT; ``slow``, a view costing ~30 µs a row;
    ``kinds``, a table of the types that need converting."""
    path = base / f"sluiceway-demo-{ROWS}.db"
    if path.exists():
        return path
    building = base / f"building-{path.name}"
    building.unlink(missing_ok=True)
    asyncio.run(fill_demo(f"sqlite+aiosqlite:///{building}", ROWS))
    db = sqlite3.connect(building)
    with db:  # one transaction
        db.execute(
            "CREATE VIEW boom AS SELECT id, CASE WHEN id = ? THEN abs(-9223372036854775808) "
            "ELSE name END AS name FROM demo".replace("?", str(BOOM_AT))
        )
        db.execute(
            "CREATE VIEW slow AS SELECT d.id, d.name, (SELECT count(*) FROM demo AS x "
            "WHERE x.id BETWEEN d.id AND d.id + 1000) AS near FROM demo AS d"
        )
        db.execute("CREATE TABLE kinds (code TEXT, payload BLOB, day DATE, ratio REAL, n INTEGER)")
        db.executemany(
            "INSERT INTO kinds VALUES (?, ?, ?, ?, ?)",
            [
                ("#first", b"\x00\xffbytes", "2024-02-29", 0.1, 1),
                ("plain", None, None, None, None),
                ("#error,database_error,not really", b"", "1999-12-31", -1.5e300, -7),
                ("", b"x", "2000-01-01", 2.0, 0),
            ],
        )
    db.close()  # checkpoints the WAL into the file before it is renamed
    building.rename(path)
    return path


def export_env(database: Path) -> dict[str, str]:
    """The settings of a server that exports the tables of :func:`demo_database`."""
    return {
        "SLUICEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
        "SLUICEWAY_EXPORT_TABLES": orjson.dumps(TABLES).decode(),
    }


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return demo_database(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def server(database: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(env=export_env(database)).start()
    yield process
    process.stop()


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30.0) as client:
        yield client


def csv_row(row: dict[str, Any]) -> list[str]:
    """A demo row as the CSV export must write it."""
    return [
        str(row["id"]),
        row["name"],
        row["email"] or "",
        str(row["amount"]),
        row["created_at"].isoformat(),
        "true" if row["active"] else "false",
    ]


def json_row(row: dict[str, Any]) -> dict[str, Any]:
    """A demo row as the NDJSON export must write it (decimals as exact strings)."""
    return {
        **row,
        "amount": str(row["amount"]),
        "created_at": row["created_at"].isoformat(),
    }


def parse_csv(body: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(body.decode(), newline="")))


def parse_ndjson(body: bytes) -> list[Any]:
    if not body:
        return []
    assert body.endswith(b"\n")
    return [orjson.loads(line) for line in body.split(b"\n")[:-1]]


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code, body
    assert body["detail"]


# -- content -------------------------------------------------------------------------------


def test_csv_round_trip(http: httpx.Client) -> None:
    response = http.get("/exports/demo.csv", params={"limit": "3000"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8; header=present"
    assert response.headers["content-disposition"] == 'attachment; filename="demo.csv"'
    body = response.content
    assert body.startswith(b"id,name,email,amount,created_at,active\r\n")
    assert body.endswith(b"\r\n")
    rows = parse_csv(body)
    assert rows[0] == ["id", "name", "email", "amount", "created_at", "active"]
    assert rows[1:] == [csv_row(demo_row(i)) for i in range(1, 3001)]
    # The troublemakers really are in there, and quoted as RFC 4180 says.
    assert b'5,"O\'Brien, ""Bob""",' in body
    assert b'"windows\r\nline end"' in body and b'"old mac\rline end"' in body


def test_ndjson_round_trip(http: httpx.Client) -> None:
    response = http.get("/exports/demo.ndjson", params={"limit": "3000"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    assert response.headers["content-disposition"] == 'attachment; filename="demo.ndjson"'
    assert parse_ndjson(response.content) == [json_row(demo_row(i)) for i in range(1, 3001)]


def test_values_that_need_converting(http: httpx.Client) -> None:
    body = http.get("/exports/kinds.csv").content
    assert parse_csv(body) == [
        ["code", "payload", "day", "ratio", "n"],
        ["#first", base64.b64encode(b"\x00\xffbytes").decode(), "2024-02-29", "0.1", "1"],
        ["plain", "", "", "", ""],
        ["#error,database_error,not really", "", "1999-12-31", "-1.5e+300", "-7"],
        ["", "eA==", "2000-01-01", "2.0", "0"],
    ]
    # A row whose first field starts with "#" is quoted: only the error marker starts a
    # line with a bare "#".
    assert not any(line.startswith(b"#") for line in body.split(b"\r\n"))
    assert b'"#error,database_error,not really"' in body
    lines = parse_ndjson(http.get("/exports/kinds.ndjson").content)
    assert lines[0] == {
        "code": "#first",
        "payload": base64.b64encode(b"\x00\xffbytes").decode(),
        "day": "2024-02-29",
        "ratio": 0.1,
        "n": 1,
    }
    assert lines[1] == {"code": "plain", "payload": None, "day": None, "ratio": None, "n": None}


def test_a_first_column_of_text_starting_with_hash(http: httpx.Client) -> None:
    response = http.get("/exports/demo.csv", params={"columns": "name,id", "limit": "600"})
    rows = parse_csv(response.content)
    assert rows[1:] == [[demo_row(i)["name"], str(i)] for i in range(1, 601)]
    assert b'\r\n"#not a comment","25"\r\n' in response.content


@pytest.mark.parametrize(
    ("params", "expected_ids"),
    [
        ({"where.id.gte": "100", "where.id.lt": "110"}, list(range(100, 110))),
        ({"where.id": "42"}, [42]),
        ({"where.id.ne": "1", "limit": "3"}, [2, 3, 4]),
        ({"where.active": "false", "limit": "4"}, [3, 6, 9, 12]),
        ({"where.email.null": "true", "limit": "3"}, [7, 14, 21]),
        ({"where.email.null": "false", "where.id.lte": "8"}, [1, 2, 3, 4, 5, 6, 8]),
        ({"where.name": "line one\nline two", "where.id.lt": "200"}, [10, 70, 130, 190]),
        ({"where.amount.gt": "9999.595"}, [27026, 54053, 81080]),
        ({"where.amount.lte": "-9999.94", "where.id.gte": "100000"}, [108108, 135135, 162162]),
        ({"where.amount.lt": "-9999.9", "limit": "2"}, [27027, 54054]),
        ({"where.created_at.lte": "2024-01-01T00:00:51"}, [1, 2, 3]),
        ({"order_by": "-id", "limit": "3"}, [200_000, 199_999, 199_998]),
        ({"order_by": "active,-id", "where.id.lte": "6"}, [6, 3, 5, 4, 2, 1]),
        ({"limit": "0"}, []),
        ({"where.id.gt": "199998"}, [199_999, 200_000]),
    ],
)
def test_filters_order_and_limit(
    http: httpx.Client, params: dict[str, str], expected_ids: list[int]
) -> None:
    rows = parse_ndjson(http.get("/exports/demo.ndjson", params=params).content)
    assert [row["id"] for row in rows] == expected_ids
    assert rows == [json_row(demo_row(i)) for i in expected_ids]


def test_columns_choose_and_order(http: httpx.Client) -> None:
    params = {"columns": "active, id", "limit": "3"}
    assert parse_csv(http.get("/exports/demo.csv", params=params).content) == [
        ["active", "id"],
        ["true", "1"],
        ["true", "2"],
        ["false", "3"],
    ]
    lines = parse_ndjson(http.get("/exports/demo.ndjson", params=params).content)
    assert [list(line) for line in lines] == [["active", "id"]] * 3


def test_empty_result_still_has_the_header(http: httpx.Client) -> None:
    response = http.get("/exports/demo.csv", params={"where.id": "0"})
    assert response.status_code == 200
    assert response.content == b"id,name,email,amount,created_at,active\r\n"


def test_head_sends_headers_only(http: httpx.Client) -> None:
    response = http.head("/exports/demo.csv")
    assert response.status_code == 200
    assert response.headers["content-disposition"] == 'attachment; filename="demo.csv"'
    assert response.content == b""


# -- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params", "status", "code"),
    [
        ("/exports/secret.csv", {}, 404, "unknown_table"),
        ("/exports/ghost.csv", {}, 404, "unknown_table"),
        ("/exports/sqlite_master.ndjson", {}, 404, "unknown_table"),
        ("/exports/demo;drop.csv", {}, 404, "unknown_table"),
        ("/exports/demo.xml", {}, 404, "not_found"),
        ("/exports/demo.csv", {"columns": "id,nope"}, 400, "invalid_column"),
        ("/exports/demo.csv", {"columns": "id,,name"}, 400, "invalid_column"),
        ("/exports/demo.csv", {"columns": "id,id"}, 400, "invalid_column"),
        ("/exports/demo.csv", {"columns": "id;DROP TABLE demo"}, 400, "invalid_column"),
        ("/exports/demo.csv", {"where.nope": "1"}, 400, "invalid_filter"),
        ("/exports/demo.csv", {"where.id": "abc"}, 400, "invalid_filter"),
        ("/exports/demo.csv", {"where.id.gt": "1.5"}, 400, "invalid_filter"),
        ("/exports/demo.csv", {"where.active": "maybe"}, 400, "invalid_filter"),
        ("/exports/demo.csv", {"where.amount.lt": "lots"}, 400, "invalid_filter"),
        ("/exports/demo.csv", {"where.created_at.gt": "yesterday"}, 400, "invalid_filter"),
        ("/exports/demo.csv", {"where.email.null": "perhaps"}, 400, "invalid_filter"),
        ("/exports/demo.csv", {"where.id.like": "1"}, 400, "invalid_filter"),
        ("/exports/demo.csv", {"order_by": "nope"}, 400, "invalid_order_by"),
        ("/exports/demo.csv", {"order_by": "--id"}, 400, "invalid_order_by"),
        ("/exports/demo.ndjson", {"limit": "-1"}, 400, "invalid_limit"),
        ("/exports/demo.ndjson", {"limit": "ten"}, 400, "invalid_limit"),
        ("/exports/demo.ndjson", {"limit": "99999999999999999999"}, 400, "invalid_limit"),
        ("/exports/demo.ndjson", {"colums": "id"}, 400, "unknown_parameter"),
    ],
)
def test_refusals(
    http: httpx.Client, path: str, params: dict[str, str], status: int, code: str
) -> None:
    assert_error(http.get(path, params=params), status, code)


def test_only_get_and_head(http: httpx.Client) -> None:
    assert_error(http.post("/exports/demo.csv", content=b""), 405, "method_not_allowed")


# -- failures after the first byte ---------------------------------------------------------


def test_database_failure_mid_stream_ends_csv_with_a_marker(http: httpx.Client) -> None:
    response = http.get("/exports/boom.csv")
    assert response.status_code == 200  # the failure came after the first byte
    body = response.content
    rows, marker = body[: body.rindex(b"#error,")], body[body.rindex(b"#error,") :]
    assert marker == b"#error,database_error,OperationalError: integer overflow\r\n"
    data = parse_csv(rows)
    assert data[0] == ["id", "name"]
    # Every row before the failure is whole and exact; none is invented after it.
    assert 0 < len(data) - 1 < BOOM_AT
    assert data[1:] == [[str(i), demo_row(i)["name"]] for i in range(1, len(data))]


def test_database_failure_mid_stream_ends_ndjson_with_a_marker(http: httpx.Client) -> None:
    lines = parse_ndjson(http.get("/exports/boom.ndjson").content)
    assert lines[-1] == {"error": "database_error", "detail": "OperationalError: integer overflow"}
    assert 0 < len(lines) - 1 < BOOM_AT
    assert lines[:-1] == [{"id": i, "name": demo_row(i)["name"]} for i in range(1, len(lines))]


def test_shutdown_ends_an_export_with_a_marker(start_server: StartServer, database: Path) -> None:
    env = {
        "SLUICEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
        "SLUICEWAY_EXPORT_TABLES": '["slow"]',
    }
    server = start_server(env=env)
    body = bytearray()
    with (
        httpx.Client(timeout=10.0, headers=IDENTITY) as client,
        client.stream("GET", f"{server.url}/exports/slow.csv") as response,
    ):
        chunks = response.iter_raw()
        body += next(chunks) + next(chunks)  # the header, then the first rows
        server.proc.send_signal(signal.SIGTERM)  # mid-export (it takes seconds)
        for chunk in chunks:
            body += chunk
    assert body.endswith(b"\r\n#error,shutting_down,the server is shutting down\r\n")
    rows = parse_csv(bytes(body[: body.rindex(b"#error")]))
    assert 0 < len(rows) - 1 < ROWS
    assert rows[-1] == [str(len(rows) - 1), demo_row(len(rows) - 1)["name"], "1001"]
    assert server.wait(10) == 0


def test_clients_that_leave_give_their_connection_back(server: ServerProcess) -> None:
    """More abandoned exports than the pool holds (5 + 10 overflow): if a client that left
    kept its database connection, the last request would wait for the pool's 30 s timeout."""
    for _ in range(20):
        with (
            httpx.Client(base_url=server.url, timeout=10.0, headers=IDENTITY) as client,
            client.stream("GET", "/exports/slow.csv") as response,
        ):
            assert response.status_code == 200
            next(response.iter_raw())
    started = time.monotonic()
    response = httpx.get(f"{server.url}/exports/demo.csv", params={"limit": "5"}, timeout=10.0)
    assert response.status_code == 200
    assert time.monotonic() - started < 5.0
    # The fetch in flight when they left was allowed to end: cancelling it inside the driver
    # made SQLAlchemy log a traceback for each.
    assert "Error closing cursor" not in server.output()


@pytest.mark.parametrize(
    ("url", "detail"),
    [
        ("nosuchdriver://x", "NoSuchModuleError: Can't load plugin: sqlalchemy.dialects:"),
        ("sqlite+aiosqlite:////nonexistent-dir/x.db", "OperationalError: unable to open"),
    ],
)
async def test_a_database_out_of_reach_is_503(url: str, detail: str) -> None:
    app = create_app(Settings(database_url=url))
    transport = httpx.ASGITransport(app=app)
    # A loopback name: the app answers only those (and allowed_hosts) while bound to loopback.
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        response = await client.get("/exports/demo.csv")
        assert_error(response, 503, "database_unavailable")
        assert detail in response.json()["detail"]
        response = await client.post("/jobs", json={"kind": "export", "params": {"table": "demo"}})
        assert_error(response, 503, "database_unavailable")
    await app.state.services.aclose()
    # aiosqlite stops the worker thread of a failed connect by posting to this loop: let it,
    # before pytest closes the loop.
    await asyncio.sleep(0.1)


# -- cost ----------------------------------------------------------------------------------


def _reset_peak_rss(pid: int) -> bool:
    """Reset the kernel's high-water mark of the process's RSS (VmHWM); False if we may not."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _rss(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _time_to_first_byte(url: str) -> float:
    with httpx.Client(timeout=10.0, headers=IDENTITY) as client:
        started = time.perf_counter()
        with client.stream("GET", url) as response:
            next(response.iter_raw())
            return time.perf_counter() - started


def test_whole_table_in_constant_memory_and_fast_first_byte(
    http: httpx.Client, server: ServerProcess
) -> None:
    url = f"{server.url}/exports/demo.csv"
    http.get("/exports/demo.csv", params={"limit": "20000"}, headers=IDENTITY)  # warm up
    ttfb = min(_time_to_first_byte(url) for _ in range(3))
    assert ttfb < 0.1, f"first byte after {ttfb * 1000:.0f} ms"

    exact = _reset_peak_rss(server.pid)
    before = _rss(server.pid, "VmRSS")
    peak = before
    body = bytearray()
    with http.stream("GET", "/exports/demo.csv", headers=IDENTITY) as response:
        assert response.status_code == 200
        for chunk in response.iter_raw():
            body += chunk
            peak = max(peak, _rss(server.pid, "VmRSS"))
    if exact:
        peak = max(peak, _rss(server.pid, "VmHWM"))
    growth = (peak - before) / MiB
    size = len(body)
    print(f"TTFB {ttfb * 1000:.1f} ms; RSS +{growth:.2f} MiB (exact peak: {exact}) for {size} B")
    assert size > 13 * MiB  # the whole table came...
    assert parse_csv(body)[1:] == [csv_row(demo_row(i)) for i in range(1, ROWS + 1)]  # exactly
    # ...while the server grew by a small constant: less than the size of what it sent, and
    # far from what holding the rows would take (hundreds of MiB of Python objects).
    assert growth < 12, f"RSS grew by {growth:.1f} MiB over an export of {size / MiB:.0f} MiB"


# -- sluiceway demo-data -------------------------------------------------------------------


def test_demo_data_command(tmp_path: Path) -> None:
    path = tmp_path / "cli.db"
    url = f"sqlite+aiosqlite:///{path}"
    result = CliRunner().invoke(demo_data, ["--rows", "250", "--database", url])
    assert result.exit_code == 0, result.output
    assert "250 rows" in result.output
    result = CliRunner().invoke(demo_data, ["--rows", "120", "--database", url])  # replaces
    assert result.exit_code == 0, result.output
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*), max(id) FROM demo").fetchone() == (120, 120)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        name = db.execute("SELECT name FROM demo WHERE id = 30").fetchone()[0]
    assert name == demo_row(30)["name"] == "Zoë Ünïcödé 日本語 🚀"


@pytest.mark.parametrize(
    "args",
    [
        ["--rows", "-1"],
        ["--rows", "5", "--database", "nosuchdriver://x"],
        ["--rows", "5", "--database", "sqlite+aiosqlite:////nonexistent-dir/x.db"],
    ],
)
def test_demo_data_command_refusals(args: list[str]) -> None:
    result = CliRunner().invoke(demo_data, args)
    assert result.exit_code != 0
    assert "Traceback" not in result.output
