"""``GET /exports`` and the export job against a real PostgreSQL (asyncpg), through a real
``sluiceway serve``: the demo table in CSV and NDJSON compared with the rows the database holds,
filters whose values are never rounded nor cut by a cast, a schema-qualified table, the types
PostgreSQL adds (``numeric`` beyond a double, ``timestamptz``, ``uuid``, ``jsonb``, ``inet``),
decimals as exact JSON numbers (``numeric=number``, on SQLite too), every refusal, a view that
fails mid-stream and a backend terminated mid-stream (the error marker, then a healthy server),
and ``sluiceway demo-data --database postgresql+asyncpg://...``.

The module gets a database of its own (``CREATE DATABASE`` with a unique name, dropped at the
end) on the PostgreSQL at ``$SLUICEWAY_TEST_POSTGRES`` (default: the local one, user
``postgres``); it is skipped, saying why, only when no PostgreSQL answers there.
"""

from __future__ import annotations

import asyncio
import decimal
import json
import os
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from click.testing import CliRunner
from serverproc import ServerProcess
from sqlalchemy.engine import make_url
from test_exports import IDENTITY, assert_error, csv_row, json_row, parse_csv, parse_ndjson
from test_jobs import data, follow, start

from sluiceway.cli.demo_data import demo_data
from sluiceway.server.app import create_app
from sluiceway.server.settings import Settings
from sluiceway.transfer.demo_data import demo_row, fill_demo

pytestmark = pytest.mark.timeout(60)

