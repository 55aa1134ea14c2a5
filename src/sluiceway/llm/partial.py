"""Structured output as it forms: the JSON parsed so far from an incomplete answer."""

from __future__ import annotations

from typing import Any

import jiter

#: Marks "nothing parseable yet" apart from a JSON ``null``.
NOTHING = object()


def parse_partial(text: str) -> Any:
    """The value of the longest valid prefix of ``text`` (unfinished strings included), or
    :data:`NOTHING` when not even that parses yet.  Text before the first ``{`` or ``[`` (a
    model's preamble, a code fence) is skipped.

    >>> parse_partial('{"name": "Ada", "langs": ["en", "f')
    {'name': 'Ada', 'langs': ['en', 'f']}
    """
    start = _json_start(text)
    if start < 0:
        return NOTHING
    try:
        return jiter.from_json(text[start:].encode(), partial_mode="trailing-strings")
    except ValueError:
        return NOTHING


def parse_complete(text: str) -> Any:
    """The complete value (raises ``ValueError`` with jiter's message when it is not JSON).

    A closing code fence after the value is allowed, as models add one.
    """
    start = _json_start(text)
    if start < 0:
        raise ValueError("the answer contains no JSON object or array")
    body = text[start:].rstrip()
    body = body.removesuffix("```").rstrip()
    return jiter.from_json(body.encode())


def _json_start(text: str) -> int:
    positions = [p for p in (text.find("{"), text.find("[")) if p >= 0]
    return min(positions) if positions else -1
