"""What a token of a run costs the server: in-process, and through Redis.

Two workloads, each run's stream followed to its end by one subscriber in the same process;
the process's CPU seconds (user + system) per token:

* ``burst``  one run whose producer yields ``--tokens`` tokens as fast as it can;
* ``paced``  ``--runs`` runs at once, each yielding ``--paced-tokens`` tokens one every
             ``--interval`` seconds (LLM generations side by side).

And three ways of storing them:

* ``memory``             the in-process hub;
* ``redis``              the hub on a private ``redis-server``: a run queues what its
                         producer yields and stores it in batches (what arrived while the last
                         batch was being stored), and the backend sends the publishes of every
                         run made while one pipeline is on its way together in the next;
* ``redis-per-token``    one round trip per token, no pipeline (how runs published before).

The issue's bound: a token through Redis costs at most 2x a token in-process.

    uv run python bench/run_tokens.py
    uv run python bench/run_tokens.py --tokens 20000 --repeat 3
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import uvloop
from harness.cli import add_out_argument, parser
from harness.machine import machine_info, pin_self
from harness.redis_servers import RedisServer
from harness.report import config_of, md_table, save_results, timestamp

from sluiceway.hub import Hub, HubConfig
from sluiceway.hub.redis_backend import RedisBackend
from sluiceway.runs import RunLimits, Runs
from sluiceway.runs.run import Run

MODES = ("memory", "redis", "redis-per-token")


async def tokens(count: int, interval: float) -> AsyncIterator[str]:
    for n in range(count):
        if interval:
            await asyncio.sleep(interval)
        yield f"tok{n} "


async def follow(hub: Hub, topic: str) -> int:
    follower = await hub.subscribe([topic], from_start=True)
    read = 0
    async for chunk in follower:
        read += bytes(chunk).count(b"\nid: ")
    return read


async def runs_of(hub: Hub, runs: int, count: int, interval: float) -> tuple[float, float, int]:
    """(CPU seconds, wall seconds, events the followers read) for ``runs`` runs at once."""
    family = Runs(hub, family="bench", limits=RunLimits(max_items=None, max_bytes=None))
    cpu0, wall0 = time.process_time(), time.perf_counter()
    started = [family.start(tokens(count, interval)) for _ in range(runs)]
    read = sum(await asyncio.gather(*(follow(hub, run.topic) for run in started)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    await family.aclose()
    return cpu, wall, read


async def measure(
    mode: str, url: str | None, runs: int, count: int, interval: float
) -> dict[str, Any]:
    # The follower reads in the same process as the producer: room for all of it.
    config = HubConfig(
        history_size=2 * count + 64, buffer_events=4 * count + 64, buffer_bytes=64 * 1024 * 1024
    )
    backend = None
    if url is not None:
        backend = RedisBackend(url, history_size=config.history_size, history_ttl=600)
    hub = Hub(config, backend)
    await hub.start()
    batched, pipelined = Run._publish_soon, RedisBackend.batched
    if mode == "redis-per-token":
        Run._publish_soon = Run._publish  # type: ignore[method-assign]

        async def alone(self: RedisBackend, script: Any, keys: Any, args: Any) -> Any:
            return await script(keys=keys, args=args)

        RedisBackend.batched = alone  # type: ignore[method-assign]
    try:
        # Warm, as a server is after its first minutes: imports, scripts loaded, and as many
        # connections in the pool as the measured runs start at once (redis-py's new
        # connection costs ~0.5 ms, mostly reading its own version from the package metadata).
        await runs_of(hub, runs, 2, 0.0)
        cpu, wall, read = await runs_of(hub, runs, count, interval)
    finally:
        Run._publish_soon = batched  # type: ignore[method-assign]
        RedisBackend.batched = pipelined  # type: ignore[method-assign]
        await hub.aclose(1.0)
    total = runs * count
    assert read >= total, f"{mode}: the followers read {read} of {total} events"
    return {
        "mode": mode,
        "tokens": total,
        "cpu_us_per_token": 1e6 * cpu / total,
        "wall_s": wall,
        "tokens_per_s": total / wall,
    }


def render(doc: dict[str, Any]) -> str:
    rows = [
        [
            r["workload"],
            r["mode"],
            f"{r['cpu_us_per_token']:.1f}",
            f"{r['vs_memory']:.2f}",
            f"{r['tokens_per_s']:,.0f}",
        ]
        for r in doc["rows"]
    ]
    header = ["workload", "mode", "server CPU µs/token", "x memory", "tokens/s"]
    return "\n".join(md_table(header, rows, right=True))


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--tokens", type=int, default=20_000, help="tokens of the burst run")
    p.add_argument("--runs", type=int, default=200, help="runs at once, paced")
    p.add_argument("--paced-tokens", type=int, default=100, help="tokens of each paced run")
    p.add_argument("--interval", type=float, default=0.02, help="seconds between paced tokens")
    p.add_argument("--repeat", type=int, default=3, help="runs per mode; the best is kept")
    add_out_argument(p)
    args = p.parse_args()
    started = timestamp()
    t0 = time.perf_counter()
    pin_self(1)  # Redis on core 0, this process (the server under test) on core 1
    server = RedisServer(0, Path(tempfile.mkdtemp(prefix="run-tokens-")))
    server.start()
    url = server.url
    rows: list[dict[str, Any]] = []
    workloads = {
        "burst": (1, args.tokens, 0.0),
        "paced": (args.runs, args.paced_tokens, args.interval),
    }
    try:
        for workload, (runs, count, interval) in workloads.items():
            base = 0.0
            for mode in MODES:
                target = None if mode == "memory" else url
                tries = [
                    uvloop.run(measure(mode, target, runs, count, interval))
                    for _ in range(args.repeat)
                ]
                row = {"workload": workload, **min(tries, key=lambda r: r["cpu_us_per_token"])}
                base = base or row["cpu_us_per_token"]
                row["vs_memory"] = row["cpu_us_per_token"] / base
                rows.append(row)
    finally:
        server.stop()
    save_results(
        "run_tokens",
        started,
        None,
        config_of(args),
        machine_info(["redis", "uvloop"]),
        {"rows": rows, "total_wall_s": time.perf_counter() - t0},
        render,
        args.out,
    )


if __name__ == "__main__":
    main()
