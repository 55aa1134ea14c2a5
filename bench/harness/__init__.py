"""The benchmarks' shared harness: everything in ``bench/`` that is not a scenario.

Each benchmark script imports what it needs from here, and from no other script:

* :mod:`harness.cli`      the command line: a parser showing defaults, comma-separated choices;
* :mod:`harness.procs`    processes under test: command lines, start, readiness, CPU, RSS, stop;
* :mod:`harness.cpu`      CPU accounting: this process, every core from /proc/stat, the other
                          processes, quiet-waits, measured windows;
* :mod:`harness.http`     minimal HTTP/1.1 clients (asyncio and blocking), chunked decoding;
* :mod:`harness.machine`  what the JSON records about the machine; file limits, pinning;
* :mod:`harness.report`   percentiles, cells, ratios, markdown tables, progress lines, the JSON
                          results file;
* :mod:`harness.sse`      SSE subscribers, the publisher and the delivery check (fan-out);
* :mod:`harness.proxy`    a front-end TCP proxy: spreads connections over live backends, cuts
                          them mid-chunk on demand (the chaos soak);
* :mod:`harness.redis_servers`  private redis-servers: one Redis, or a Redis Cluster
                          (``redis-cli --cluster create``), pinned, logging; the tests' cluster
                          (``tests/redisproc.py``) shares its command line and creation;
* :mod:`harness.runner`   the fan-out runner (servers one at a time, phase by phase) and the
                          parts of its table that ``fanout.py`` and ``ws_fanout.py`` share; a
                          phase under a time budget, the delivery wait (also for the others).

The scripts run as ``python bench/<script>.py``, which puts ``bench/`` on ``sys.path``: that is
how ``import harness`` resolves. ``python -m doctest`` checks the examples in the docstrings
(see bench/README.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

#: ``bench/``, the repository root, and the bin directory of the Python running us (the venv).
BENCH_DIR = Path(__file__).resolve().parent.parent
ROOT = BENCH_DIR.parent
VENV_BIN = Path(sys.executable).parent
#: Every server under test listens on loopback.
HOST = "127.0.0.1"
KiB, MiB, GiB = 1024, 1024**2, 1024**3
#: A measured window is disturbed when other processes took this much of one core (percent).
DISTURBED_PCT = 10.0
