"""How fast the command line starts: ``sluiceway publish`` and ``tail`` against curl.

One ``sluiceway serve`` (pinned to core 0) holds a topic with one event. Each command runs
``--runs`` times on core 1, one after another, and the median and best wall times are kept:

- ``--version``: start and exit.
- ``publish``: ``sluiceway publish t x`` from start to exit (one POST), against
  ``curl -s -X POST -H 'content-type: application/json' -d '{"data":"x"}'``.
- ``tail``: from start until the first event's line is printed (``sluiceway tail URL
  --last-event-id <before it>``), against ``curl -sN -H 'Last-Event-ID: ...' URL`` until its
  first ``data:`` line.
- ``import server``: ``python -c 'import sluiceway.server.app'``, what ``serve`` loads (and
  what every command loaded before they were imported one by one).

    uv run python bench/cli_start.py
    uv run python bench/cli_start.py --runs 50
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from harness import HOST, VENV_BIN
from harness.cli import add_out_argument, parser
from harness.http import free_port
from harness.machine import machine_info, pin_self
from harness.procs import Proc, pinned, sluiceway_command
from harness.report import config_of, md_table, save_results, timestamp

TOPIC = "cli.bench"


def until_exit(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def until_line(command: list[str], prefix: bytes) -> float:
    """Seconds from start until the command prints a line starting with ``prefix``."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith(prefix):
                return time.perf_counter() - started
        raise RuntimeError(f"{command[0]} ended without a {prefix!r} line")
    finally:
        process.kill()
        process.wait()


def measure(name: str, run: Any, runs: int) -> dict[str, Any]:
    run()  # warm: the page cache holds the files from here on, as for a user's second call
    times = sorted(run() for _ in range(runs))
    return {"command": name, "median_s": statistics.median(times), "best_s": times[0]}


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--runs", type=int, default=20)
    add_out_argument(p)
    args = p.parse_args()
    started = timestamp()
    t0 = time.perf_counter()
    pin_self(1)
    curl = shutil.which("curl")
    port = free_port()
    log_dir = Path(tempfile.mkdtemp(prefix="cli-start-"))
    server = Proc("sluiceway", sluiceway_command(0, port), log_dir / "serve.log", port=port)
    server.start()
    rows = []
    try:
        server.wait_ready_blocking(30)
        base = f"http://{HOST}:{port}"
        first = httpx.post(f"{base}/topics/{TOPIC}", json={"data": "one"}).json()["id"]
        before = first.rsplit("-", 1)[0] + "-0"  # resuming there replays the one event
        url = f"{base}/topics/{TOPIC}"
        cli = [*pinned(1), str(VENV_BIN / "sluiceway")]
        commands: list[tuple[str, Any]] = [
            ("sluiceway --version", lambda: until_exit([*cli, "--version"])),
            (
                "sluiceway publish",
                lambda: until_exit([*cli, "publish", TOPIC, "x", "--server", base]),
            ),
            (
                "sluiceway tail (first event)",
                lambda: until_line([*cli, "tail", url, "--last-event-id", before], b"one"),
            ),
            (
                "import sluiceway.server.app",
                lambda: until_exit(
                    [*pinned(1), str(VENV_BIN / "python"), "-c", "import sluiceway.server.app"]
                ),
            ),
        ]
        if curl is not None:
            json_header = ["-H", "content-type: application/json"]
            post = ["-s", "-X", "POST", *json_header, "-d", '{"data":"x"}']
            commands += [
                ("curl POST", lambda: until_exit([*pinned(1), curl, *post, url])),
                (
                    "curl -N (first event)",
                    lambda: until_line(
                        [*pinned(1), curl, "-sN", "-H", f"Last-Event-ID: {before}", url], b"data:"
                    ),
                ),
            ]
        rows = [measure(name, run, args.runs) for name, run in commands]
    finally:
        server.stop()
    save_results(
        "cli_start",
        started,
        None,
        config_of(args),
        machine_info(["click", "httpx"]),
        {"rows": rows, "total_wall_s": round(time.perf_counter() - t0, 1)},
        render,
        args.out,
    )


def render(doc: dict[str, Any]) -> str:
    table = [
        [row["command"], f"{1000 * row['median_s']:.0f}", f"{1000 * row['best_s']:.0f}"]
        for row in doc["rows"]
    ]
    return "\n".join(md_table(["command", "median ms", "best ms"], table, right=True))


if __name__ == "__main__":
    main()
