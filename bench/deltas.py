"""Delta compression: a dashboard that republishes a ~4 KiB JSON state with small changes, to
subscribers with and without Fossil deltas, over SSE (``?delta=fossil``) and over WebSocket in
both formats of Centrifugo's protocol.

One ``sluiceway serve`` (pinned to core 0) per mode; ``--subscribers`` clients (this process on
core 1: httpx streams for SSE, the ``websockets`` library for WebSocket) follow one topic, then
``--events`` states are published over HTTP, ``--interval`` s apart (a dashboard's rate, not a
flood). Per mode: bytes the subscribers received per event (the SSE body, or the WebSocket
frames' payloads), the server's CPU seconds over the window (user + system), and a check that
every subscriber got every event (a delta subscriber's last state is rebuilt and compared with
the last published one).

Modes: ``sse``, ``sse-delta``, ``json``, ``json-delta``, ``protobuf``, ``protobuf-delta``.

    uv run python bench/deltas.py
    uv run python bench/deltas.py --subscribers 500 --events 300 --modes sse,sse-delta
"""

from __future__ import annotations

import asyncio
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import uvloop
from harness import HOST
from harness.cli import add_out_argument, parser
from harness.http import free_port
from harness.machine import machine_info, pin_self
from harness.procs import Proc, sluiceway_command
from harness.report import config_of, md_table, save_results, timestamp
from websockets.asyncio.client import connect

from sluiceway import fossil
from sluiceway.centrifugo.protobuf_frames import delimited, split
from sluiceway.centrifugo.wire import client_pb2 as pb
from sluiceway.sse import Parser

MODES = ("sse", "sse-delta", "json", "json-delta", "protobuf", "protobuf-delta")
CHANNEL = "dashboard"


def state(n: int) -> dict[str, Any]:
    """~4 KiB of readings; a few change at each step."""
    rng = random.Random(n)
    readings = {
        f"sensor-{i:03d}": {"value": round(i * 1.5, 1), "unit": "C", "ok": True} for i in range(90)
    }
    for _ in range(3):
        readings[f"sensor-{rng.randrange(90):03d}"]["value"] = round(rng.uniform(0, 100), 1)
    return {"seq": n, "readings": readings}


class Subscriber:
    """One WebSocket client: counts payload bytes, keeps the last rebuilt state."""

    def __init__(self, protobuf: bool, delta: bool) -> None:
        self.protobuf, self.delta = protobuf, delta
        self.bytes = 0
        self.events = 0
        self.last: bytes = b""
        self.ready = asyncio.Event()

    async def run(self, port: int, expected: int, done: asyncio.Event) -> None:
        url = f"ws://{HOST}:{port}/connection/websocket"
        subprotocols: Any = ["centrifuge-protobuf"] if self.protobuf else None
        async with connect(url, subprotocols=subprotocols, max_size=None) as ws:
            await ws.send(self._command(1, "connect", {}))
            await ws.recv()
            params: dict[str, Any] = {"channel": CHANNEL}
            if self.delta:
                params["delta"] = "fossil"
            await ws.send(self._command(2, "subscribe", params))
            await ws.recv()
            self.ready.set()
            while self.events < expected:
                frame = await ws.recv()
                data = frame if isinstance(frame, bytes) else frame.encode()
                self.bytes += len(data)
                for pub in self._publications(data):
                    self.events += 1
                    self._rebuild(*pub)
        done.set()

    def _command(self, command_id: int, method: str, params: dict[str, Any]) -> Any:
        if not self.protobuf:
            return json.dumps({"id": command_id, method: params})
        message = pb.Command(id=command_id)
        getattr(message, method).SetInParent()
        for key, value in params.items():
            setattr(getattr(message, method), key, value)
        return delimited(message.SerializeToString())

    def _publications(self, data: bytes) -> list[tuple[bytes, bool]]:
        if not self.protobuf:
            found = []
            for line in data.split(b"\n"):
                pub = json.loads(line).get("push", {}).get("pub")
                if pub is not None:
                    raw = pub["data"]
                    payload = raw.encode() if self.delta else json.dumps(raw).encode()
                    found.append((payload, pub.get("delta", False)))
            return found
        found = []
        for message in split(data):
            reply = pb.Reply.FromString(message)
            if reply.push.HasField("pub"):
                found.append((reply.push.pub.data, reply.push.pub.delta))
        return found

    def _rebuild(self, payload: bytes, is_delta: bool) -> None:
        self.last = fossil.apply(self.last, payload) if is_delta else payload


