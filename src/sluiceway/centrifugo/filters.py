"""Server-side tag filters (Centrifugo's ``tf`` on subscribe): a subscriber receives only the
publications whose tags match its filter.

A filter is a tree: a leaf compares one tag (``{"key": "ticker", "cmp": "eq", "val": "AAPL"}``);
``{"op": "and" | "or", "nodes": [...]}`` and ``{"op": "not", "nodes": [one]}`` combine leaves.
Comparisons: ``eq``, ``neq``, ``in``, ``nin`` (against ``vals``), ``ex``, ``nex`` (the tag is
there, or not), ``sw``, ``ew``, ``ct`` (starts with, ends with, contains), and ``gt``,
``gte``, ``lt``, ``lte`` (numbers; a tag that is not a number does not match).  A missing tag
matches only ``neq``, ``nin`` and ``nex``.

Filters are parsed once, when a client subscribes, into a :class:`Filter` whose :attr:`key`
is its canonical form: the endpoint evaluates each distinct filter once per publication, not
once per subscriber (a thousand subscribers with ten filters cost ten evaluations).

>>> f = parse({"op": "and", "nodes": [
...     {"key": "ticker", "cmp": "eq", "val": "AAPL"},
...     {"key": "price", "cmp": "gte", "val": "100"}]})
>>> f.matches({"ticker": "AAPL", "price": "187.2"}), f.matches({"ticker": "AAPL", "price": "99"})
(True, False)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from sluiceway.centrifugo import codes

#: Bounds of a filter: nodes in all, depth, and values of an ``in``.
MAX_NODES = 64
MAX_DEPTH = 8
MAX_VALUES = 100


def _number(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if number == number and abs(number) != float("inf") else None


def _compare(test: Callable[[float, float], bool]) -> Callable[[str | None, str], bool]:
    def compare(tag: str | None, val: str) -> bool:
        if tag is None:
            return False
        left, right = _number(tag), _number(val)
        return left is not None and right is not None and test(left, right)

    return compare


#: A leaf's test of the tag's value (None: the publication has no such tag) against ``val``.
_SINGLE: dict[str, Callable[[str | None, str], bool]] = {
    "eq": lambda tag, val: tag == val,
    "neq": lambda tag, val: tag != val,
    "sw": lambda tag, val: tag is not None and tag.startswith(val),
    "ew": lambda tag, val: tag is not None and tag.endswith(val),
    "ct": lambda tag, val: tag is not None and val in tag,
    "gt": _compare(lambda a, b: a > b),
    "gte": _compare(lambda a, b: a >= b),
    "lt": _compare(lambda a, b: a < b),
    "lte": _compare(lambda a, b: a <= b),
}
_SETS = ("in", "nin")
_PRESENCE = ("ex", "nex")


@dataclass(frozen=True, slots=True)
class Filter:
    """A parsed filter: :meth:`matches` a publication's tags; :attr:`key` identifies it."""

    key: bytes
    matches: Callable[[Mapping[str, str]], bool]


def parse(node: Any) -> Filter:
    """The filter a client sent; raises :class:`codes.ReplyError` (107) for one that is not a
    well-formed tree within the bounds."""
    count = [0]
    test = _node(node, 0, count)
    return Filter(orjson.dumps(_canonical(node), option=orjson.OPT_SORT_KEYS), test)


def _bad(detail: str) -> codes.ReplyError:
    return codes.bad_request(f"tags filter: {detail}")


def _node(node: Any, depth: int, count: list[int]) -> Callable[[Mapping[str, str]], bool]:
    count[0] += 1
    if not isinstance(node, dict) or depth > MAX_DEPTH or count[0] > MAX_NODES:
        raise _bad(f"nodes are objects, at most {MAX_NODES}, {MAX_DEPTH} deep")
    op = node.get("op", "")
    if op in ("and", "or", "not"):
        children = node.get("nodes")
        if not isinstance(children, list) or not children:
            raise _bad(f'"{op}" needs nodes')
        tests = [_node(child, depth + 1, count) for child in children]
        if op == "not":
            if len(tests) != 1:
                raise _bad('"not" takes one node')
            (inner,) = tests
            return lambda tags: not inner(tags)
        if op == "and":
            return lambda tags: all(test(tags) for test in tests)
        return lambda tags: any(test(tags) for test in tests)
    if op != "":
        raise _bad(f"unknown op {op!r}")
    key, cmp = node.get("key"), node.get("cmp")
    if not isinstance(key, str) or not key:
        raise _bad("a leaf needs a key")
    if cmp in _PRESENCE:
        present = cmp == "ex"
        return lambda tags: (key in tags) is present
    if cmp in _SETS:
        vals = node.get("vals")
        if not isinstance(vals, list) or len(vals) > MAX_VALUES:
            raise _bad(f'"{cmp}" needs vals (at most {MAX_VALUES})')
        if not all(isinstance(v, str) for v in vals):
            raise _bad("vals are strings")
        allowed = frozenset(vals)
        inside = cmp == "in"
        return lambda tags: (tags.get(key) in allowed) is inside if key in tags else not inside
    single = _SINGLE.get(cmp) if isinstance(cmp, str) else None
    if single is None:
        raise _bad(f"unknown cmp {cmp!r}")
    val = node.get("val", "")
    if not isinstance(val, str):
        raise _bad("val is a string")
    return lambda tags: single(tags.get(key), val)


def _canonical(node: dict[str, Any]) -> dict[str, Any]:
    """The node without empty fields (the JSON and Protobuf forms of one filter are one key)."""
    out: dict[str, Any] = {}
    for name, value in node.items():
        if value in ("", [], None):
            continue
        if name == "nodes":
            value = [_canonical(child) for child in value]
        out[name] = value
    return out
