"""Client benchmark: how fast ``sluiceway.client.EventSource`` reads a stream, next to httpx-sse.

httpx-sse is what a Python user picks today to read SSE over httpx; it parses but does not
reconnect.  Both read the same stream from the same server, one after the other, each run
``--repeat`` times in alternation; the table gives the median events/s and the ratio to
httpx-sse.  The server (a raw asyncio process that writes pre-encoded events as fast as the
socket takes them) is pinned to CPU 0, the clients to CPU 1, so what is measured is the client.

    uv run python bench/client.py            # 200,000 events x 5 rounds, about 30 s
    uv run python bench/client.py --events 20000 --repeat 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import httpx
import httpx_sse
from harness import BENCH_DIR, HOST, ROOT
from harness.http import free_port
from harness.machine import pin_self
from harness.procs import pinned
from harness.report import md_table, timestamp

from sluiceway.client import EventSource

SERVER = r"""
import asyncio, sys
PAYLOAD = "x" * 64

def body(n):
    line = 'id: {0}\nevent: tick\ndata: {{"seq":{0},"payload":"%s"}}\n\n' % PAYLOAD
    data = "".join(line.format(k) for k in range(1, n + 1)).encode()
    out = bytearray()
    for start in range(0, len(data), 65536):
        piece = data[start:start + 65536]
        out += b"%x\r\n%s\r\n" % (len(piece), piece)
    return bytes(out + b"0\r\n\r\n")

CACHE = {}

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"

async def serve(reader, writer):
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        n = int(head.split(b" ", 2)[1].split(b"n=")[1])
        if n not in CACHE:
            CACHE[n] = body(n)
        writer.write(HEAD)
        writer.write(CACHE[n])
        try:
            await writer.drain()
        except ConnectionError:  # a client that stops at its count resets the connection
            return

async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1]))
    print("ready", flush=True)
    await server.serve_forever()

asyncio.run(main())
"""


def check(ids: list[str], events: int) -> None:
    if len(ids) != events or ids[0] != "1" or ids[-1] != str(events):
        raise AssertionError(f"got {len(ids)} events, {ids[:1]}..{ids[-1:]}")


async def sluiceway_async(url: str, events: int) -> list[str]:
    ids = []
    async with EventSource(url) as source:
        async for event in source:
            ids.append(event.id)
            if len(ids) == events:
                break
    return ids


def sluiceway_sync(url: str, events: int) -> list[str]:
    ids = []
    with EventSource(url) as source:
        for event in source:
            ids.append(event.id)
            if len(ids) == events:
                break
    return ids


async def httpx_sse_async(url: str, events: int) -> list[str]:
    ids = []
    async with (
        httpx.AsyncClient(timeout=60) as http,
        httpx_sse.aconnect_sse(http, "GET", url) as es,
    ):
        async for event in es.aiter_sse():
            ids.append(event.id)
            if len(ids) == events:
                break
    return ids


def httpx_sse_sync(url: str, events: int) -> list[str]:
    ids = []
    with httpx.Client(timeout=60) as http, httpx_sse.connect_sse(http, "GET", url) as es:
        for event in es.iter_sse():
            ids.append(event.id)
            if len(ids) == events:
                break
    return ids


CLIENTS: dict[str, Callable[[str, int], object]] = {
    "sluiceway async": sluiceway_async,
    "httpx-sse async": httpx_sse_async,
    "sluiceway sync": sluiceway_sync,
    "httpx-sse sync": httpx_sse_sync,
}


def measure(name: str, url: str, events: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) to read ``events`` events."""
    run = CLIENTS[name]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    result = run(url, events)
    ids = asyncio.run(result) if asyncio.iscoroutine(result) else result
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    check(ids, events)  # type: ignore[arg-type]
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    port = free_port()
    server = subprocess.Popen(
        [*pinned(0), sys.executable, "-c", SERVER, str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    pin_self(1)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        url = f"http://{HOST}:{port}/events?n={args.events}"
        measure("httpx-sse sync", url, 1000)  # warm up: imports, the server's cache
        walls: dict[str, list[float]] = {name: [] for name in CLIENTS}
        cpus: dict[str, list[float]] = {name: [] for name in CLIENTS}
        for _ in range(args.repeat):
            for name in CLIENTS:
                wall, cpu = measure(name, url, args.events)
                walls[name].append(wall)
                cpus[name].append(cpu)
    finally:
        server.kill()

    rates = {name: args.events / statistics.median(walls[name]) for name in CLIENTS}
    print(f"{args.events:,} events of ~110 bytes, median of {args.repeat} rounds\n")
    rows = []
    for name in CLIENTS:
        peer = "httpx-sse " + name.split()[1]
        cpu_us = statistics.median(cpus[name]) / args.events * 1e6
        rows.append(
            [name, f"{rates[name]:,.0f}", f"{cpu_us:.2f}", f"{rates[name] / rates[peer]:.2f}x"]
        )
    header = ["client", "events/s", "CPU µs/event", "vs httpx-sse (same API kind)"]
    print("\n".join(md_table(header, rows, right=True)))
    results = BENCH_DIR / "results" / f"client-{timestamp()}.json"
    results.write_text(
        json.dumps(
            {
                "events": args.events,
                "repeat": args.repeat,
                "walls": walls,
                "cpus": cpus,
                "events_per_s": rates,
                "python": platform.python_version(),
                "httpx": httpx.__version__,
                "httpx_sse": httpx_sse.__version__,
            },
            indent=2,
        )
    )
    print(f"\nfull results: {results.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
