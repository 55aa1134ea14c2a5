"""The ``export`` job: a table of ``settings.export_tables`` to a file under
``files_dir/exports/``, downloadable from ``/files/exports/<name>`` when it is done.

``POST /jobs`` with::

    {"kind": "export",
     "params": {"table": "demo", "format": "csv", "columns": ["id", "name"],
                "where": {"active": true, "amount.gt": "100"}, "order_by": ["-id"],
                "limit": 1000, "numeric": "string"}}

The filters are those of ``GET /exports`` (:mod:`sluiceway.transfer.export_query`), as a JSON
object; ``numeric`` (``string``, the default, or ``number``) is how NDJSON writes decimals, as
``?numeric=`` does for ``GET /exports/{table}.ndjson``. Progress counts rows, out of a
``COUNT(*)`` of the same query taken first. The rows are written to ``<name>.part`` and renamed
when complete, so a file under its final name is always whole; a job that fails or is
cancelled removes its partial file.

The result: ``{"path": "exports/<name>", "download": "/files/exports/<name>", "rows",
"bytes", "sha256", "table", "format"}`` (``path`` is relative to ``files_dir``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sluiceway.jobs.progress import Progress
from sluiceway.jobs.registry import JobFailed, JobRefused, JobRegistry
from sluiceway.transfer.export_query import ExportQuery, ExportQueryError, build_select
from sluiceway.transfer.exports import (
    ExportDatabase,
    ExportError,
    check_table,
    describe_error,
    is_database_error,
    iter_chunks,
    open_export,
    reflect_table,
    refused_value,
)
from sluiceway.transfer.row_formats import encoder_for

# SQLAlchemy is imported where it is used: registering the kind must not load it.

#: Subdirectory of ``files_dir`` that export jobs write to.
EXPORTS_SUBDIR = "exports"

Scalar = str | int | float | bool | None


class ExportParams(BaseModel):
    """The parameters of an ``export`` job."""

    model_config = ConfigDict(extra="forbid")

    table: str = Field(min_length=1, max_length=200)
    format: Literal["csv", "ndjson"] = "csv"
    columns: list[str] | None = None
    #: ``{"<column>": value}`` or ``{"<column>.<op>": value}``; ``null``: IS NULL.
    where: dict[str, Scalar] = Field(default_factory=dict)
    #: Column names, ``-`` first for descending (a comma-separated string works too).
    order_by: list[str] = Field(default_factory=list)
    limit: int | None = Field(default=None, ge=0)
    #: How NDJSON writes decimals: exact strings, or JSON numbers with their exact text.
    numeric: Literal["string", "number"] = "string"

    @field_validator("columns", "order_by", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return [name.strip() for name in value.split(",")] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _numeric_is_for_ndjson(self) -> ExportParams:
        if self.numeric != "string" and self.format != "ndjson":
            raise ValueError("numeric applies to the ndjson format only")
        return self

    def query(self) -> ExportQuery:
        return ExportQuery.from_values(self.columns, self.where, self.order_by, self.limit)


@dataclass(frozen=True, slots=True)
class ExportContext:
    """What export jobs need: the database, which of its tables may be exported, and the
    directory the files go to (``files_dir/exports/``)."""

    database: ExportDatabase
    tables: Sequence[str]
    files_dir: Path


async def check_export(context: ExportContext, params: ExportParams) -> None:
    """Refuse (422) a table that is not exportable or a query the table cannot answer."""
    query = params.query()
    try:
        check_table(params.table, context.tables)
        async with context.database.engine.connect() as connection:
            statement = build_select(await reflect_table(connection, params.table), query)
            # Run with no rows wanted: a value the database refuses (an integer too large for
            # it, a malformed UUID) is a 422 now rather than a job that fails.
            await connection.execute(statement.limit(0))
    except ExportQueryError as exc:
        raise JobRefused(422, exc.code, exc.detail) from None
    except ExportError as exc:
        raise JobRefused(422 if exc.status == 404 else exc.status, exc.code, exc.detail) from None
    except Exception as exc:
        if not is_database_error(exc):
            raise
        refused = refused_value(exc, query)
        if refused is not None:
            raise JobRefused(422, refused.code, refused.detail) from None
        raise JobRefused(503, "database_unavailable", describe_error(exc)) from None


async def run_export(progress: Progress, params: ExportParams) -> dict[str, Any]:
    """Write the export to ``files_dir/exports/<table>-<job id>.<format>``."""
    context: ExportContext = progress.context
    try:
        cursor = await open_export(
            context.database.engine, params.table, params.query(), count=True
        )
    except ExportQueryError as exc:  # the table changed since the check
        raise JobFailed(exc.code, exc.detail) from None
    except ExportError as exc:
        raise JobFailed(exc.code, exc.detail) from None
    progress.set_total(cursor.total)
    encoder = encoder_for(params.format, cursor.columns, numeric=params.numeric)
    directory = context.files_dir / EXPORTS_SUBDIR
    name = f"{_safe(params.table)}-{progress.job_id}.{encoder.extension}"
    final, partial = directory / name, directory / (name + ".part")
    digest = hashlib.sha256()
    size = 0
    try:
        directory.mkdir(parents=True, exist_ok=True)
        # Plain blocking writes: 64 KiB into the page cache takes microseconds, and unlike a
        # write in a thread it cannot outlive a cancelled job (whose file is removed at once).
        with partial.open("wb") as file:
            async for chunk in iter_chunks(cursor, encoder):
                file.write(chunk)
                digest.update(chunk)
                size += len(chunk)
                await progress.update(encoder.rows)
        os.replace(partial, final)
    except Exception as exc:
        partial.unlink(missing_ok=True)
        if isinstance(exc, OSError):  # the file (SQLAlchemy wraps the database's own)
            raise JobFailed("write_failed", describe_error(exc)) from None
        if is_database_error(exc):
            raise JobFailed("database_error", describe_error(exc)) from None
        raise
    except BaseException:
        partial.unlink(missing_ok=True)  # cancelled (or a bug): no partial file stays behind
        raise
    finally:
        await cursor.aclose()
    await progress.update(encoder.rows)
    return {
        "path": f"{EXPORTS_SUBDIR}/{name}",
        "download": f"/files/{EXPORTS_SUBDIR}/{name}",
        "rows": encoder.rows,
        "bytes": size,
        "sha256": digest.hexdigest(),
        "table": params.table,
        "format": params.format,
    }


def _safe(name: str) -> str:
    """A table name as part of a file name (letters, digits, ``_ . -``)."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "_.-") else "_" for c in name)


def register_export_kind(registry: JobRegistry) -> None:
    registry.register("export", ExportParams, run_export, check=check_export, replace=True)


__all__ = ["EXPORTS_SUBDIR", "ExportParams", "check_export", "register_export_kind", "run_export"]
