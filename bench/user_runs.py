"""A user's own run: the server CPU per item of ``runs.respond(producer)``, beside the same
producer behind a plain ``StreamingResponse`` (the tutorial pattern), in one run.

The app is ``peers/user_runs_app.py``, served by uvicorn (uvloop, httptools) pinned to core 0;
this load generator runs on core 1: ``--concurrency`` clients each start streams of
``--items`` items back to back for ``--duration`` seconds and read them to the end. Reported
for each target: items/s delivered, the server's CPU seconds (user + system) per item, and
that minus the producer's own cost (measured alone, in a process of its own): what serving
an item costs.

    uv run python bench/user_runs.py
    uv run python bench/user_runs.py --items 1000 --concurrency 20 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from typing import Any

import httpx
from harness import BENCH_DIR, HOST, ROOT
from harness.http import free_port
from harness.machine import pin_self
from harness.procs import UVLOOP_HTTPTOOLS, Proc, pinned, uvicorn_command
from harness.report import md_table, timestamp


def start_server() -> Proc:
    """The app under uvicorn on core 0, once it answers /healthz."""
    port = free_port()
    options = ("--log-level", "warning", "--no-access-log")
    command = uvicorn_command(0, "user_runs_app:app", port, *UVLOOP_HTTPTOOLS, *options)
    # Its own process only (uvicorn without workers has no children), stopped within 10 s.
    server = Proc(
        "user_runs_app", command, None, port=port, session=False, tree=False, stop_timeout=10
    )
    server.start()
    try:
        server.wait_ready_blocking(30)
    except BaseException:
        server.stop()
        raise
    return server


def producer_cost(awaits: bool) -> float:
    command = [*pinned(0), sys.executable, str(BENCH_DIR / "peers" / "user_runs_app.py")]
    out = subprocess.run(
        [*command, *(["--awaits"] if awaits else [])],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(json.loads(out)["producer_us_per_item"])


async def load(port: int, path: str, args: argparse.Namespace) -> dict[str, Any]:
    streams = 0
    stop = time.monotonic() + args.duration
    last = f'"i":{args.items - 1},'.encode()

    async def client() -> None:
        nonlocal streams
        async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=30) as http:
            while time.monotonic() < stop:
                tail = b""
                params = {"n": args.items, "awaits": "1" if args.awaits else "0"}
                async with http.stream("POST", path, params=params) as response:
                    assert response.status_code == 200, response.status_code
                    async for raw in response.aiter_raw():
                        tail = (tail + raw)[-400:]
                # Every item arrived: the last one did (the stream is in order).
                assert last in tail.replace(b" ", b""), tail
                streams += 1

    await asyncio.gather(*(client() for _ in range(args.concurrency)))
    return {"items": streams * args.items, "streams": streams}


def measure(path: str, args: argparse.Namespace) -> dict[str, Any]:
    server = start_server()
    port = server.port
    try:
        asyncio.run(load(port, path, argparse.Namespace(**{**vars(args), "duration": 1.0})))
        before = server.cpu_seconds()
        started = time.monotonic()
        result = asyncio.run(load(port, path, args))
        wall = time.monotonic() - started
        cpu = server.cpu_seconds() - before
    finally:
        server.stop()
    return {
        **result,
        "items_per_s": round(result["items"] / wall),
        "server_cpu_pct": round(100 * cpu / wall, 1),
        "server_cpu_us_per_item": round(cpu / result["items"] * 1e6, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1000, help="items per stream")
    parser.add_argument("--concurrency", type=int, default=20, help="clients at once")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument(
        "--awaits",
        action="store_true",
        help="the producer gives the loop a turn before each item (each is published alone)",
    )
    args = parser.parse_args()
    pin_self(1)
    producer = producer_cost(args.awaits)
    results: dict[str, Any] = {"producer_us_per_item": round(producer, 2)}
    for name, path in (("plain StreamingResponse", "/plain"), ("runs.respond", "/runs")):
        found = measure(path, args)
        found["serving_us_per_item"] = round(found["server_cpu_us_per_item"] - producer, 2)
        results[name] = found
        print(name, found, file=sys.stderr)
    header = ["", "items/s", "server CPU", "µs CPU per item", "µs per item on top of the producer"]
    rows = [
        [
            name,
            f"{r['items_per_s']:,}",
            f"{r['server_cpu_pct']}%",
            f"{r['server_cpu_us_per_item']}",
            f"**{r['serving_us_per_item']}**",
        ]
        for name, r in ((n, results[n]) for n in ("plain StreamingResponse", "runs.respond"))
    ]
    print("\n".join(md_table(header, rows)))
    print(f"\nthe producer alone: {results['producer_us_per_item']} µs per item")
    out = BENCH_DIR / "results" / f"user_runs-{timestamp()}.json"
    out.write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    print(f"results: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
