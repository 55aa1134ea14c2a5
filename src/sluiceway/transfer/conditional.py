"""Validators and conditional requests for files (RFC 9110 §8.8 and §13), sans-I/O.

A file's :class:`Validators` are a strong ``ETag`` built from its size, modification time (ns)
and inode — cheap (one ``fstat``, no hashing) and different whenever the content is replaced or
rewritten — and a ``Last-Modified`` date.

:func:`check_preconditions` applies ``If-Match``, ``If-Unmodified-Since``, ``If-None-Match``
and ``If-Modified-Since`` in the order RFC 9110 §13.2.2 prescribes: ``If-None-Match`` wins over
``If-Modified-Since`` (the date is ignored when both are sent). :func:`range_applies` is the
``If-Range`` rule: a range is served only for the exact representation the client holds.

>>> v = Validators(etag='"a-b-c"', last_modified=784111777)
>>> v.last_modified_header
'Sun, 06 Nov 1994 08:49:37 GMT'
>>> check_preconditions("GET", {"if-none-match": 'W/"x", W/"a-b-c"'}, v)
304
>>> check_preconditions("GET", {"if-match": '"other"'}, v)
412
>>> range_applies({"if-range": 'W/"a-b-c"'}, v)  # weak tags never match If-Range
False
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime

_ENTITY_TAG = re.compile(r'\s*((?:W/)?"[^"]*")\s*(?:,|$)')


@dataclass(frozen=True, slots=True)
class Validators:
    """What identifies one version of a file: a quoted strong ETag and its mtime (s)."""

    etag: str
    last_modified: int

    @classmethod
    def of(cls, stat: os.stat_result) -> Validators:
        """The validators of a file, from its ``os.stat``/``os.fstat`` result."""
        tag = f'"{stat.st_size:x}-{stat.st_mtime_ns:x}-{stat.st_ino:x}"'
        return cls(etag=tag, last_modified=int(stat.st_mtime))

    @property
    def last_modified_header(self) -> str:
        return formatdate(self.last_modified, usegmt=True)


def parse_entity_tags(header: str) -> list[str] | None:
    """The entity tags of an ``If-Match``/``If-None-Match`` list (``["*"]`` for ``*``);
    ``None`` when the header is malformed."""
    if header.strip() == "*":
        return ["*"]
    tags: list[str] = []
    position = 0
    while position < len(header):
        match = _ENTITY_TAG.match(header, position)
        if match is None:
            if header[position:].strip(" \t,"):
                return None
            break
        tags.append(match[1])
        position = match.end()
    return tags


def _opaque(tag: str) -> str:
    return tag[2:] if tag.startswith("W/") else tag


def weak_match(a: str, b: str) -> bool:
    """Weak comparison: the same opaque tag, either of them possibly weak."""
    return _opaque(a) == _opaque(b)


def strong_match(a: str, b: str) -> bool:
    """Strong comparison: the same tag, neither of them weak."""
    return a == b and not a.startswith("W/")


def _http_date(value: str) -> float | None:
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def check_preconditions(method: str, headers: Mapping[str, str], v: Validators) -> int | None:
    """``412``, ``304`` or ``None`` (go on) for a request on an existing file.

    ``headers`` maps lower-case names to values (Starlette's ``request.headers`` does).
    """
    if_match = headers.get("if-match")
    unmodified_since = _http_date(headers.get("if-unmodified-since", ""))
    if if_match is not None:
        tags = parse_entity_tags(if_match)
        if tags is not None and tags != ["*"] and not any(strong_match(t, v.etag) for t in tags):
            return 412
    elif unmodified_since is not None and v.last_modified > unmodified_since:
        return 412
    safe = method in ("GET", "HEAD")
    if_none_match = headers.get("if-none-match")
    modified_since = _http_date(headers.get("if-modified-since", ""))
    if if_none_match is not None:
        tags = parse_entity_tags(if_none_match)
        if tags is not None and (tags == ["*"] or any(weak_match(t, v.etag) for t in tags)):
            return 304 if safe else 412
    elif safe and modified_since is not None and v.last_modified <= modified_since:
        return 304
    return None


def range_applies(headers: Mapping[str, str], v: Validators) -> bool:
    """Whether a ``Range`` may be honoured given ``If-Range`` (absent: yes). An entity tag must
    match strongly; a date must equal ``Last-Modified`` exactly."""
    if_range = headers.get("if-range")
    if if_range is None:
        return True
    if_range = if_range.strip()
    if if_range.startswith(('"', "W/")):
        return strong_match(if_range, v.etag)
    return _http_date(if_range) == float(v.last_modified)
