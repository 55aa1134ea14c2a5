"""The command line: a parser that shows the defaults, comma-separated choices, ``--out``."""

from __future__ import annotations

import argparse
from collections.abc import Collection
from pathlib import Path

from harness import BENCH_DIR


def parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser described by the first paragraph of ``doc`` (a script's docstring), whose help
    shows every default."""
    return argparse.ArgumentParser(
        description=doc.split("\n\n")[0] if doc else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )


def choices(
    p: argparse.ArgumentParser, value: str, allowed: Collection[str], what: str
) -> list[str]:
    """The items of a comma-separated option; an item not in ``allowed`` is a usage error.

    >>> choices(argparse.ArgumentParser(), " a, b,,", ("a", "b"), "server")
    ['a', 'b']
    """
    items = [s.strip() for s in value.split(",") if s.strip()]
    for item in items:
        if item not in allowed:
            p.error(f"unknown {what} {item!r}")
    return items


def add_out_argument(p: argparse.ArgumentParser) -> None:
    """``--out``: where the JSON results go (``bench/results``)."""
    p.add_argument(
        "--out", type=Path, default=BENCH_DIR / "results", help="directory for the JSON results"
    )