class SSESubscriber:
    """One SSE stream: counts body bytes, keeps the last rebuilt state."""

    def __init__(self, http: httpx.AsyncClient, delta: bool) -> None:
        self.http, self.delta = http, delta
        self.bytes = 0
        self.events = 0
        self.last: bytes = b""
        self.ready = asyncio.Event()

    async def run(self, port: int, expected: int, done: asyncio.Event) -> None:
        url = f"http://{HOST}:{port}/topics/{CHANNEL}" + ("?delta=fossil" if self.delta else "")
        parser = Parser()
        async with self.http.stream("GET", url) as response:
            response.raise_for_status()
            async for chunk in response.aiter_bytes():
                self.bytes += len(chunk)
                for event in parser.feed(chunk):
                    if event.event == "sluiceway.position":
                        self.ready.set()  # subscribed: its position came first
                        continue
                    data = (event.data or "").encode()
                    self.last = fossil.apply(self.last, data) if event.delta else data
                    self.events += 1
                if self.events >= expected:
                    break
        done.set()


async def measure(mode: str, args: Any, log_dir: Path) -> dict[str, Any]:
    port = free_port()
    server = Proc(mode, sluiceway_command(0, port), log_dir / f"{mode}.log", port=port)
    server.start()
    try:
        await server.wait_ready(30)
        protobuf, delta = mode.startswith("protobuf"), mode.endswith("delta")
        streams = httpx.AsyncClient(limits=httpx.Limits(max_connections=None), timeout=60)
        subscribers: list[Subscriber | SSESubscriber] = [
            SSESubscriber(streams, delta) if mode.startswith("sse") else Subscriber(protobuf, delta)
            for _ in range(args.subscribers)
        ]
        dones = [asyncio.Event() for _ in subscribers]
        tasks = [
            asyncio.create_task(s.run(port, args.events, d))
            for s, d in zip(subscribers, dones, strict=True)
        ]
        await asyncio.wait_for(asyncio.gather(*(s.ready.wait() for s in subscribers)), 60)
        cpu0, t0 = server.cpu_seconds(), time.perf_counter()
        async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}") as http:
            for n in range(args.events):
                response = await http.post(f"/topics/{CHANNEL}", json={"data": state(n)})
                response.raise_for_status()
                await asyncio.sleep(args.interval)
        await asyncio.wait_for(asyncio.gather(*(d.wait() for d in dones)), 60)
        cpu, wall = server.cpu_seconds() - cpu0, time.perf_counter() - t0
        await asyncio.gather(*tasks)
        await streams.aclose()
    finally:
        server.stop()
    last = json.dumps(state(args.events - 1), separators=(",", ":")).encode()
    rebuilt_ok = all(json.loads(s.last) == json.loads(last) for s in subscribers)
    deliveries = args.subscribers * args.events
    return {
        "mode": mode,
        "bytes_per_event": sum(s.bytes for s in subscribers) / deliveries,
        "server_cpu_s": cpu,
        "server_cpu_us_per_delivery": 1e6 * cpu / deliveries,
        "wall_s": wall,
        "complete": all(s.events == args.events for s in subscribers) and rebuilt_ok,
    }


def render(doc: dict[str, Any]) -> str:
    rows = doc["rows"]
    base = {r["mode"]: r for r in rows}
    table = []
    for r in rows:
        plain = base.get(r["mode"].removesuffix("-delta"), r)
        table.append(
            [
                r["mode"],
                f"{r['bytes_per_event']:,.0f}",
                f"{r['bytes_per_event'] / plain['bytes_per_event']:.3f}",
                f"{r['server_cpu_us_per_delivery']:.1f}",
                f"{r['server_cpu_us_per_delivery'] / plain['server_cpu_us_per_delivery']:.2f}",
                "ok" if r["complete"] else "INCOMPLETE",
            ]
        )
    header = ["mode", "bytes/event", "x without deltas", "server µs/delivery", "x", "check"]
    return "\n".join(md_table(header, table, right=True))


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--subscribers", type=int, default=200)
    p.add_argument("--events", type=int, default=300)
    p.add_argument("--interval", type=float, default=0.01, help="seconds between states")
    p.add_argument("--modes", default=",".join(MODES))
    add_out_argument(p)
    args = p.parse_args()
    started = timestamp()
    t0 = time.perf_counter()
    pin_self(1)
    log_dir = Path(tempfile.mkdtemp(prefix="deltas-"))
    rows = [uvloop.run(measure(mode, args, log_dir)) for mode in args.modes.split(",")]
    save_results(
        "deltas",
        started,
        None,
        config_of(args),
        machine_info(["websockets", "uvloop", "httpx"]),
        {"rows": rows, "total_wall_s": round(time.perf_counter() - t0, 1)},
        render,
        args.out,
    )


if __name__ == "__main__":
    main()
