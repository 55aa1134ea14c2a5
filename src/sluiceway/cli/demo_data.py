"""``sluiceway demo-data``: create and fill the ``demo`` table that ``/exports`` serves."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import click

from sluiceway.server.settings import Settings

DEFAULT_DATABASE = Settings.model_fields["database_url"].default


@click.command("demo-data")
@click.option("--rows", type=click.IntRange(min=0), default=10_000, show_default=True)
@click.option(
    "--database",
    envvar="SLUICEWAY_DATABASE_URL",
    default=DEFAULT_DATABASE,
    show_default=True,
    help="Any SQLAlchemy async URL: sqlite+aiosqlite:///file.db, "
    "postgresql+asyncpg://user@host/db (the postgres extra). [SLUICEWAY_DATABASE_URL]",
)
@click.option("--table", default="demo", show_default=True, help="NAME or SCHEMA.NAME")
def demo_data(rows: int, database: str, table: str) -> None:
    """(Re)create TABLE with ROWS rows of demo data (tricky names included).

    \b
    sluiceway demo-data --rows 1000000
    sluiceway demo-data --database postgresql+asyncpg://app@localhost/app
    curl -O http://127.0.0.1:8000/exports/demo.csv
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    from sluiceway.transfer.demo_data import fill_demo
    from sluiceway.transfer.exports import describe_error

    if not table.rpartition(".")[2] or table.startswith("."):
        raise click.BadParameter("give NAME or SCHEMA.NAME", param_hint="--table")
    try:
        url = make_url(database)
    except ArgumentError as exc:
        raise click.BadParameter(str(exc), param_hint="--database") from None
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        # Checked here: aiosqlite reports a file it cannot open from a thread, noisily.
        directory = Path(url.database).resolve().parent
        if not directory.is_dir():
            raise click.BadParameter(f"no directory {directory}", param_hint="--database")
    shown = url.render_as_string(hide_password=True)
    started = time.perf_counter()
    try:
        asyncio.run(fill_demo(database, rows, table=table))
    except (ArgumentError, SQLAlchemyError, OSError, ImportError) as exc:
        detail = describe_error(exc)  # one line: the driver's message, without the SQL
        raise click.ClickException(f"cannot fill {table!r} in {shown}: {detail}") from None
    elapsed = time.perf_counter() - started
    click.echo(f"{rows} rows written to {table!r} in {elapsed:.1f} s ({shown})")
