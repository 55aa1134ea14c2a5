"""What an export asks for — columns, filters, order, limit — checked against a reflected table.

Names from a request are only ever looked up among the table's reflected columns, never put
into SQL text; values are bound parameters, converted to the column's Python type first (so
``where.id.gt=9`` compares numbers, not strings).  A value is bound with the column's type
less its length, precision and scale (PostgreSQL's driver casts every parameter: compared as
``NUMERIC(12, 2)``, ``9999.595`` would be rounded to ``9999.60``), and integers as ``BIGINT``.
A time without an offset compared with a column ``WITH TIME ZONE`` is taken as UTC; a time with
an offset compared with a column without one is refused (which zone its values are in is not
known).

The query-string form (``GET /exports/demo.csv?...``):

============================  ==================================================
``columns=id,name``           these columns, in this order (default: all)
``where.<col>=<value>``       equality; repeat keys to AND several conditions
``where.<col>.<op>=<value>``  ``op``: ``ne``, ``gt``, ``gte``, ``lt``, ``lte``;
                              ``null`` with ``true``/``false`` (IS [NOT] NULL)
``order_by=-amount,id``       ``-`` for descending (default: the primary key)
``limit=100``                 at most this many rows
============================  ==================================================

>>> query = ExportQuery.from_params([("columns", "id,name"), ("where.id.gt", "10")])
>>> query.columns, query.filters
(('id', 'name'), (Filter(column='id', op='gt', value='10'),))
"""

from __future__ import annotations

import datetime as dt
import decimal
import operator
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: parsing a query needs no SQLAlchemy
    from sqlalchemy import Column, Select, Table

OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}
#: Not a comparison: ``where.<col>.null=true`` is ``IS NULL``, ``=false`` is ``IS NOT NULL``.
NULL_OP = "null"

_TRUE = frozenset({"true", "1", "yes", "on", "t"})
_FALSE = frozenset({"false", "0", "no", "off", "f"})


class ExportQueryError(ValueError):
    """A request that names something the table lacks, or a value that cannot be compared.

    ``code``: ``invalid_column``, ``invalid_filter``, ``invalid_order_by``, ``invalid_limit``
    or ``unknown_parameter``.
    """

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Filter:
    """``column op value``; ``value`` as given (a string from a URL, or a JSON scalar)."""

    column: str
    op: str
    value: Any


@dataclass(frozen=True, slots=True)
class ExportQuery:
    """Columns (``None``: all), filters (ANDed), order (``-`` prefix: descending), limit."""

    columns: tuple[str, ...] | None = None
    filters: tuple[Filter, ...] = ()
    order_by: tuple[str, ...] = ()
    limit: int | None = None

    @classmethod
    def from_params(cls, params: Iterable[tuple[str, str]]) -> ExportQuery:
        """Parse query-string pairs; unknown parameters raise :class:`ExportQueryError`."""
        columns: tuple[str, ...] | None = None
        order_by: tuple[str, ...] = ()
        limit: int | None = None
        where: list[tuple[str, Any]] = []
        for key, value in params:
            if key == "columns":
                columns = split_names(value, "columns", "invalid_column")
            elif key == "order_by":
                order_by = split_names(value, "order_by", "invalid_order_by")
            elif key == "limit":
                limit = parse_limit(value)
            elif key.startswith("where."):
                where.append((key.removeprefix("where."), value))
            else:
                raise ExportQueryError(
                    "unknown_parameter",
                    f"unknown parameter {key[:100]!r}: use columns, where.<column>[.<op>], "
                    "order_by, limit",
                )
        return cls(columns, tuple(_filters(where)), order_by, limit)

    @classmethod
    def from_values(
        cls,
        columns: Iterable[str] | None = None,
        where: Mapping[str, Any] | None = None,
        order_by: Iterable[str] = (),
        limit: int | None = None,
    ) -> ExportQuery:
        """The same from Python values (a job's JSON parameters): ``where`` maps
        ``"<col>"`` or ``"<col>.<op>"`` to a value; ``None`` as a value means IS NULL."""
        return cls(
            tuple(columns) if columns is not None else None,
            tuple(_filters((where or {}).items())),
            tuple(order_by),
            limit,
        )


def split_names(value: str, what: str, code: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in value.split(","))
    if not all(names):
        raise ExportQueryError(code, f"{what} must be a comma-separated list of column names")
    return names


def parse_limit(value: str | int) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 19:
        return int(value)
    raise ExportQueryError("invalid_limit", "limit must be a non-negative integer")


def _filters(pairs: Iterable[tuple[str, Any]]) -> Iterable[Filter]:
    """``("amount.gt", "10")`` → ``Filter("amount", "gt", "10")``; the column is checked
    later, against the table (a column name may itself contain dots)."""
    for key, value in pairs:
        column, dot, op = key.rpartition(".")
        if dot and (op in OPERATORS or op == NULL_OP):
            yield Filter(column, op, value)
        else:
            yield Filter(key, "eq", value)


