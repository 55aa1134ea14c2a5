"""Client-supplied paths mapped safely onto a directory.

A path from a URL or an upload's filename is untrusted. :func:`resolve_within` turns it into a
real path *inside* a root directory or refuses it with :class:`UnsafePath`. Two layers:

1. The text itself (:func:`check_relative`): ``/``-separated names, none empty, none starting
   with ``.`` (so no ``.``/``..`` and no hidden files — which also keeps in-progress uploads,
   ``.<name>.upload-<random>``, out of reach), no backslash, NUL or other control character,
   not absolute, not too long. URLs are percent-decoded before routing, so ``%2e%2e`` and
   ``%2f`` arrive here as ``..`` and ``/`` and meet the same rules.
2. The filesystem: the joined path is resolved (symlinks followed) and must still lie inside
   the resolved root, so a symlink pointing outside the root is refused too.

>>> from pathlib import Path
>>> check_relative("reports/2024/q3.pdf")
('reports', '2024', 'q3.pdf')
>>> try:
...     check_relative("../etc/passwd")
... except UnsafePath as exc:
...     print(exc)
path segment '..' is hidden or relative
"""

from __future__ import annotations

import re
from pathlib import Path

#: Longest accepted path (bytes of UTF-8); the usual PATH_MAX.
MAX_PATH_BYTES = 4096
#: Longest accepted single name (bytes of UTF-8); the usual NAME_MAX.
MAX_NAME_BYTES = 255

_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f\\]")


class UnsafePath(ValueError):
    """A client-supplied path that cannot name a file inside the root."""


def check_relative(path: str) -> tuple[str, ...]:
    """The names of a safe relative path, or :class:`UnsafePath`. Touches no filesystem."""
    if not path:
        raise UnsafePath("the path is empty")
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise UnsafePath(f"the path is longer than {MAX_PATH_BYTES} bytes")
    if _FORBIDDEN.search(path):
        raise UnsafePath("the path contains a backslash or a control character")
    if path.startswith("/"):
        raise UnsafePath("the path is absolute")
    names = tuple(path.split("/"))
    for name in names:
        if not name:
            raise UnsafePath("the path has an empty segment")
        if name.startswith("."):
            raise UnsafePath(f"path segment {name!r} is hidden or relative")
        if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
            raise UnsafePath(f"a path segment is longer than {MAX_NAME_BYTES} bytes")
    return names


def resolve_within(root: Path, path: str) -> Path:
    """``root/path`` with symlinks resolved, guaranteed inside ``root`` (also resolved).

    The target need not exist (uploads create it). Raises :class:`UnsafePath` when the text is
    unsafe or when resolving leaves the root, e.g. through a symlink.

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> resolve_within(root, "a/b.txt") == root.resolve() / "a" / "b.txt"
    True
    """
    names = check_relative(path)
    base = root.resolve()
    target = base.joinpath(*names).resolve()
    if target == base or not target.is_relative_to(base):
        raise UnsafePath("the path leads outside the directory")
    # A symlink may also lead to a hidden name inside the root (an upload in progress).
    check_relative(target.relative_to(base).as_posix())
    return target


def relative_name(root: Path, target: Path) -> str:
    """``target``'s path below the (resolved) root, ``/``-separated: what responses report."""
    return target.relative_to(root.resolve()).as_posix()