ADMIN_URL = os.environ.get(
    "SLUICEWAY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
ROWS = 20_000
#: The row at which the ``boom`` view divides by zero.
BOOM_AT = 5000
#: Rows of ``big`` (~60 MB of CSV: far more than the socket buffers hold, so an export of it is
#: still fetching when its backend is terminated).
BIG_ROWS = 300_000
BIG_PAD = "x" * 200
TABLES = ["demo", "reports.demo", "boom", "big", "kinds", "ghost", "nosuch.demo"]

HUGE = Decimal("12345678901234567890.12")  # beyond a double's 15-17 digits
HUGER = Decimal("-123456789012345678901234567890123456.78")
KINDS_SQL = """
CREATE TABLE kinds (
    id integer PRIMARY KEY, exact numeric, money numeric(40, 2), ratio real,
    at timestamptz, day date, tag uuid, doc jsonb, addr inet
);
INSERT INTO kinds VALUES
    (1, 12345678901234567890.12, -123456789012345678901234567890123456.78, 0.5,
     '2024-05-01 12:00:00+02', '2024-02-29', 'f3a1ba1d-d8fd-4c26-96c5-823277bd669b',
     '{"a": [1, 2.5, "three"]}', '10.0.0.1'),
    (2, -1e-30, 0.10, NULL, '2024-05-01 09:59:59.5+00', NULL, NULL, NULL, NULL),
    (3, 'NaN', NULL, NULL, NULL, NULL, NULL, NULL, NULL),
    (4, 'Infinity', NULL, NULL, NULL, NULL, NULL, NULL, NULL),
    (5, 0.000, 7, NULL, NULL, NULL, NULL, NULL, NULL);
"""


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


async def execute(dsn: str, sql: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@pytest.fixture(scope="module")
def postgres() -> Iterator[dict[str, str]]:
    """A fresh database: ``{"dsn": for asyncpg, "url": for SQLAlchemy}``, dropped at the end."""
    name = f"sluiceway_test_{uuid.uuid4().hex[:12]}"
    try:
        run(execute(ADMIN_URL, f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        pytest.skip(f"no PostgreSQL at {ADMIN_URL}: {exc}")
    admin = make_url(ADMIN_URL)
    dsn = admin.set(database=name).render_as_string(hide_password=False)
    url = admin.set(drivername="postgresql+asyncpg", database=name)
    try:
        yield {"dsn": dsn, "url": url.render_as_string(hide_password=False)}
    finally:
        run(execute(ADMIN_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def filled(postgres: dict[str, str]) -> dict[str, str]:
    run(fill_demo(postgres["url"], ROWS))
    run(execute(postgres["dsn"], "CREATE SCHEMA reports"))
    run(fill_demo(postgres["url"], 50, table="reports.demo"))
    setup = f"""
        CREATE VIEW boom AS SELECT id, CASE WHEN id = {BOOM_AT} THEN (1 / (id - id))::text
            ELSE name END AS name FROM demo;
        CREATE TABLE big AS SELECT g AS id, '{BIG_PAD}'::text AS pad
            FROM generate_series(1, {BIG_ROWS}) AS g;
        ALTER TABLE big ADD PRIMARY KEY (id);
        {KINDS_SQL}
    """
    run(execute(postgres["dsn"], setup))
    return postgres


@pytest.fixture(scope="module")
def server(filled: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    files = tmp_path_factory.mktemp("pg-files")
    env = {
        "SLUICEWAY_DATABASE_URL": filled["url"],
        "SLUICEWAY_EXPORT_TABLES": orjson.dumps(TABLES).decode(),
        "SLUICEWAY_FILES_DIR": str(files),
    }
    process = ServerProcess(env=env).start()
    process.files = files  # type: ignore[attr-defined]
    yield process
    process.stop()


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30.0) as client:
        yield client


async def _fetch(dsn: str, sql: str) -> list[Any]:
    connection = await asyncpg.connect(dsn)
    try:
        return list(await connection.fetch(sql))
    finally:
        await connection.close()


def database_rows(dsn: str, sql: str) -> list[dict[str, Any]]:
    """What the database itself answers to ``sql`` (asyncpg, beside the server)."""
    return [dict(record) for record in run(_fetch(dsn, sql))]


def exact_ndjson(body: bytes) -> list[dict[str, Any]]:
    """NDJSON read with exact decimals (what a careful reader of ``numeric=number`` does)."""
    return [json.loads(line, parse_float=Decimal) for line in body.splitlines()]


# -- content -------------------------------------------------------------------------------


def test_csv_is_the_table_as_the_database_holds_it(
    http: httpx.Client, filled: dict[str, str]
) -> None:
    held = database_rows(filled["dsn"], "SELECT * FROM demo ORDER BY id")
    assert held == [demo_row(i) for i in range(1, ROWS + 1)]  # what demo-data wrote, exactly
    response = http.get("/exports/demo.csv", headers=IDENTITY)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8; header=present"
    rows = parse_csv(response.content)
    assert rows[0] == ["id", "name", "email", "amount", "created_at", "active"]
    assert rows[1:] == [csv_row(row) for row in held]
    assert b'"windows\r\nline end"' in response.content


def test_ndjson_is_the_table_as_the_database_holds_it(
    http: httpx.Client, filled: dict[str, str]
) -> None:
    held = database_rows(filled["dsn"], "SELECT * FROM demo ORDER BY id")
    response = http.get("/exports/demo.ndjson")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    # The default: decimals as exact strings ("0.37"), as with SQLite.
    assert parse_ndjson(response.content) == [json_row(row) for row in held]


def test_ndjson_numeric_number_writes_exact_json_numbers(
    http: httpx.Client, filled: dict[str, str]
) -> None:
    body = http.get("/exports/demo.ndjson", params={"numeric": "number", "limit": "500"}).content
    assert body.startswith(b'{"id":1,"name":"User 1","email":"user1@example.com","amount":0.37,')
    assert b'"amount":3.70,' in body  # the scale is kept: the literal is the decimal's text
    held = database_rows(filled["dsn"], "SELECT * FROM demo ORDER BY id LIMIT 500")
    expected = [{**json_row(row), "amount": row["amount"]} for row in held]
    assert exact_ndjson(body) == expected
    # Same rows, same bytes otherwise: only the quotes around decimals differ.
    strings = http.get("/exports/demo.ndjson", params={"limit": "500"}).content
    assert len(strings) - len(body) == 2 * 500


def test_postgres_types_in_both_formats(http: httpx.Client) -> None:
    rows = parse_csv(http.get("/exports/kinds.csv").content)
    assert rows == [
        ["id", "exact", "money", "ratio", "at", "day", "tag", "doc", "addr"],
        [
            "1",
            str(HUGE),
            str(HUGER),
            "0.5",
            "2024-05-01T10:00:00+00:00",
            "2024-02-29",
            "f3a1ba1d-d8fd-4c26-96c5-823277bd669b",
            '{"a":[1,2.5,"three"]}',  # JSON text, not Python's repr
            "10.0.0.1",
        ],
        ["2", "-1E-30", "0.10", "", "2024-05-01T09:59:59.500000+00:00", "", "", "", ""],
        ["3", "NaN", "", "", "", "", "", "", ""],
        ["4", "Infinity", "", "", "", "", "", "", ""],
        ["5", "0.000", "7.00", "", "", "", "", "", ""],
    ]
    strings = parse_ndjson(http.get("/exports/kinds.ndjson").content)
    assert strings[0] == {
        "id": 1,
        "exact": "12345678901234567890.12",
        "money": "-123456789012345678901234567890123456.78",
        "ratio": 0.5,
        "at": "2024-05-01T10:00:00+00:00",
        "day": "2024-02-29",
        "tag": "f3a1ba1d-d8fd-4c26-96c5-823277bd669b",
        "doc": {"a": [1, 2.5, "three"]},
        "addr": "10.0.0.1",
    }
    body = http.get("/exports/kinds.ndjson", params={"numeric": "number"}).content
    lines = body.splitlines()
    assert b'"exact":12345678901234567890.12,' in lines[0]
    assert b'"money":-123456789012345678901234567890123456.78,' in lines[0]
    assert b'"exact":-1E-30,"money":0.10,' in lines[1]
    # JSON has no NaN nor infinity: those stay strings.
    assert b'"exact":"NaN"' in lines[2] and b'"exact":"Infinity"' in lines[3]
    exact = exact_ndjson(body)
    assert [row["exact"] for row in exact] == [HUGE, Decimal("-1E-30"), "NaN", "Infinity", 0]
    assert exact[0]["money"] == HUGER and exact[4]["money"] == Decimal("7.00")
    assert float(exact[0]["exact"]) != exact[0]["exact"]  # a double could not have carried it


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
        ({"where.name": "Zoë Ünïcödé 日本語 🚀", "limit": "2"}, [30, 90]),
        # 1.105 is not rounded to 1.11 by a cast to the column's NUMERIC(12, 2): row 3 (1.11)
        # is greater; 1.115 not rounded to 1.12: row 3 is smaller.
        ({"where.amount.gt": "1.105", "where.id.lte": "4"}, [3, 4]),
        ({"where.amount.lt": "1.115", "where.id.lte": "4"}, [1, 2, 3]),
        # Row 110 holds -40.70: below -40.695, not below -40.705.
        ({"where.amount.lt": "-40.695", "where.id.lte": "120"}, [110]),
        ({"where.amount.lt": "-40.705", "where.id.lte": "130"}, [121]),
        ({"where.created_at.lte": "2024-01-01T00:00:51"}, [1, 2, 3]),
        ({"order_by": "-id", "limit": "3"}, [ROWS, ROWS - 1, ROWS - 2]),
        ({"order_by": "active,-id", "where.id.lte": "6"}, [6, 3, 5, 4, 2, 1]),
        ({"limit": "0"}, []),
        # Beyond an INTEGER: no such row (not a 503: the value is sent as a BIGINT).
        ({"where.id": "99999999999"}, []),
        ({"where.id.lt": "3", "limit": "99999999999"}, [1, 2]),
    ],
)
def test_filters_order_and_limit(
    http: httpx.Client, params: dict[str, str], expected_ids: list[int]
) -> None:
    response = http.get("/exports/demo.ndjson", params=params)
    assert response.status_code == 200, response.text
    rows = parse_ndjson(response.content)
    assert [row["id"] for row in rows] == expected_ids
    assert rows == [json_row(demo_row(i)) for i in expected_ids]


def test_columns_choose_and_order(http: httpx.Client) -> None:
    params = {"columns": "amount, id", "where.id.lte": "3"}
    assert parse_csv(http.get("/exports/demo.csv", params=params).content) == [
        ["amount", "id"],
        ["0.37", "1"],
        ["0.74", "2"],
        ["1.11", "3"],
    ]


def test_time_zones(http: httpx.Client) -> None:
    def ids(value: str) -> list[int]:
        params = {"columns": "id", "where.at.gte": value}
        response = http.get("/exports/kinds.csv", params=params)
        assert response.status_code == 200, response.text
        return [int(row[0]) for row in parse_csv(response.content)[1:]]

    assert ids("2024-05-01T10:00:00+00:00") == [1]
    assert ids("2024-05-01T12:00:00+02:00") == [1]  # the same instant
    assert ids("2024-05-01T09:59:59") == [1, 2]  # no offset: UTC
    assert ids("2024-05-01T11:59:59.5+02:00") == [1, 2]


def test_a_schema_qualified_table(http: httpx.Client) -> None:
    response = http.get("/exports/reports.demo.csv")
    assert response.status_code == 200
    assert response.headers["content-disposition"] == 'attachment; filename="demo.csv"'
    assert parse_csv(response.content)[1:] == [csv_row(demo_row(i)) for i in range(1, 51)]


# -- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params", "status", "code"),
    [
        ("/exports/secret.csv", {}, 404, "unknown_table"),
        ("/exports/pg_class.csv", {}, 404, "unknown_table"),
        ("/exports/ghost.csv", {}, 404, "unknown_table"),  # allowed, not in the database
        ("/exports/nosuch.demo.ndjson", {}, 404, "unknown_table"),  # no such schema
        ("/exports/demo.csv", {"columns": "id,nope"}, 400, "invalid_column"),
        ("/exports/demo.csv", {"columns": "id;DROP TABLE demo"}, 400, "invalid_column"),
        ("/exports/demo.csv", {"where.nope": "1"}, 400, "invalid_filter"),
        ("/exports/demo.csv", {"where.id": "abc"}, 400, "invalid_filter"),
        ("/exports/demo.csv", {"where.id": "99999999999999999999"}, 400, "invalid_filter"),
        ("/exports/demo.csv", {"where.amount.lt": "lots"}, 400, "invalid_filter"),
        ("/exports/demo.csv", {"where.name": "a\x00b"}, 400, "invalid_filter"),
        (
            "/exports/demo.csv",
            {"where.created_at.gt": "2024-01-01T00:00+02:00"},
            400,
            "invalid_filter",
        ),
        ("/exports/kinds.csv", {"where.tag": "not-a-uuid"}, 400, "invalid_filter"),
        ("/exports/kinds.csv", {"where.at.gt": "soon"}, 400, "invalid_filter"),
        ("/exports/kinds.csv", {"where.addr": "not an address"}, 400, "invalid_filter"),
        ("/exports/demo.csv", {"order_by": "--id"}, 400, "invalid_order_by"),
        ("/exports/demo.ndjson", {"limit": "-1"}, 400, "invalid_limit"),
        ("/exports/demo.ndjson", {"numeric": "float"}, 400, "invalid_numeric"),
        ("/exports/demo.ndjson", {"numeric": ""}, 400, "invalid_numeric"),
        (
            "/exports/demo.ndjson",
            [("numeric", "number"), ("numeric", "string")],
            400,
            "invalid_numeric",
        ),
        ("/exports/demo.csv", {"numeric": "number"}, 400, "unknown_parameter"),  # NDJSON only
        ("/exports/demo.ndjson", {"colums": "id"}, 400, "unknown_parameter"),
    ],
)
def test_refusals(http: httpx.Client, path: str, params: Any, status: int, code: str) -> None:
    assert_error(http.get(path, params=params), status, code)


# -- failures after the first byte ---------------------------------------------------------


@pytest.mark.parametrize("format", ["csv", "ndjson"])
def test_a_query_failing_mid_stream_ends_with_the_marker(http: httpx.Client, format: str) -> None:
    response = http.get(f"/exports/boom.{format}", params={"order_by": "id"})
    assert response.status_code == 200  # the failure came after the first byte
    body = response.content
    if format == "csv":
        start_of_marker = body.rindex(b"\r\n#error,") + 2
        marker = body[start_of_marker:]
        assert marker == b"#error,database_error,DivisionByZeroError: division by zero\r\n"
        rows = parse_csv(body[:start_of_marker])[1:]
        assert rows == [[str(i), demo_row(i)["name"]] for i in range(1, len(rows) + 1)]
    else:
        lines = parse_ndjson(body)
        marker_line = lines.pop()
        assert marker_line == {
            "error": "database_error",
            "detail": "DivisionByZeroError: division by zero",
        }
        rows = [[line["id"], line["name"]] for line in lines]
        assert rows == [[i, demo_row(i)["name"]] for i in range(1, len(rows) + 1)]
    assert 0 < len(rows) < BOOM_AT  # every row before the failure, whole; none after it


def test_a_backend_terminated_mid_stream(
    server: ServerProcess, filled: dict[str, str], http: httpx.Client
) -> None:
    body = bytearray()
    with (
        httpx.Client(base_url=server.url, timeout=30.0, headers=IDENTITY) as client,
        client.stream("GET", "/exports/big.csv") as response,
    ):
        assert response.status_code == 200
        chunks = response.iter_raw()
        body += next(chunks) + next(chunks)  # then stop reading: the export waits on us
        terminated = run(_terminate(filled["dsn"]))
        assert terminated == 1  # the export's connection, and only it
        for chunk in chunks:
            body += chunk
    marker_at = body.rindex(b"\r\n#error,") + 2
    assert body[marker_at:].startswith(b"#error,database_error,")
    assert body.endswith(b"\r\n") and body.count(b"\r\n#error,") == 1
    rows = parse_csv(bytes(body[:marker_at]))
    assert rows[0] == ["id", "pad"]
    assert 0 < len(rows) - 1 < BIG_ROWS
    assert rows[1:] == [[str(i), BIG_PAD] for i in range(1, len(rows))]
    # The server is fine, and so is its pool: the next exports are whole.
    assert http.get("/healthz").status_code == 200
    for _ in range(3):
        small = http.get("/exports/demo.csv", params={"limit": "5"})
        assert parse_csv(small.content)[1:] == [csv_row(demo_row(i)) for i in range(1, 6)]


async def _terminate(dsn: str) -> int:
    connection = await asyncpg.connect(dsn)
    try:
        # The export's backend is the one not idle: it holds an open cursor in a transaction.
        pids = await connection.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND state <> 'idle' AND backend_type = 'client backend'"
        )
        for record in pids:
            await connection.execute("SELECT pg_terminate_backend($1)", record["pid"])
        return len(pids)
    finally:
        await connection.close()


# -- the export job ------------------------------------------------------------------------


def test_export_job_from_postgres(http: httpx.Client, server: ServerProcess) -> None:
    params = {
        "table": "demo",
        "format": "ndjson",
        "numeric": "number",
        "columns": ["id", "name", "amount"],
        "where": {"active": False, "email.null": True, "amount.gt": "10.005"},
        "order_by": ["-id"],
        "limit": 40,
    }
    job = start(http, params)
    events = follow(server, job["id"])
    assert events[-1].event == "result", events[-1]
    result = data(events[-1])
    content = (server.files / result["path"]).read_bytes()  # type: ignore[attr-defined]
    query = {
        "columns": "id,name,amount",
        "where.active": "false",
        "where.email.null": "true",
        "where.amount.gt": "10.005",
        "order_by": "-id",
        "limit": "40",
        "numeric": "number",
    }
    assert content == http.get("/exports/demo.ndjson", params=query).content
    expected = [
        {"id": i, "name": row["name"], "amount": row["amount"]}
        for i in range(ROWS, 0, -1)
        if not (row := demo_row(i))["active"]
        and row["email"] is None
        and row["amount"] > Decimal("10.005")
    ][:40]
    assert exact_ndjson(content) == expected
    assert result["rows"] == 40


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"table": "demo", "format": "ndjson", "numeric": "float"}, "invalid_params"),
        ({"table": "demo", "format": "csv", "numeric": "number"}, "invalid_params"),
        ({"table": "kinds", "where": {"tag": "not-a-uuid"}}, "invalid_filter"),
        ({"table": "kinds", "where": {"addr": "not an address"}}, "invalid_filter"),
        ({"table": "ghost"}, "unknown_table"),
    ],
)
def test_export_job_refusals(http: httpx.Client, params: dict[str, Any], code: str) -> None:
    response = http.post("/jobs", json={"kind": "export", "params": params})
    assert response.status_code == 422, response.text
    assert response.json()["error"] == code


