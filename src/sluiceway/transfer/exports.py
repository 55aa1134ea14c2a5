"""Streaming a database table as CSV or NDJSON, in constant memory, through a server-side cursor.

An export is opened before the response starts — the table reflected, the request checked
against its columns, the query executed — so that every mistake is still an HTTP status. Then
rows travel from a server-side cursor (``AsyncConnection.stream``, ``yield_per`` rows at a
time) through a :mod:`~sluiceway.transfer.row_formats` encoder into chunks of about 64 KiB;
the socket's flow control paces the cursor, so memory stays at about one chunk plus one batch
of rows whatever the table's size.

If the database fails after the response has begun (or the server shuts down), the body ends
with the format's error marker (``#error,<code>,<detail>`` for CSV, ``{"error", "detail"}``
for NDJSON) — an export is never cut short without saying so.

Use it in your own Starlette/FastAPI app:

>>> from sqlalchemy.ext.asyncio import create_async_engine
>>> from sluiceway.transfer.export_query import ExportQuery
>>> engine = create_async_engine("sqlite+aiosqlite:///app.db")
>>> async def export_orders(request):                                  # doctest: +SKIP
...     query = ExportQuery.from_params(request.query_params.multi_items())
...     cursor = await open_export(engine, "orders", query)
...     return ExportResponse(cursor, "csv", filename="orders.csv")
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from sluiceway.asgi.shutdown import register
from sluiceway.transfer.disposition import content_disposition
from sluiceway.transfer.export_query import ExportQuery, ExportQueryError, build_select
from sluiceway.transfer.row_formats import RowEncoder, encoder_for

if TYPE_CHECKING:
    from sqlalchemy import Row, Table
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncResult

# SQLAlchemy is imported where it is used, not here: a server that never exports never loads
# it (about 0.5 s of every start, and of every `sluiceway` command).

logger = logging.getLogger("sluiceway.exports")

#: Bytes gathered before a write (a batch of rows may overshoot it by one batch).
CHUNK_BYTES = 64 * 1024
#: Rows fetched from the cursor at a time: the other term of an export's memory.
YIELD_PER = 256
#: A chunk is sent after this many seconds even if smaller (a slow query still shows progress).
FLUSH_AFTER = 0.1


class ExportError(Exception):
    """An export that cannot start: ``status`` 404 (``unknown_table``) or 503
    (``database_unavailable``)."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


class ExportInterrupted(Exception):
    """Raised inside the chunk stream when the export must end early (server shutdown)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


# -- the database ---------------------------------------------------------------------------


class ExportDatabase:
    """The database exports read, connected on first use (one pool for every export: its
    engine). :class:`ExportError` 503 for a URL that cannot work. Close it with :meth:`aclose`.

    >>> database = ExportDatabase("sqlite+aiosqlite:///sluiceway.db")
    >>> cursor = await open_export(database.engine, "demo", query)          # doctest: +SKIP
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: AsyncEngine | None = None

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            from sqlalchemy.exc import ArgumentError
            from sqlalchemy.ext.asyncio import create_async_engine

            try:
                self._engine = create_async_engine(self.url)
            except (ArgumentError, ImportError) as exc:  # a bad URL, a driver not installed
                logger.error("export: cannot use the database URL: %s", exc)
                detail = f"the database URL cannot be used: {describe_error(exc)}"
                raise ExportError(503, "database_unavailable", detail) from None
        return self._engine

    async def aclose(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            await engine.dispose()


def check_table(name: str, allowed: Sequence[str]) -> str:
    """``name`` if it is one of the ``allowed`` tables; else :class:`ExportError` (404)."""
    if name not in allowed:
        raise ExportError(404, "unknown_table", f"no exportable table {name[:100]!r}")
    return name


# -- opening an export ---------------------------------------------------------------------


@dataclass(eq=False)
class ExportCursor:
    """An executed export: the reflected table, the column names in output order, and the
    open connection and streaming result (close with :meth:`aclose`)."""

    table: Table
    columns: list[str]
    connection: AsyncConnection
    result: AsyncResult[Any]
    #: ``COUNT(*)`` of the same query, when asked for (a job's progress total).
    total: int | None = None
    _closed: bool = field(default=False, repr=False)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):  # a broken connection is discarded by the pool
            await self.result.close()
        with contextlib.suppress(Exception):
            await self.connection.close()


async def reflect_table(connection: AsyncConnection, name: str) -> Table:
    """``name`` (or ``schema.name``) as the database describes it; 404 when it is missing."""
    from sqlalchemy import MetaData, Table
    from sqlalchemy.exc import NoSuchTableError

    schema, _, table = name.rpartition(".")
    try:
        return await connection.run_sync(
            lambda sync: Table(table, MetaData(), schema=schema or None, autoload_with=sync)
        )
    except NoSuchTableError:
        raise ExportError(
            404,
            "unknown_table",
            f"table {name!r} does not exist in the database (try: sluiceway demo-data)",
        ) from None