def build_select(table: Table, query: ExportQuery) -> Select[Any]:
    """The ``SELECT`` for ``query`` on ``table``; raises :class:`ExportQueryError`.

    Without ``order_by`` rows come in primary-key order (stable, and cheap to stream).
    """
    from sqlalchemy import BigInteger, literal, select

    known = table.columns
    names = query.columns if query.columns is not None else tuple(known.keys())
    if len(set(names)) != len(names):
        raise ExportQueryError("invalid_column", "columns lists a column twice")
    statement = select(*(_column(table, name, "invalid_column") for name in names))
    for where in query.filters:
        column = _column(table, where.column, "invalid_filter")
        statement = statement.where(_condition(column, where))
    order = query.order_by or tuple(c.name for c in table.primary_key.columns)
    for name in order:
        descending = name.startswith("-")
        column = _column(table, name.removeprefix("-"), "invalid_order_by")
        statement = statement.order_by(column.desc() if descending else column.asc())
    if query.limit is not None:
        # BIGINT: asyncpg would send an INTEGER, too small for a limit of 3,000,000,000.
        statement = statement.limit(literal(query.limit, BigInteger()))
    return statement


def _column(table: Table, name: str, code: str) -> Column[Any]:
    column = table.columns.get(name)
    if column is None:
        raise ExportQueryError(
            code,
            f"table {table.name!r} has no column {name[:100]!r} "
            f"(columns: {', '.join(table.columns.keys())})",
        )
    return column


def _condition(column: Column[Any], where: Filter) -> Any:
    if where.op == NULL_OP:
        wanted = coerce(where.value, bool, column.name)
        return column.is_(None) if wanted else column.is_not(None)
    if where.value is None:  # JSON null: only equality makes sense
        if where.op == "eq":
            return column.is_(None)
        if where.op == "ne":
            return column.is_not(None)
        detail = f"{column.name}.{where.op}: null cannot be ordered"
        raise ExportQueryError("invalid_filter", detail)
    value = coerce(where.value, _python_type(column), column.name)
    if isinstance(value, dt.datetime):
        value = _in_zone_of(column, value)
    return OPERATORS[where.op](column, _bind(column, value))


def _bind(column: Column[Any], value: Any) -> Any:
    """``value`` as a bound parameter of the column's type less its bounds (see the module's
    docstring): a cast to ``NUMERIC(12, 2)`` or ``VARCHAR(3)`` would round or cut it."""
    from sqlalchemy import BigInteger, Enum, Integer, String, Text, literal

    kind = column.type
    if isinstance(kind, Integer):
        return literal(value, BigInteger())
    if isinstance(kind, String) and not isinstance(kind, Enum):
        return literal(value, Text())
    bounded = [a for a in ("length", "precision", "scale") if getattr(kind, a, None) is not None]
    if bounded:
        kind = kind.copy()
        for attribute in bounded:
            setattr(kind, attribute, None)
    return literal(value, kind)


def _in_zone_of(column: Column[Any], value: dt.datetime) -> dt.datetime:
    """A time comparable with the column: UTC when it has no offset and the column has a time
    zone; refused when it has one and the column has none."""
    zoned = bool(getattr(column.type, "timezone", False))
    if zoned and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    if not zoned and value.tzinfo is not None:
        raise ExportQueryError(
            "invalid_filter",
            f"{column.name}: the column has no time zone: give the time without an offset",
        )
    return value


def _python_type(column: Column[Any]) -> type | None:
    try:
        return column.type.python_type
    except NotImplementedError:  # a type SQLAlchemy cannot name: compare as given
        return None


def coerce(value: Any, kind: type | None, name: str = "value") -> Any:
    """``value`` (a string or JSON scalar) as ``kind``; raises :class:`ExportQueryError`.

    >>> coerce("12.50", decimal.Decimal), coerce("yes", bool), coerce("2024-05-01", dt.date)
    (Decimal('12.50'), True, datetime.date(2024, 5, 1))
    """
    if kind is None:
        return value
    checked = kind is int or kind is str  # a range, a NUL: checked even on the right type
    if not checked and isinstance(value, kind) and not isinstance(value, bool):
        return value
    if kind is bool and isinstance(value, bool):
        return value
    text = str(value).strip()
    try:
        if kind is bool:
            lowered = text.lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise ValueError("expected true or false")
        if kind is int:
            number = int(text)
            if not -(2**63) <= number < 2**63:  # what a database integer (BIGINT) can hold
                raise ValueError("out of the range of a 64-bit integer")
            return number
        if kind is float:
            return float(text)
        if kind is decimal.Decimal:
            return decimal.Decimal(text)
        if kind is dt.datetime:
            return dt.datetime.fromisoformat(text)
        if kind is dt.date:
            return dt.date.fromisoformat(text)
        if kind is dt.time:
            return dt.time.fromisoformat(text)
        if kind is uuid.UUID:
            return uuid.UUID(text)
        if kind is str:
            if "\x00" in str(value):  # PostgreSQL's text cannot hold NUL: it would fail later
                raise ValueError("NUL is not allowed")
            return str(value)  # a JSON number for a text column
    except (ValueError, ArithmeticError) as exc:
        raise ExportQueryError(
            "invalid_filter", f"{name}: {str(value)[:100]!r} is not a valid {kind.__name__}: {exc}"
        ) from None
    return value


__all__ = [
    "NULL_OP",
    "OPERATORS",
    "ExportQuery",
    "ExportQueryError",
    "Filter",
    "build_select",
    "coerce",
    "parse_limit",
    "split_names",
]