# -- SQLite: numeric=number there too ------------------------------------------------------


async def test_numeric_number_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'numbers.db'}"
    await fill_demo(url, 300)
    app = create_app(Settings(database_url=url))
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            body = (await client.get("/exports/demo.ndjson?numeric=number")).content
            strings = (await client.get("/exports/demo.ndjson")).content
            refused = await client.get("/exports/demo.ndjson?numeric=decimal")
    finally:
        await app.state.services.aclose()
    assert b'"amount":3.70,' in body and b'"amount":-4.07,' in body  # rows 10 and 11
    expected = [demo_row(i) for i in range(1, 301)]
    assert exact_ndjson(body) == [{**json_row(row), "amount": row["amount"]} for row in expected]
    assert parse_ndjson(strings) == [json_row(row) for row in expected]
    assert_error(refused, 400, "invalid_numeric")
    assert all(isinstance(row["amount"], decimal.Decimal) for row in exact_ndjson(body))


# -- sluiceway demo-data -------------------------------------------------------------------


def test_demo_data_command_on_postgres(filled: dict[str, str]) -> None:
    arguments = ["--rows", "120", "--database", filled["url"], "--table", "reports.cli"]
    result = CliRunner().invoke(demo_data, arguments)
    assert result.exit_code == 0, result.output
    assert "120 rows written to 'reports.cli'" in result.output
    assert "postgresql+asyncpg://" in result.output
    held = database_rows(filled["dsn"], "SELECT * FROM reports.cli ORDER BY id")
    assert held == [demo_row(i) for i in range(1, 121)]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("nosuch.demo", 'InvalidSchemaNameError: schema "nosuch" does not exist'),
        ("reports.", "give NAME or SCHEMA.NAME"),
    ],
)
def test_demo_data_command_refusals_on_postgres(
    filled: dict[str, str], table: str, message: str
) -> None:
    result = CliRunner().invoke(demo_data, ["--database", filled["url"], "--table", table])
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output and "[SQL:" not in result.output
