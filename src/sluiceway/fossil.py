"""Fossil deltas (the format of the Fossil SCM, which Centrifugo's SDKs decode): what turns one
publication's data into the next, usually a few bytes for a small change to a large document.

A delta is text for text inputs: the target's length, then commands — ``<n>@<offset>,`` copies
``n`` bytes of the origin, ``<n>:<bytes>`` inserts ``n`` literal bytes — and the target's
checksum, numbers in base 64 (``0-9A-Z_a-z~``)::

    >>> origin = b'{"temperature": 21.5, "humidity": 40, "status": "ok", "room": "lab"}'
    >>> target = b'{"temperature": 21.7, "humidity": 40, "status": "ok", "room": "lab"}'
    >>> delta = create(origin, target)
    >>> delta
    b'14\\nJ@0,1:7l@K,2JdW5a;'
    >>> apply(origin, delta) == target
    True

The encoder follows Fossil's (``delta_encoder_algorithm.wiki``): the origin's aligned 16-byte
blocks are indexed, the target is scanned for them, and each match is grown both ways and used
when it is cheaper than inserting its bytes.  No library on PyPI is maintained for it (the one
C extension dates from 2017). The hub makes the deltas of SSE streams with it
(:mod:`sluiceway.hub.topic`), the WebSocket face those of Centrifugo's protocol, and
``sluiceway.client`` applies them with :func:`apply`.
"""

from __future__ import annotations

import struct

NHASH = 16
_DIGITS = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~"
_VALUE = {digit: value for value, digit in enumerate(_DIGITS)}
#: Candidate blocks looked at per position (Fossil's limit, against pathological inputs).
_CANDIDATES = 250
#: The largest origin or target a server makes a delta of: the encoder is Python and runs on
#: the event loop (a 1 MiB repetitive text took 1.5 s); dashboards' states are far smaller,
#: and larger events go whole.
MAX_DELTA_INPUT = 64 * 1024


def _int(value: int) -> bytes:
    if value == 0:
        return b"0"
    out = bytearray()
    while value:
        out.append(_DIGITS[value & 63])
        value >>= 6
    out.reverse()
    return bytes(out)


def _digits(value: int) -> int:
    count = 1
    while value >= 64:
        value >>= 6
        count += 1
    return count


def checksum(data: bytes) -> int:
    """The sum of ``data``'s big-endian 32-bit words (the last one zero-padded), mod 2**32."""
    padded = data + b"\0" * (-len(data) % 4)
    words: tuple[int, ...] = struct.unpack(f">{len(padded) // 4}I", padded)
    return sum(words) & 0xFFFFFFFF


def create(origin: bytes, target: bytes) -> bytes:
    """The delta that turns ``origin`` into ``target``."""
    out = bytearray(_int(len(target)) + b"\n")
    n_origin, n_target = len(origin), len(target)
    base = 0
    if n_origin > NHASH:
        # Where each aligned block of the origin starts, by its bytes (in order: the latest are
        # tried first).
        blocks: dict[bytes, list[int]] = {}
        for start in range(0, n_origin - NHASH + 1, NHASH):
            blocks.setdefault(origin[start : start + NHASH], []).append(start)
        while base + NHASH < n_target:
            found = _best_match(origin, target, base, blocks)
            if found is None:
                break
            offset, count, literal = found
            if literal:
                out += _int(literal) + b":" + target[base : base + literal]
                base += literal
            out += _int(count) + b"@" + _int(offset) + b","
            base += count
    if base < n_target:
        out += _int(n_target - base) + b":" + target[base:]
    out += _int(checksum(target)) + b";"
    return bytes(out)


def _best_match(
    origin: bytes, target: bytes, base: int, blocks: dict[bytes, list[int]]
) -> tuple[int, int, int] | None:
    """The first position at or after ``base`` where a copy pays: (origin offset, length,
    literal bytes before it); None when none does before the target's end."""
    for i in range(len(target) - base - NHASH + 1):
        starts = blocks.get(target[base + i : base + i + NHASH])
        if not starts:
            continue
        best: tuple[int, int, int] | None = None
        for start in reversed(starts[-_CANDIDATES:]):
            # Grow the match forward (past the block) and backward (into the literal run).
            forward = NHASH + _common_forward(origin, start + NHASH, target, base + i + NHASH)
            back = _common_backward(origin, start, target, base + i, min(start, i))
            count = forward + back
            offset, literal = start - back, i - back
            cost = _digits(literal) + _digits(count) + _digits(offset) + 3
            if count >= cost and (best is None or count > best[1]):
                best = (offset, count, literal)
        if best is not None:
            return best
    return None


def _common_forward(a: bytes, i: int, b: bytes, j: int) -> int:
    """How many bytes ``a[i:]`` and ``b[j:]`` have in common at their start."""
    return _common_run(a, i, b, j, min(len(a) - i, len(b) - j), 1)


def _common_backward(a: bytes, i: int, b: bytes, j: int, limit: int) -> int:
    """How many bytes before ``a[i]`` and before ``b[j]`` are the same (at most ``limit``)."""
    return _common_run(a, i, b, j, limit, -1)


def _common_run(a: bytes, i: int, b: bytes, j: int, limit: int, direction: int) -> int:
    """The length of the run of equal bytes from ``a[i]`` and ``b[j]`` going ``direction``
    (1: forward, from them; -1: backward, before them), at most ``limit``: slices compared in
    doubling then halving steps (C's memcmp), not byte by byte in Python."""
    step, found = 16, 0
    while found < limit:
        size = min(step, limit - found)
        if direction > 0:
            same = a[i + found : i + found + size] == b[j + found : j + found + size]
        else:
            same = a[i - found - size : i - found] == b[j - found - size : j - found]
        if same:
            found += size
            step *= 2
        elif size == 1:
            break
        else:
            step = max(1, size // 2)
    return found


class DeltaError(ValueError):
    """A delta that does not apply to this origin."""


def apply(origin: bytes, delta: bytes) -> bytes:
    """``origin`` with ``delta`` applied; raises :class:`DeltaError` for a bad one."""
    position = 0

    def number() -> int:
        nonlocal position
        value, start = 0, position
        while position < len(delta) and delta[position] in _VALUE:
            value = (value << 6) + _VALUE[delta[position]]
            position += 1
        if position == start:
            raise DeltaError("a number was expected")
        return value

    def expect(char: bytes) -> None:
        nonlocal position
        if delta[position : position + 1] != char:
            raise DeltaError(f"{char!r} was expected at {position}")
        position += 1

    size = number()
    expect(b"\n")
    out = bytearray()
    while position < len(delta):
        count = number()
        op = delta[position : position + 1]
        position += 1
        if op == b"@":
            offset = number()
            expect(b",")
            if offset + count > len(origin):
                raise DeltaError("a copy beyond the origin")
            out += origin[offset : offset + count]
        elif op == b":":
            if position + count > len(delta):
                raise DeltaError("an insert beyond the delta")
            out += delta[position : position + count]
            position += count
        elif op == b";":
            if count != checksum(bytes(out)) or len(out) != size:
                raise DeltaError("the checksum or the size does not match")
            return bytes(out)
        else:
            raise DeltaError(f"unknown command {op!r}")
        if len(out) > size:
            raise DeltaError("longer than the size it announced")
    raise DeltaError("no checksum at the end")
