"""Rows to bytes, sans-I/O: CSV (RFC 4180) and NDJSON encoders for streamed exports.

An encoder turns rows (sequences of Python values, one per column) into bytes, buffering them
until :meth:`RowEncoder.take` hands over a chunk; the caller decides when (every ~64 KiB), so
the encoder never holds more than one chunk.  Both formats end a failed export with an error
marker that no data row can produce:

* CSV: a last line ``#error,<code>,<detail>``.  Data rows whose first field starts with ``#``
  are written with every field quoted, so an *unquoted* ``#`` at the start of a line only ever
  begins the marker.
* NDJSON: a last line ``{"error": "<code>", "detail": "<detail>"}``: the same shape as the
  server's JSON errors.

Decimals (SQL ``NUMERIC``/``DECIMAL``) are never rounded: CSV writes their exact text; NDJSON
writes them as strings by default (``"12.50"``: exact for every reader, JavaScript's included,
whose numbers are doubles) or, with ``numeric="number"``, as JSON numbers whose literal is the
exact decimal text (``12345678901234567890.12``; what a reader with exact decimals, such as
Python's ``json.loads(..., parse_float=Decimal)``, gets back unchanged).  ``NaN`` and the
infinities, which JSON numbers cannot write, stay strings either way.

>>> encoder = CsvEncoder(["code", "note"])
>>> encoder.add([("a1", 'say "hi", then\\nleave'), ("#2", None)])
>>> encoder.take()
b'code,note\\r\\na1,"say ""hi"", then\\nleave"\\r\\n"#2",""\\r\\n'
>>> encoder.error_marker("database_error", "disk I/O error")
b'#error,database_error,disk I/O error\\r\\n'
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import decimal
import io
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import orjson

Row = Sequence[Any]

#: Values the CSV writer renders well as they are (``str()``/``repr()`` of them).
_CSV_NATIVE = (str, int, float, decimal.Decimal)
_AS_IS = frozenset({*_CSV_NATIVE, type(None)})


class RowEncoder(Protocol):
    """What an export needs from a format."""

    media_type: str
    extension: str
    #: Rows encoded so far.
    rows: int

    def add(self, rows: Iterable[Row]) -> None:
        """Encode ``rows`` into the buffer."""

    def pending(self) -> int:
        """About how many bytes are buffered (characters for CSV: close enough for sizing)."""

    def take(self) -> bytes:
        """The buffered bytes; the buffer is empty afterwards."""

    def error_marker(self, code: str, detail: str) -> bytes:
        """The last line of an export that failed midway."""


def csv_cell(value: Any) -> Any:
    """A value as the CSV writer should see it: ISO 8601 times, ``true``/``false``, base64
    bytes; ``None`` stays ``None`` (an empty field)."""
    if value is None or type(value) in _CSV_NATIVE:
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(value).decode()
    if isinstance(value, _CSV_NATIVE):  # subclasses, e.g. an IntEnum
        return value
    if isinstance(value, dict | list):  # a JSON column: its JSON text, not Python's repr
        return orjson.dumps(value, default=json_default).decode()
    return str(value)


_BOOL_TEXT = {True: "true", False: "false"}


def csv_column(values: Sequence[Any]) -> Sequence[Any]:
    """One column of a batch, converted with :func:`csv_cell` (fast paths for the common
    types, picked from the set of types present)."""
    kinds = set(map(type, values))
    if kinds <= _AS_IS:
        return values
    if kinds <= {bool, type(None)}:
        return list(map(_BOOL_TEXT.get, values, values))
    if len(kinds) == 1 and kinds <= {dt.datetime, dt.date, dt.time}:
        return [value.isoformat() for value in values]
    return list(map(csv_cell, values))


def _may_start_with_hash(values: Sequence[Any]) -> bool:
    """Whether some text value of a first column may start with ``#`` (a false alarm only
    costs the row-by-row path)."""
    kinds = set(map(type, values))
    if str not in kinds:
        return False
    texts = values if kinds == {str} else [value for value in values if type(value) is str]
    joined = "\n".join(texts)
    return joined.startswith("#") or "\n#" in joined


def json_default(value: Any) -> Any:
    """What orjson cannot encode itself: decimals as strings (exact, never a rounded float),
    bytes as base64, anything else (UUIDs aside, which orjson handles) as ``str()``."""
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(value).decode()
    if isinstance(value, uuid.UUID):  # pragma: no cover - orjson encodes UUIDs natively
        return str(value)
    return str(value)


def json_number_default(value: Any) -> Any:
    """:func:`json_default`, but finite decimals as JSON numbers written with their exact text
    (an :class:`orjson.Fragment`: orjson copies it as it is, no float in between)."""
    if isinstance(value, decimal.Decimal) and value.is_finite():
        # str() of a finite Decimal is always a valid JSON number ("-1E-30", "0.00", "12.5").
        return orjson.Fragment(str(value))
    return json_default(value)


#: NDJSON's ways of writing decimals (``numeric=``): the first is the default.
NUMERIC_MODES: dict[str, Callable[[Any], Any]] = {
    "string": json_default,
    "number": json_number_default,
}


class CsvEncoder:
    """CSV with a header row, ``\\r\\n`` line ends and minimal quoting (RFC 4180)."""

    media_type = "text/csv; charset=utf-8; header=present"
    extension = "csv"

    def __init__(self, columns: Sequence[str], *, header: bool = True) -> None:
        self.rows = 0
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer, lineterminator="\r\n")
        # Rows starting with "#" are quoted throughout, so that they cannot pass for the marker.
        self._quoted = csv.writer(self._buffer, lineterminator="\r\n", quoting=csv.QUOTE_ALL)
        if header:
            self._write(list(columns))

    def _write(self, row: Row) -> None:
        first = row[0] if row else None
        if isinstance(first, str) and first.startswith("#"):
            self._quoted.writerow(row)
        else:
            self._writer.writerow(row)

    def add(self, rows: Iterable[Row]) -> None:
        # Column by column: one look at the types present picks a conversion that runs at C
        # speed (map over a method), instead of a Python call per value.
        batch = rows if isinstance(rows, list | tuple) else list(rows)
        if not batch:
            return
        columns = [csv_column(values) for values in zip(*batch, strict=True)]
        if columns and _may_start_with_hash(columns[0]):
            for row in zip(*columns, strict=True):
                self._write(row)
        else:
            self._writer.writerows(zip(*columns, strict=True))
        self.rows += len(batch)

    def pending(self) -> int:
        return self._buffer.tell()

    def take(self) -> bytes:
        data = self._buffer.getvalue().encode()
        self._buffer.seek(0)
        self._buffer.truncate()
        return data

    def error_marker(self, code: str, detail: str) -> bytes:
        line = io.StringIO()
        csv.writer(line, lineterminator="\r\n").writerow(["#error", code, detail])
        return line.getvalue().encode()


class NdjsonEncoder:
    """One JSON object per line, keys in column order; decimals as exact strings, or as exact
    JSON numbers with ``numeric="number"`` (see :data:`NUMERIC_MODES`); times as ISO 8601,
    bytes as base64."""

    media_type = "application/x-ndjson"
    extension = "ndjson"

    def __init__(self, columns: Sequence[str], *, numeric: str = "string") -> None:
        try:
            self._default = NUMERIC_MODES[numeric]
        except KeyError:
            modes = ", ".join(NUMERIC_MODES)
            raise ValueError(f"unknown numeric mode {numeric!r}: use one of {modes}") from None
        self.rows = 0
        self._keys = tuple(str(name) for name in columns)  # orjson refuses str subclasses
        self._buffer = bytearray()

    def add(self, rows: Iterable[Row]) -> None:
        keys = self._keys
        dumps: Callable[..., bytes] = orjson.dumps
        default = self._default
        option = orjson.OPT_APPEND_NEWLINE
        buffer = self._buffer
        count = 0
        for row in rows:
            buffer += dumps(dict(zip(keys, row, strict=True)), default=default, option=option)
            count += 1
        self.rows += count

    def pending(self) -> int:
        return len(self._buffer)

    def take(self) -> bytes:
        data = bytes(self._buffer)
        self._buffer.clear()
        return data

    def error_marker(self, code: str, detail: str) -> bytes:
        return orjson.dumps({"error": code, "detail": detail}, option=orjson.OPT_APPEND_NEWLINE)


#: The formats by name (and file extension).
FORMATS: dict[str, Callable[[Sequence[str]], RowEncoder]] = {
    "csv": CsvEncoder,
    "ndjson": NdjsonEncoder,
}


def encoder_for(format: str, columns: Sequence[str], *, numeric: str = "string") -> RowEncoder:
    """A fresh encoder of ``format`` (``csv`` or ``ndjson``) for ``columns``; ``numeric``
    (``string`` or ``number``) is how NDJSON writes decimals (CSV always writes their text).

    >>> encoder_for("ndjson", ["a"]).media_type
    'application/x-ndjson'
    """
    if format == "ndjson":
        return NdjsonEncoder(columns, numeric=numeric)
    try:
        return FORMATS[format](columns)
    except KeyError:
        raise ValueError(f"unknown format {format!r}: use one of {', '.join(FORMATS)}") from None


__all__ = [
    "FORMATS",
    "NUMERIC_MODES",
    "CsvEncoder",
    "NdjsonEncoder",
    "RowEncoder",
    "csv_cell",
    "encoder_for",
    "json_default",
    "json_number_default",
]
