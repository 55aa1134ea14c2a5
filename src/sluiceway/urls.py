"""URL paths compared as RFC 3986 section 6 says: escaped unreserved characters decoded, dot
segments removed. Sans-I/O.

Two URLs that differ only in such spellings name the same resource, so a check that compares
paths (an allow-list prefix, a reserved namespace) must compare them normalized, or a client
slips past it with ``%2e%2e``:

>>> normalize_path("/feeds/%2e%2E/admin.txt")
'/admin.txt'
>>> normalize_path("/a/./b/../%7Ec")
'/a/~c'
"""

from __future__ import annotations

import re

__all__ = ["decode_unreserved", "normalize_path", "remove_dot_segments"]

# %XX escapes of unreserved characters (ALPHA / DIGIT / "-" / "." / "_" / "~").
_UNRESERVED_ESCAPE = re.compile(r"%(2[dDeE]|3[0-9]|[46][1-9a-fA-F]|[57][0-9aA]|5[fF]|7[eE])")
_ESCAPE = re.compile(r"%[0-9a-fA-F]{2}")


def decode_unreserved(path: str) -> str:
    """RFC 3986 6.2.2.2: ``%2E``, ``%6D``... are the same characters as ``.``, ``m``...; other
    escapes are kept, their hex digits upper-cased (6.2.2.1)."""
    path = _ESCAPE.sub(lambda m: m[0].upper(), path)
    return _UNRESERVED_ESCAPE.sub(lambda m: chr(int(m[1], 16)), path)


def remove_dot_segments(path: str) -> str:
    """RFC 3986 5.2.4: ``.`` and ``..`` segments resolved (never above the root).

    >>> remove_dot_segments("/a/b/../../../c/./d/..")
    '/c/'
    """
    out: list[str] = []
    for segment in path.split("/")[1:] if path.startswith("/") else path.split("/"):
        if segment == "..":
            if out:
                out.pop()
        elif segment != ".":
            out.append(segment)
    tail = "/" if path.endswith(("/.", "/..")) else ""
    return "/" + "/".join(out) + tail if path.startswith("/") else "/".join(out) + tail


def normalize_path(path: str) -> str:
    """Both normalizations: the path as every equivalent spelling of it compares."""
    return remove_dot_segments(decode_unreserved(path))
