"""``python -m harness`` (from ``bench/``): run the examples in the harness's docstrings."""

from __future__ import annotations

import doctest
import importlib
import sys

MODULES = (
    "cli",
    "cpu",
    "http",
    "machine",
    "procs",
    "proxy",
    "redis_servers",
    "report",
    "runner",
    "sse",
)


def main() -> int:
    failed = tried = 0
    for name in MODULES:
        module = importlib.import_module(f"harness.{name}")
        result = doctest.testmod(module)
        failed, tried = failed + result.failed, tried + result.attempted
    print(f"harness doctests: {tried - failed}/{tried} passed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