async def open_export(
    engine: AsyncEngine, table: str, query: ExportQuery, *, count: bool = False
) -> ExportCursor:
    """Reflect ``table``, check ``query`` against it, and start streaming its rows.

    Raises :class:`~sluiceway.transfer.export_query.ExportQueryError` for a request the
    table cannot answer and :class:`ExportError` for a missing table or a database that
    cannot be reached. The table name must already be trusted (see :func:`check_table`).
    """
    from sqlalchemy import func, select
    from sqlalchemy.exc import SQLAlchemyError

    try:
        connection = await engine.connect()
    except (SQLAlchemyError, OSError) as exc:
        raise _unavailable(exc) from None
    try:
        reflected = await reflect_table(connection, table)
        statement = build_select(reflected, query)
        total = None
        if count:
            counting = select(func.count()).select_from(statement.order_by(None).subquery())
            total = (await connection.execute(counting)).scalar_one()
        result = await connection.stream(statement.execution_options(yield_per=YIELD_PER))
    except BaseException as exc:
        with contextlib.suppress(Exception):
            await connection.close()
        if is_database_error(exc):
            refused = refused_value(exc, query)
            if refused is not None:
                raise refused from None
            raise _unavailable(exc) from None
        raise
    # Plain str: reflected names are a str subclass, which orjson refuses as a key.
    columns = [str(column.name) for column in statement.selected_columns]
    return ExportCursor(reflected, columns, connection, result, total)


def _unavailable(exc: BaseException) -> ExportError:
    logger.warning("export: database error before the first byte: %s", exc)
    return ExportError(503, "database_unavailable", f"the database failed: {describe_error(exc)}")


#: Packages whose exceptions are the database's (a driver's error that SQLAlchemy did not wrap:
#: asyncpg's, raised by a server-side cursor's fetch, reach us as they are).
DRIVER_PACKAGES = frozenset(
    {"asyncpg", "aiosqlite", "sqlite3", "psycopg", "psycopg2", "asyncmy", "aiomysql", "pymysql"}
)

#: SQLSTATEs that, before the first row, mean a filter's value does not suit its column: a
#: value the driver cannot send (22000), text the type cannot read (22P02, 22007, 22008),
#: bytes the encoding refuses (22021), no operator for the column's type and the value (42883).
VALUE_SQLSTATES = frozenset({"22000", "22P02", "22007", "22008", "22021", "42883"})


def is_database_error(exc: BaseException) -> bool:
    """Whether ``exc`` comes from the database: SQLAlchemy's errors, the network's, and the
    driver's own (see :data:`DRIVER_PACKAGES`)."""
    from sqlalchemy.exc import SQLAlchemyError

    if isinstance(exc, SQLAlchemyError | OSError):
        return True
    return type(exc).__module__.partition(".")[0] in DRIVER_PACKAGES


def _driver_error(exc: BaseException) -> BaseException:
    """The driver's own exception behind SQLAlchemy's wrapper and its DB-API adapter."""
    found = getattr(exc, "orig", None) or exc
    # SQLAlchemy's asyncpg adapter raises a generic "Error" from asyncpg's precise one.
    while type(found).__module__.startswith("sqlalchemy") and found.__cause__ is not None:
        found = found.__cause__
    return found


def _sqlstate(exc: BaseException) -> str | None:
    for candidate in (exc, getattr(exc, "orig", None), _driver_error(exc)):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(code, str):
            return code
    return None


def refused_value(exc: BaseException, query: ExportQuery) -> ExportQueryError | None:
    """An :class:`ExportQueryError` (400 ``invalid_filter``) when a database error before the
    first row says that one of the query's values does not suit its column; else ``None``."""
    if not query.filters or _sqlstate(exc) not in VALUE_SQLSTATES:
        return None
    detail = f"the database refused a filter's value: {describe_error(exc)}"
    return ExportQueryError("invalid_filter", detail)


def describe_error(exc: BaseException) -> str:
    """A short, one-line account of a database error (the driver's message, without the SQL
    statement and the parameters SQLAlchemy adds to its own)."""
    original = _driver_error(exc)
    message = str(original).strip().splitlines()[0] if str(original).strip() else ""
    return f"{type(original).__name__}: {message}"[:300] if message else type(original).__name__


# -- streaming -----------------------------------------------------------------------------


