"""The floor under fan-out latency: N bare ``socket.send()`` calls from Python.

One process pinned to CPU 0 holds N accepted loopback connections and, every 50 ms, sends
one small SSE-sized chunk to each of them; a reader process pinned to CPU 1 drains them.
The time one round of N sends takes is what any single-threaded Python server pays at
least to hand one event to N subscribers on this machine (syscalls, loopback delivery,
waking the reader), before any server logic.

    uv run python bench/send_floor.py --subscribers 1000 --rounds 200
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import selectors
import socket
import time
from multiprocessing.synchronize import Event

from harness import HOST
from harness.machine import pin_self
from harness.report import percentile

PAYLOAD = b"4a\r\nid: 123\ndata: " + b"x" * 50 + b"\n\n\r\n"


def reader(port: int, count: int, ready: Event, seconds: float) -> None:
    pin_self(1)
    sel = selectors.DefaultSelector()
    for _ in range(count):
        c = socket.create_connection((HOST, port))
        c.setblocking(False)
        sel.register(c, selectors.EVENT_READ)
    ready.set()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for key, _ in sel.select(0.5):
            try:
                if not key.fileobj.recv(65536):  # type: ignore[union-attr]
                    return
            except BlockingIOError:
                pass


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--subscribers", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=200)
    args = p.parse_args()
    pin_self(0)
    listener = socket.socket()
    listener.bind((HOST, 0))
    listener.listen(4096)
    port = listener.getsockname()[1]
    ready = mp.Event()
    seconds = args.rounds * 0.06 + 10  # the reader stops by itself after this
    proc = mp.Process(target=reader, args=(port, args.subscribers, ready, seconds))
    proc.start()
    try:
        socks = [listener.accept()[0] for _ in range(args.subscribers)]
        for s in socks:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.setblocking(False)
        if not ready.wait(30):
            raise TimeoutError("reader did not connect")
        times = []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            for s in socks:
                s.send(PAYLOAD)
            times.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.05)
        times.sort()
        print(
            f"{args.subscribers} sends per round, {len(times)} rounds (ms): "
            f"p50 {percentile(times, 0.5):.2f}  p99 {percentile(times, 0.99):.2f}  "
            f"max {times[-1]:.2f}"
        )
    finally:
        proc.terminate()
        proc.join(5)


if __name__ == "__main__":
    main()
