"""The ``Range`` request header (RFC 9110 §14), sans-I/O.

:func:`parse_range` answers one of three things for a representation of ``size`` bytes:

* ``None`` — ignore the header and send the whole file (``200``): it is malformed, uses a unit
  other than ``bytes``, asks for more than :data:`MAX_RANGES` pieces, or the file is empty
  (no ``Content-Range`` can describe zero bytes). RFC 9110 lets a server ignore any ``Range``
  it does not want to honour, and a malformed one must not fail the request.
* a list of ``(start, stop)`` half-open intervals, sorted, with overlapping or adjacent ones
  merged (RFC 9110 §14.2 allows coalescing; it also means a response can never be larger than
  the file, whatever the client asks for) — ``206``, multipart when there are several.
* :class:`RangeNotSatisfiable` — no range overlaps the file: ``416`` with ``bytes */size``.

>>> parse_range("bytes=0-99", 1000)
[(0, 100)]
>>> parse_range("bytes=-100, 0-9, 5-19", 1000)
[(0, 20), (900, 1000)]
>>> parse_range("bytes=5-2", 1000) is None   # malformed: ignored
True
"""

from __future__ import annotations

import re

_SPEC = re.compile(r"[ \t]*([0-9]*)-([0-9]*)[ \t]*", re.ASCII)

#: More pieces than this and the header is ignored (a defence against many tiny ranges).
MAX_RANGES = 100


class RangeNotSatisfiable(Exception):
    """No requested range overlaps the representation."""

    def __init__(self, size: int) -> None:
        super().__init__(f"no requested range lies within the {size} bytes of the file")
        self.size = size


def _spec(text: str, size: int) -> tuple[int, int] | None:
    """One range-spec as an interval, ``None`` if unsatisfiable; ``ValueError`` if malformed."""
    match = _SPEC.fullmatch(text)
    if match is None or not (match[1] or match[2]):
        raise ValueError(text)
    if not match[1]:  # a suffix: the last N bytes
        length = int(match[2])
        return (max(size - length, 0), size) if length > 0 else None
    start = int(match[1])
    if match[2] and int(match[2]) < start:
        raise ValueError(text)
    if start >= size:
        return None
    return (start, min(int(match[2]) + 1, size) if match[2] else size)


def parse_range(header: str, size: int) -> list[tuple[int, int]] | None:
    """The byte ranges a ``Range`` header asks of ``size`` bytes (see the module doc)."""
    unit, eq, specs = header.partition("=")
    if not eq or unit.strip().lower() != "bytes" or size == 0:
        return None  # an empty file has no bytes to address: send it whole (and empty)
    pieces = [piece for piece in specs.split(",") if piece.strip()]
    if not pieces or len(pieces) > MAX_RANGES:
        return None
    wanted: list[tuple[int, int]] = []
    for piece in pieces:
        try:
            interval = _spec(piece, size)
        except ValueError:
            return None
        if interval is not None:
            wanted.append(interval)
    if not wanted:
        raise RangeNotSatisfiable(size)
    wanted.sort()
    merged = [wanted[0]]
    for start, stop in wanted[1:]:
        last_start, last_stop = merged[-1]
        if start <= last_stop:
            merged[-1] = (last_start, max(last_stop, stop))
        else:
            merged.append((start, stop))
    return merged