async def _whole_batches(result: AsyncResult[Any]) -> AsyncIterator[Sequence[Row[Any]]]:
    """``result.partitions()``, each fetch allowed to finish when the task is cancelled.

    Cancelling a fetch inside the driver (aiosqlite's thread) makes SQLAlchemy invalidate the
    connection and then log an "Error closing cursor" traceback; a cancelled export would log
    one every time. So the fetch runs in a task of its own, shielded: a cancel waits for the
    batch in flight (milliseconds), then goes on as usual from here.
    """
    batches = result.partitions()  # closed with the result, by ExportCursor.aclose
    while True:
        fetch = asyncio.ensure_future(anext(batches, None))
        try:
            batch = await asyncio.shield(fetch)
        except asyncio.CancelledError:
            while not fetch.done():
                # A Starlette response is cancelled through an anyio scope, which cancels
                # every await again: keep waiting, the batch takes milliseconds.
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait({fetch})
            raise
        if batch is None:
            return
        yield batch


async def iter_chunks(
    cursor: ExportCursor,
    encoder: RowEncoder,
    *,
    chunk_bytes: int = CHUNK_BYTES,
    stopping: Callable[[], bool] | None = None,
) -> AsyncIterator[bytes]:
    """The export as chunks of about ``chunk_bytes``: the header (if the format has one) at
    once, then rows. Database errors propagate; ``stopping()`` returning true raises
    :class:`ExportInterrupted` at the next batch."""
    loop = asyncio.get_running_loop()
    if encoder.pending():
        yield encoder.take()  # the first bytes leave before the first row is fetched
    last_sent = loop.time()
    async for batch in _whole_batches(cursor.result):
        if stopping is not None and stopping():
            raise ExportInterrupted("shutting_down", "the server is shutting down")
        encoder.add(batch)
        if encoder.pending() >= chunk_bytes or loop.time() - last_sent >= FLUSH_AFTER:
            yield encoder.take()
            last_sent = loop.time()
    if encoder.pending():
        yield encoder.take()


async def with_error_marker(
    chunks: AsyncIterator[bytes], encoder: RowEncoder
) -> AsyncIterator[bytes]:
    """``chunks``, ended by the format's error marker if they fail: the rows encoded before
    the failure are sent, then the marker, then the body ends normally."""
    try:
        async for chunk in chunks:
            yield chunk
    except ExportInterrupted as exc:
        yield encoder.take() + encoder.error_marker(exc.code, exc.detail)
    except Exception as exc:
        database = is_database_error(exc)
        logger.error("export failed after %d rows", encoder.rows, exc_info=exc)
        code = "database_error" if database else "export_failed"
        detail = describe_error(exc) if database else "the export failed"
        yield encoder.take() + encoder.error_marker(code, detail)


class ExportResponse(StreamingResponse):
    """The rows of ``cursor`` as a ``format`` (``csv``/``ndjson``) download; it closes the
    cursor when it ends, however it ends, and stops with a marker when the server shuts down.
    ``numeric`` (``string``, ``number``): how NDJSON writes decimals (see
    :mod:`~sluiceway.transfer.row_formats`).
    """

    def __init__(
        self,
        cursor: ExportCursor,
        format: str,
        *,
        filename: str | None = None,
        headers: dict[str, str] | None = None,
        numeric: str = "string",
    ) -> None:
        self.cursor = cursor
        self.encoder = encoder_for(format, cursor.columns, numeric=numeric)
        self._stopping = False
        all_headers = {
            "content-disposition": content_disposition(
                filename or f"{cursor.table.name}.{self.encoder.extension}", attachment=True
            ),
            "cache-control": "no-store",
            "x-content-type-options": "nosniff",
            **(headers or {}),
        }
        chunks = iter_chunks(cursor, self.encoder, stopping=lambda: self._stopping)
        super().__init__(
            with_error_marker(chunks, self.encoder),
            headers=all_headers,
            media_type=self.encoder.media_type,
        )

    def _stop(self) -> None:
        self._stopping = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        forget = register(self._stop)
        try:
            if scope.get("method") == "HEAD":  # the headers alone: do not run the export
                await send(
                    {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
                )
                await send({"type": "http.response.body", "body": b""})
            else:
                await super().__call__(scope, receive, send)
        finally:
            forget()
            # A client that left leaves the generator suspended: close it (and the cursor) now
            # rather than whenever it is garbage-collected.
            body = self.body_iterator
            aclose = getattr(body, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
            await self.cursor.aclose()


__all__ = [
    "CHUNK_BYTES",
    "YIELD_PER",
    "ExportCursor",
    "ExportDatabase",
    "ExportError",
    "ExportInterrupted",
    "ExportResponse",
    "check_table",
    "describe_error",
    "is_database_error",
    "iter_chunks",
    "open_export",
    "reflect_table",
    "refused_value",
    "with_error_marker",
]
