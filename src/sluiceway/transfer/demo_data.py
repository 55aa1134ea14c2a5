"""The ``demo`` table: something to export, with the values that break naive CSV writers.

Row ``i`` (from 1) is a pure function of ``i`` (:func:`demo_row`), so a test can tell exactly
what an export of it must contain. Every fifth name is a troublemaker — quotes, commas, line
breaks (LF, CRLF, CR), a leading ``#``, non-ASCII text, emoji, surrounding spaces, the empty
string — and every seventh email is NULL.

>>> demo_row(5)["name"], demo_row(7)["email"], demo_row(1)["amount"]
('O\\'Brien, "Bob"', None, Decimal('0.37'))
>>> await fill_demo("sqlite+aiosqlite:///demo.db", 1_000_000)       # doctest: +SKIP
>>> await fill_demo("postgresql+asyncpg://app@db.internal/app", 10_000, table="reports.demo")
... # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Boolean, Column, DateTime, Integer, MetaData, Numeric, Table, Text, insert
from sqlalchemy.ext.asyncio import create_async_engine

#: Names that quoting, line ends and encodings get wrong.
TRICKY_NAMES: tuple[str, ...] = (
    'O\'Brien, "Bob"',
    "line one\nline two",
    "windows\r\nline end",
    "old mac\rline end",
    "#not a comment",
    "Zoë Ünïcödé 日本語 🚀",
    "  padded  ",
    "",
    "tab\tand;semicolon",
    '"quoted"',
    "back\\slash",
    "#error,database_error,not really",
)

EPOCH = dt.datetime(2024, 1, 1)

#: Rows inserted per ``executemany``.
BATCH_ROWS = 10_000


def demo_table(metadata: MetaData, name: str = "demo", *, schema: str | None = None) -> Table:
    """The demo table's definition: id, name, email, amount, created_at, active."""
    return Table(
        name,
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("name", Text, nullable=False),
        Column("email", Text),
        Column("amount", Numeric(12, 2), nullable=False),
        Column("created_at", DateTime, nullable=False),
        Column("active", Boolean, nullable=False),
        schema=schema,
    )


def demo_row(i: int) -> dict[str, Any]:
    """Row ``i`` of the demo table, as it reads back from the database."""
    cents = (i * 37) % 1_000_000 * (-1 if i % 11 == 0 else 1)
    return {
        "id": i,
        "name": TRICKY_NAMES[(i // 5 - 1) % len(TRICKY_NAMES)] if i % 5 == 0 else f"User {i}",
        "email": None if i % 7 == 0 else f"user{i}@example.com",
        "amount": decimal.Decimal(cents).scaleb(-2),
        "created_at": EPOCH + dt.timedelta(seconds=17 * i),
        "active": i % 3 != 0,
    }


def demo_rows(first: int, last: int) -> Iterator[dict[str, Any]]:
    """Rows ``first`` to ``last`` (inclusive)."""
    return (demo_row(i) for i in range(first, last + 1))


async def fill_demo(
    database_url: str, rows: int, *, table: str = "demo", batch: int = BATCH_ROWS
) -> None:
    """(Re)create ``table`` (or ``schema.table``, as ``/exports/schema.table.csv`` names it)
    in the database at ``database_url`` and insert ``rows`` rows, ``batch`` per
    ``executemany``, in one transaction. With SQLite the database is switched to WAL mode, so
    that exports (readers) and writers do not block each other."""
    schema, _, name = table.rpartition(".")
    engine = create_async_engine(database_url)
    try:
        demo = demo_table(MetaData(), name, schema=schema or None)
        async with engine.connect() as connection:
            if engine.dialect.name == "sqlite":  # before any transaction begins
                await connection.exec_driver_sql("PRAGMA journal_mode=WAL")
            await connection.run_sync(demo.drop, checkfirst=True)
            await connection.run_sync(demo.create)
            statement = insert(demo)
            for first in range(1, rows + 1, batch):
                last = min(first + batch - 1, rows)
                await connection.execute(statement, list(demo_rows(first, last)))
            await connection.commit()
    finally:
        await engine.dispose()


__all__ = ["BATCH_ROWS", "TRICKY_NAMES", "demo_row", "demo_rows", "demo_table", "fill_demo"]
