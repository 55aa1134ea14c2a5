"""WebSocket fan-out benchmark: sluiceway vs python-socketio vs websockets ``broadcast()``.

One run starts each server in turn (pinned to one CPU), drives it from this process (pinned to
another CPU) and prints a markdown table; the full results go to ``bench/results/*.json``.

Servers (each on a free loopback port, one at a time):

* ``sluiceway``       ``sluiceway serve``; Centrifugo's bidirectional client protocol, JSON
                      format, on ``/connection/websocket`` (connect, subscribe to ``bench``;
                      the publisher sends ``publish`` commands on its own connection).
* ``python-socketio`` ``peers/ws_peers.py:socketio_app`` under uvicorn: Engine.IO 4 /
                      Socket.IO 5 over a WebSocket; clients join the room ``bench``; the
                      publisher emits ``pub`` events with an ack id, the server re-emits each
                      to the room and acknowledges it.
* ``websockets``      ``peers/ws_peers.py websockets``: a bare ``websockets`` server, each
                      publisher message sent to every subscriber with ``broadcast()`` and then
                      acknowledged (the lower bound).

Phases (each against a freshly started server unless ``--reuse-server``):

* ``idle``       open many connections (each connected and subscribed/joined, bounded
                 concurrency); time until the last is subscribed, and server RSS per connection.
* ``throughput`` N subscribers on one channel; E publishes from one publisher connection with at
                 most ``--window`` unacknowledged (the same for all three servers); deliveries/s
                 until the last subscriber has the last event; loss/dup/order check.
* ``latency``    N subscribers, publishes at a fixed rate; publish-to-receive latency percentiles.

The load generator is asyncio + uvloop with raw ``asyncio.Protocol`` connections: a hand-written
upgrade request, a minimal frame parser, masked client frames with a zero key. While measuring,
a subscriber only stores each read with its arrival time and counts ``"s":`` keys (one per
event); it walks the frames only when a read may hold a control frame or an application ping
(a byte 0x88/0x89, ``{}`` or ``\\x81\\x012``), to answer it. Frames are parsed and checked after
the measured window. The runner, the server process handling, the CPU accounting and the
delivery check are ``bench/fanout.py``'s. Sluiceway's per-connection command rate limit is
lifted for the run (the publisher stands for a trusted backend; see bench/README.md).

    uv run python bench/ws_fanout.py --help
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import fanout
import uvloop
from fanout import (
    DISTURBED_PCT,
    HOST,
    ROOT,
    VENV_BIN,
    CpuWindow,
    PublishStats,
    ServerProcess,
    Sink,
    check_delivery,
    close_subscribers,
    disturbance,
    fmt,
    percentile,
    publish_report,
    wait_machine_quiet,
)

BENCH_DIR = Path(__file__).resolve().parent
SERVER_NAMES = ("sluiceway", "python-socketio", "websockets")
CHANNEL = "bench"
MAX_HEAD = 64 * 1024

SEQ_RE = re.compile(rb'"s": ?(\d+)')
# The terminator makes sure the digits of t are all there when a read ends inside an event.
SEQ_T_RE = re.compile(rb'"s": ?(\d+), ?"t": ?(\d+)[,}]')
EVENT_MARK = b'"s":'  # once per event on every server (python's json.dumps writes '"s": 1')
MARK_TAIL = len(EVENT_MARK) - 1

# Sluiceway (Centrifugo protocol) ids: 1 connect, 2 subscribe, publishes PUB_ID0 + seq.
PUB_ID0 = 10


# --------------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------------


def server_command(name: str, port: int, cpu: int) -> list[str]:
    pin = ["taskset", "-c", str(cpu)]
    common = ["--host", HOST, "--port", str(port)]
    if name == "sluiceway":
        return [
            *pin,
            str(VENV_BIN / "sluiceway"),
            "serve",
            *common,
            "--log-level",
            "warning",
            "--backlog",
            "4096",
        ]
    if name == "python-socketio":
        return [
            *pin,
            str(VENV_BIN / "uvicorn"),
            "ws_peers:socketio_app",
            "--app-dir",
            str(BENCH_DIR / "peers"),
            *common,
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--ws",
            "auto",
            "--workers",
            "1",
            "--log-level",
            "warning",
            "--backlog",
            "4096",
        ]
    return [
        *pin,
        str(VENV_BIN / "python"),
        str(BENCH_DIR / "peers" / "ws_peers.py"),
        "websockets",
        *common,
        "--backlog",
        "4096",
    ]


# --------------------------------------------------------------------------------------------
# WebSocket framing (client side)
# --------------------------------------------------------------------------------------------


def client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One masked, final frame. The masking key is zero, so the payload goes out as is
    (RFC 6455 asks for a mask, not for a random one; no server here checks)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


def frame_at(buf: bytes, pos: int) -> tuple[int, int, int] | None:
    """(first byte, payload start, payload end) of the server frame at pos, or None if the
    frame is not complete in buf. Raises ValueError for a masked server frame."""
    n = len(buf)
    if n - pos < 2:
        return None
    b1 = buf[pos + 1]
    if b1 & 0x80:
        raise ValueError("masked frame from the server")
    length = b1
    start = pos + 2
    if length == 126:
        if n - pos < 4:
            return None
        length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
        start = pos + 4
    elif length == 127:
        if n - pos < 10:
            return None
        length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
        start = pos + 10
    end = start + length
    if end > n:
        return None
    return buf[pos], start, end


def upgrade_request(path: str, port: int) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


# --------------------------------------------------------------------------------------------
# What each server speaks on top of WebSocket
# --------------------------------------------------------------------------------------------


class Dialect:
    """The application protocol: setup, pings, publish and acknowledgement. ``on_text`` runs
    only outside measured windows (setup, idle connections, the publisher's acks) or for a
    frame the lazy walk found while looking for pings."""

    name = ""
    sub_path = ""
    pub_path = ""
    #: a data message's prefix, to count messages (and find ones without an event) afterwards
    msg_mark = b""
    #: byte strings whose presence in a read means "walk the frames now": control frames and
    #: this protocol's application ping
    triggers: tuple[bytes, ...] = (b"\x88", b"\x89")

    def on_open(self, conn: WsConn) -> None:
        """Called once the upgrade is answered."""

    def on_text(self, conn: WsConn, payload: bytes) -> None:
        raise NotImplementedError

    def ping_reply(self, payload: bytes) -> bytes | None:
        """The answer to an application ping in this text payload, if it holds one."""
        return None

    def publish_frame(self, seq: int, t_ns: int) -> bytes:
        raise NotImplementedError


class CentrifugoDialect(Dialect):
    """Centrifugo's client protocol, JSON: one or more JSON objects per frame, LF-separated."""

    name = "sluiceway"
    sub_path = pub_path = "/connection/websocket"
    msg_mark = b'{"push":'
    triggers = (b"\x88", b"\x89", b"{}")

    CONNECT = client_frame(b'{"id":1,"connect":{}}')
    SUBSCRIBE = client_frame(b'{"id":2,"subscribe":{"channel":"%s"}}' % CHANNEL.encode())
    PONG = client_frame(b"{}")

    def on_open(self, conn: WsConn) -> None:
        conn.write(self.CONNECT)

    def ping_reply(self, payload: bytes) -> bytes | None:
        if payload == b"{}" or b"\n{}" in payload or payload.startswith(b"{}\n"):
            return self.PONG
        return None

    def on_text(self, conn: WsConn, payload: bytes) -> None:
        for line in payload.split(b"\n"):
            if line == b"{}":
                conn.write(self.PONG)
                continue
            if line.startswith(b'{"push"'):
                conn.unexpected_data += 1
                continue
            try:
                msg = json.loads(line)
                rid = msg.get("id")
            except (ValueError, AttributeError):
                conn.fail(f"bad reply {line[:200]!r}")
                return
            if "error" in msg:
                if isinstance(rid, int) and rid >= PUB_ID0 and conn.role == "pub":
                    conn.on_ack(rid - PUB_ID0, f"error {msg['error']}")
                else:
                    conn.fail(f"reply {line[:200]!r}")
                return
            if rid == 1 and "connect" in msg:
                if conn.role == "pub":
                    conn.set_ready()
                else:
                    conn.write(self.SUBSCRIBE)
            elif rid == 2 and "subscribe" in msg:
                conn.set_ready()
            elif isinstance(rid, int) and rid >= PUB_ID0 and "publish" in msg:
                conn.on_ack(rid - PUB_ID0, None)
            else:
                conn.unexpected_other += 1

    def publish_frame(self, seq: int, t_ns: int) -> bytes:
        return client_frame(
            b'{"id":%d,"publish":{"channel":"%s","data":{"s":%d,"t":%d}}}'
            % (PUB_ID0 + seq, CHANNEL.encode(), seq, t_ns)
        )


class SocketIODialect(Dialect):
    """Engine.IO 4 / Socket.IO 5 over a WebSocket: one packet per frame."""

    name = "python-socketio"
    sub_path = pub_path = "/socket.io/?EIO=4&transport=websocket"
    msg_mark = b'42["pub"'
    triggers = (b"\x88", b"\x89", b"\x81\x012")  # "2": an Engine.IO ping in its own frame

    CONNECT_SUB = client_frame(b"40")
    CONNECT_PUB = client_frame(b'40{"role":"pub"}')
    PONG = client_frame(b"3")

    def ping_reply(self, payload: bytes) -> bytes | None:
        return self.PONG if payload == b"2" else None

    def on_text(self, conn: WsConn, payload: bytes) -> None:
        if payload == b"2":
            conn.write(self.PONG)
        elif payload.startswith(b"0{"):
            conn.write(self.CONNECT_PUB if conn.role == "pub" else self.CONNECT_SUB)
        elif payload.startswith(b"40"):
            conn.set_ready()
        elif payload.startswith(b"43"):
            end = payload.find(b"[")
            try:
                ack = int(payload[2:end])
            except ValueError:
                conn.fail(f"bad ack {payload[:200]!r}")
                return
            conn.on_ack(ack, None if payload[end:] == b'["ok"]' else f"ack {payload[:200]!r}")
        elif payload.startswith(b"42"):
            conn.unexpected_data += 1
        elif payload.startswith((b"44", b"1", b"41")):
            conn.fail(f"server said {payload[:200]!r}")
        else:
            conn.unexpected_other += 1

    def publish_frame(self, seq: int, t_ns: int) -> bytes:
        return client_frame(b'42%d["pub",{"s":%d,"t":%d}]' % (seq, seq, t_ns))


class WebsocketsDialect(Dialect):
    """The bare peer: "subscribed" once registered; each publish answered with "ok"."""

    name = "websockets"
    sub_path = "/sub"
    pub_path = "/pub"
    msg_mark = b'{"s"'

    def on_open(self, conn: WsConn) -> None:
        if conn.role == "pub":
            conn.set_ready()

    def on_text(self, conn: WsConn, payload: bytes) -> None:
        if payload == b"subscribed":
            conn.set_ready()
        elif payload == b"ok":
            conn.on_ack(-1, None)  # in order: the publisher counts them
        elif payload.startswith(b'{"s"'):
            conn.unexpected_data += 1
        else:
            conn.unexpected_other += 1

    def publish_frame(self, seq: int, t_ns: int) -> bytes:
        return client_frame(b'{"s":%d,"t":%d}' % (seq, t_ns))


DIALECTS: dict[str, Dialect] = {
    "sluiceway": CentrifugoDialect(),
    "python-socketio": SocketIODialect(),
    "websockets": WebsocketsDialect(),
}


# --------------------------------------------------------------------------------------------
# Connections
# --------------------------------------------------------------------------------------------


class WsConn(asyncio.Protocol):
    """A raw WebSocket client: upgrade, frames, the dialect's setup; then, for a subscriber
    whose sink is "lazy", only reads stored with their arrival time (see the module doc)."""

    __slots__ = (
        "buf",
        "closing",
        "count",
        "data_lines",
        "dialect",
        "done",
        "error",
        "frames",
        "head",
        "lazy",
        "on_ack_cb",
        "on_lost_cb",
        "open",
        "pings_answered",
        "read_ns",
        "reads",
        "ready_fut",
        "request",
        "role",
        "seqs",
        "sink",
        "tail",
        "transport",
        "unexpected_data",
        "unexpected_other",
        "walk_i",
        "walk_off",
    )

    def __init__(
        self,
        dialect: Dialect,
        role: str,
        request: bytes,
        sink: Sink,
        ready_fut: asyncio.Future[None],
    ) -> None:
        self.dialect = dialect
        self.role = role  # "sub" or "pub"
        self.request = request
        self.sink = sink
        self.ready_fut = ready_fut
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.open = False
        self.buf = b""  # eager mode: bytes of an incomplete frame
        self.lazy = False
        self.reads: list[bytes] = []  # lazy mode: raw reads, parsed after the window
        self.read_ns = array("q")  # lazy mode: arrival time of each read
        self.tail = b""  # lazy mode: last bytes of the previous read
        self.count = 0  # lazy mode: events seen so far
        self.walk_i = 0  # lazy mode: frames walked up to reads[walk_i][walk_off:]
        self.walk_off = 0
        self.seqs = array("q")
        self.data_lines = 0  # data messages found by replay (check_delivery's name)
        self.frames = 0
        self.pings_answered = 0
        self.unexpected_data = 0
        self.unexpected_other = 0
        self.on_ack_cb: Callable[[int, str | None], None] | None = None
        self.on_lost_cb: Callable[[], None] | None = None
        self.done = False
        self.closing = False
        self.error: str | None = None

    # -- plumbing ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, hence the cast.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.on_lost_cb is not None:
            self.on_lost_cb()
        if not self.ready_fut.done():
            self.ready_fut.set_exception(
                ConnectionError(self.error or f"closed before subscribed: {exc!r}")
            )
        elif not self.closing:
            self.sink.unexpected_close += 1
            self.error = self.error or f"closed by server: {exc!r}"

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closing:
            self.transport.write(data)

    def fail(self, why: str) -> None:
        self.error = why
        if not self.ready_fut.done():
            self.ready_fut.set_exception(ConnectionError(why))
        self.close()

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def set_ready(self) -> None:
        if self.ready_fut.done():
            return
        sink = self.sink
        sink.headers_done += 1  # fanout's Sink: "headers" here means "subscribed"
        sink.last_header_ns = time.monotonic_ns()
        if self.role == "sub" and sink.mode == "lazy":
            self.lazy = True
        self.ready_fut.set_result(None)

    def on_ack(self, seq: int, err: str | None) -> None:
        if self.on_ack_cb is None:
            self.unexpected_other += 1
        else:
            self.on_ack_cb(seq, err)

    # -- receiving -----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if not self.open:
            head = self.head + data
            end = head.find(b"\r\n\r\n")
            if end < 0:
                self.head = head
                if len(head) > MAX_HEAD:
                    self.fail("response head too large")
                return
            self.head = b""
            if head[9:12] != b"101":
                self.fail(f"upgrade refused: {head[: min(end, 200)]!r}")
                return
            self.open = True
            self.dialect.on_open(self)
            data = head[end + 4 :]
            if not data:
                return
        if self.lazy:
            self._lazy(data)
        else:
            self._eager(data)

    def _lazy(self, data: bytes) -> None:
        sink = self.sink
        self.read_ns.append(time.monotonic_ns())
        self.reads.append(data)
        sink.reads += 1
        n = data.count(EVENT_MARK)
        probe = self.tail + data[:MARK_TAIL] if self.tail else b""
        if probe:
            n += probe.count(EVENT_MARK)
        self.tail = (self.tail + data)[-MARK_TAIL:] if len(data) < MARK_TAIL else data[-MARK_TAIL:]
        for trigger in self.dialect.triggers:
            if trigger in data or trigger in probe:
                self._walk_lazy()
                break
        if n:
            self.count += n
            if not self.done and self.count >= sink.expected:
                self.done = True
                sink.sub_done()

    def _walk_lazy(self) -> None:
        """Walk the frames stored since the last walk; answer pings, note a close."""
        reads, i = self.reads, self.walk_i
        buf = reads[i] if i == len(reads) - 1 else b"".join(reads[i:])
        pos = self.walk_off
        dialect = self.dialect
        try:
            while (f := frame_at(buf, pos)) is not None:
                b0, start, end = f
                pos = end
                op = b0 & 0x0F
                if op == 0x1:
                    if reply := dialect.ping_reply(buf[start:end]):
                        self.write(reply)
                        self.pings_answered += 1
                elif op >= 0x8:
                    self._control(op, buf[start:end])
        except ValueError as exc:
            self.fail(str(exc))
            return
        rest = len(buf) - pos
        j = len(reads)
        while rest > 0:
            j -= 1
            rest -= len(reads[j])
        self.walk_i, self.walk_off = j, -rest

    def _eager(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        pos = 0
        dialect = self.dialect
        try:
            while (f := frame_at(buf, pos)) is not None:
                b0, start, end = f
                pos = end
                self.frames += 1
                op = b0 & 0x0F
                if op == 0x1:
                    dialect.on_text(self, buf[start:end])
                elif op >= 0x8:
                    self._control(op, buf[start:end])
                else:
                    self.unexpected_other += 1
                if self.lazy:  # subscribed: what follows goes to the lazy path
                    self.buf = b""
                    if pos < len(buf):
                        self._lazy(buf[pos:])
                    return
        except ValueError as exc:
            self.fail(str(exc))
            return
        self.buf = buf[pos:]

    def _control(self, op: int, payload: bytes) -> None:
        if op == 0x9:
            self.write(client_frame(payload, 0xA))
            self.pings_answered += 1
        elif op == 0x8:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
            self.fail(f"server sent close {code} {payload[2:100]!r}")

    # -- after the window ----------------------------------------------------------------

    def replay(self, latencies: array[int] | None = None) -> None:
        """Parse what lazy mode stored: frames (checked), data messages, seqs; with
        `latencies`, also (receive time of the read that completed it - t) per event."""
        reads, read_ns = self.reads, self.read_ns
        self.reads, self.read_ns = [], array("q")
        self.frames = 0
        stream = b"".join(reads)
        payloads: list[bytes] = []
        pos = 0
        try:
            while (f := frame_at(stream, pos)) is not None:
                b0, start, end = f
                pos = end
                if b0 & 0x0F in (0x0, 0x1):  # text, or a continuation of one
                    payloads.append(stream[start:end])
                    self.frames += 1
        except ValueError as exc:
            self.error = self.error or f"replay: {exc}"
        if pos != len(stream) and not self.error:
            self.error = f"replay: {len(stream) - pos} bytes of an incomplete frame at the end"
        text = b"".join(payloads)
        self.data_lines = text.count(self.dialect.msg_mark)
        if latencies is None:
            self.seqs = array("q", map(int, SEQ_RE.findall(text)))
            return
        # Per read, so that each sample gets the arrival time of the read that completed it.
        seqs = array("q")
        carry = b""
        for data, t in zip(reads, read_ns, strict=True):
            buf = carry + data if carry else data
            last = 0
            for m in SEQ_T_RE.finditer(buf):
                seqs.append(int(m[1]))
                latencies.append(t - int(m[2]))
                last = m.end()
            carry = buf[max(last, len(buf) - 256) :]
        self.seqs = seqs


async def open_conns(
    dialect: Dialect,
    role: str,
    port: int,
    count: int,
    concurrency: int,
    sink: Sink,
    limit_s: float,
) -> tuple[list[WsConn], list[str], float]:
    """Open `count` connections and take each through its setup (subscribed / joined), at most
    `concurrency` in flight. Returns (ready ones, errors, seconds until the last was ready).
    On expiry of `limit_s` every connection made is closed."""
    loop = asyncio.get_running_loop()
    request = upgrade_request(dialect.pub_path if role == "pub" else dialect.sub_path, port)
    sem = asyncio.Semaphore(concurrency)
    made: list[WsConn] = []
    ready: list[WsConn] = []
    errors: list[str] = []
    sink.n_subs = count

    def factory(fut: asyncio.Future[None]) -> WsConn:
        conn = WsConn(dialect, role, request, sink, fut)
        made.append(conn)
        return conn

    async def one() -> None:
        async with sem:
            fut: asyncio.Future[None] = loop.create_future()
            try:
                _, conn = await loop.create_connection(lambda: factory(fut), HOST, port)
                await fut
                ready.append(conn)
            except (OSError, ConnectionError) as exc:
                errors.append(str(exc) if isinstance(exc, ConnectionError) else repr(exc))

    t0 = time.monotonic_ns()
    try:
        async with asyncio.timeout(limit_s):
            await asyncio.gather(*(one() for _ in range(count)))
    except TimeoutError:
        await close_subscribers(made)  # type: ignore[arg-type]
        raise TimeoutError(
            f"subscribing timed out after {limit_s}s: {len(ready)}/{count} ready,"
            f" {len(errors)} errors"
        ) from None
    elapsed = (sink.last_header_ns - t0) / 1e9 if sink.headers_done else float("nan")
    sink.n_subs = len(ready)
    return ready, errors, elapsed


# --------------------------------------------------------------------------------------------
# Publisher
# --------------------------------------------------------------------------------------------


async def publish(
    dialect: Dialect,
    port: int,
    count: int,
    window: int,
    rate: float | None,
    stats: PublishStats,
    stop: asyncio.Event,
) -> None:
    """Publish seq 0..count-1 on one connection, at most `window` unacknowledged.

    With `rate`, publish i is sent at t0 + i/rate (absolute schedule, no drift), the window
    still applying. `t` in each event is time.monotonic_ns() just before its frame is written.
    """
    sink = Sink("idle")
    conns, errors, _ = await open_conns(dialect, "pub", port, 1, 1, sink, 10.0)
    if not conns:
        raise ConnectionError(f"publisher: {errors}")
    conn = conns[0]
    slots = asyncio.Semaphore(window)
    all_acked = asyncio.Event()
    in_order = [0]  # for a dialect whose acks carry no id (they come in order)

    def on_ack(seq: int, err: str | None) -> None:
        if seq < 0:
            seq = in_order[0]
            in_order[0] += 1
        if err is None:
            stats.ok += 1
            stats.ids.append(str(seq))
        else:
            stats.errors.append(f"seq {seq}: {err}")
        stats.last_ns = time.monotonic_ns()
        slots.release()
        if stats.ok + len(stats.errors) >= count:
            all_acked.set()

    conn.on_ack_cb = on_ack
    # Set when the phase stops the publisher or its connection goes: nothing waits for acks
    # that cannot come.
    halt = asyncio.Event()
    conn.on_lost_cb = halt.set
    halt_task = asyncio.create_task(halt.wait())
    stop_task = asyncio.create_task(stop.wait())
    stop_task.add_done_callback(lambda _: halt.set())

    async def until_halt(aw: Any) -> bool:
        """Await `aw` unless halted first; True if it completed."""
        task = asyncio.ensure_future(aw)
        done, _ = await asyncio.wait((task, halt_task), return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return True
        task.cancel()
        return False

    stats.first_ns = time.monotonic_ns()
    t0 = time.monotonic()
    try:
        for seq in range(count):
            if halt.is_set():
                break
            if rate is not None:
                delay = t0 + seq / rate - time.monotonic()
                if delay > 0:
                    await until_halt(asyncio.sleep(delay))
                elif delay < -0.005:
                    stats.late += 1
            if not (slots.locked() or halt.is_set()):
                await slots.acquire()  # does not block
            elif not await until_halt(slots.acquire()):
                break
            conn.write(dialect.publish_frame(seq, time.monotonic_ns()))
            stats.sent += 1
        else:
            await until_halt(all_acked.wait())
        lost = conn.transport is not None and conn.transport.is_closing() and not conn.closing
        if conn.error or lost:
            stats.errors.append(f"publisher connection: {conn.error or 'closed by the server'}")
    finally:
        halt_task.cancel()
        stop_task.cancel()
        conn.write(client_frame(b"\x03\xe8", 0x8))  # close 1000 (else the peers log an abort)
        conn.close()


# --------------------------------------------------------------------------------------------
# Phases
# --------------------------------------------------------------------------------------------


def conn_notes(conns: Sequence[WsConn]) -> dict[str, int]:
    return {
        "pings_answered": sum(c.pings_answered for c in conns),
        "unexpected_data_messages": sum(c.unexpected_data for c in conns),
        "unexpected_other_messages": sum(c.unexpected_other for c in conns),
        "connections_with_errors": sum(1 for c in conns if c.error),
    }


def error_samples(conns: Sequence[WsConn]) -> list[str]:
    return sorted({c.error for c in conns if c.error})[:5]


async def phase_idle(srv: ServerProcess, args: argparse.Namespace) -> dict[str, Any]:
    dialect = DIALECTS[srv.name]
    await srv.wait_quiet()
    machine = await wait_machine_quiet((args.server_cpu, args.loadgen_cpu), args.quiet_wait)
    rss_before = srv.rss_bytes()
    sink = Sink("idle")
    cpu = CpuWindow(srv, args.server_cpu, args.loadgen_cpu)
    conns, errors, accept_s = await open_conns(
        dialect,
        "sub",
        srv.port,
        args.idle_connections,
        args.connect_concurrency,
        sink,
        args.timeout,
    )
    cpu_r = cpu.stop()
    try:
        quiet_s = await srv.wait_quiet()
        await asyncio.sleep(0.5)
        rss_after = srv.rss_bytes()
        still_open = sum(1 for c in conns if not c.error)
    finally:
        await close_subscribers(conns)  # type: ignore[arg-type]
    n = len(conns)
    return {
        "ok": not errors and n == args.idle_connections and still_open == n,
        "connections_requested": args.idle_connections,
        "connections_open": n,
        "still_open_at_rss_sample": still_open,
        "connect_concurrency": args.connect_concurrency,
        "connect_errors": len(errors),
        "connect_error_samples": sorted(set(errors))[:5],
        "accept_s": round(accept_s, 3),
        "rss_before_kib": rss_before // 1024,
        "rss_after_kib": rss_after // 1024,
        "kib_per_connection": round((rss_after - rss_before) / 1024 / n, 2) if n else None,
        # fanout.summary_line's name for it
        "kib_per_subscriber": round((rss_after - rss_before) / 1024 / n, 2) if n else None,
        "settle_after_connect_s": round(quiet_s, 2),
        "machine_before": machine,
        "cpu": cpu_r,
        **conn_notes(conns),
        "error_samples": error_samples(conns),
    }


async def run_fanout(
    srv: ServerProcess, args: argparse.Namespace, events: int, rate: float | None
) -> tuple[Sink, list[WsConn], PublishStats, dict[str, Any]]:
    """Subscribe, publish, wait for delivery; returns raw material for the phase report."""
    dialect = DIALECTS[srv.name]
    sink = Sink("lazy", expected=events)
    subs, errors, accept_s = await open_conns(
        dialect, "sub", srv.port, args.subscribers, args.connect_concurrency, sink, args.timeout
    )
    info: dict[str, Any] = {
        "subscribers": len(subs),
        "subscribe_errors": len(errors),
        "subscribe_error_samples": sorted(set(errors))[:5],
        "subscribe_s": round(accept_s, 3),
    }
    stats = PublishStats()
    if not subs:
        return sink, subs, stats, info
    # Every subscriber has its subscribe/join answered; this only lets the server settle.
    await asyncio.sleep(args.settle)
    await srv.wait_quiet(max_s=5)
    info["machine_before"] = await wait_machine_quiet(
        (args.server_cpu, args.loadgen_cpu), args.quiet_wait
    )
    stop = asyncio.Event()
    cpu = CpuWindow(srv, args.server_cpu, args.loadgen_cpu)
    pub = asyncio.create_task(publish(dialect, srv.port, events, args.window, rate, stats, stop))
    deadline = args.timeout + (events / rate if rate else 0)
    outcome = "done"
    try:
        async with asyncio.timeout(deadline):
            # Also stop early once publishing is over and nothing has arrived for a while:
            # a lost event would otherwise cost the whole deadline.
            idle_for, last_reads = 0.0, -1
            while not sink.all_done.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.25):
                        await sink.all_done.wait()
                if pub.done() and sink.reads == last_reads:
                    idle_for += 0.25
                    if idle_for >= args.stall:
                        outcome = "stalled"
                        break
                else:
                    idle_for, last_reads = 0.0, sink.reads
    except TimeoutError:
        outcome = "timeout"
    info["cpu"] = cpu.stop()
    stop.set()
    try:
        async with asyncio.timeout(10):
            await pub
    except TimeoutError:
        pub.cancel()
        stats.errors.append("publisher did not finish within 10 s after the phase")
    except (OSError, ConnectionError) as exc:
        stats.errors.append(f"publisher: {exc!r}")
    info["timed_out"] = outcome != "done"
    info["outcome"] = outcome
    info["deadline_s"] = deadline
    # Give stragglers (duplicates, late frames) a moment to show up before checking.
    await asyncio.sleep(0.3)
    return sink, subs, stats, info


async def phase_throughput(srv: ServerProcess, args: argparse.Namespace) -> dict[str, Any]:
    sink, subs, stats, info = await run_fanout(srv, args, args.events, None)
    try:
        for sub in subs:
            sub.replay()
        delivered = sum(len(s.seqs) for s in subs)
        complete = not info["timed_out"] and sink.done_count == len(subs) == args.subscribers
        elapsed = (sink.last_done_ns - stats.first_ns) / 1e9 if complete else None
        check = check_delivery(subs, args.events, 1)  # type: ignore[arg-type]
        ok = (
            not info["timed_out"]
            and check["ok"]
            and not stats.errors
            and len(subs) == args.subscribers
        )
        return {
            "ok": ok,
            **info,
            "events": args.events,
            "window": args.window,
            "publish": publish_report(stats, args.events),
            "deliveries_expected": len(subs) * args.events,
            "deliveries_received": delivered,
            "elapsed_s": round(elapsed, 3) if elapsed else None,
            "deliveries_per_s": round(len(subs) * args.events / elapsed) if elapsed else None,
            "subscribers_complete": sink.done_count,
            "frames_received": sum(s.frames for s in subs),
            "check": check,
            **conn_notes(subs),
            "error_samples": error_samples(subs),
        }
    finally:
        await close_subscribers(subs)  # type: ignore[arg-type]


async def phase_latency(srv: ServerProcess, args: argparse.Namespace) -> dict[str, Any]:
    events = round(args.latency_rate * args.latency_duration)
    _, subs, stats, info = await run_fanout(srv, args, events, args.latency_rate)
    try:
        samples: array[int] = array("q")
        for sub in subs:
            sub.replay(samples)
        lat = sorted(samples)
        check = check_delivery(subs, events, 1)  # type: ignore[arg-type]
        ms = 1e6
        ok = not info["timed_out"] and check["ok"] and not stats.errors
        return {
            "ok": ok,
            **info,
            "events": events,
            "rate": args.latency_rate,
            "window": args.window,
            "publish": publish_report(stats, events),
            "samples": len(lat),
            "p50_ms": round(percentile(lat, 0.50) / ms, 2),
            "p90_ms": round(percentile(lat, 0.90) / ms, 2),
            "p99_ms": round(percentile(lat, 0.99) / ms, 2),
            "max_ms": round(lat[-1] / ms, 2) if lat else None,
            "mean_ms": round(sum(lat) / len(lat) / ms, 2) if lat else None,
            "check": check,
            **conn_notes(subs),
            "error_samples": error_samples(subs),
        }
    finally:
        await close_subscribers(subs)  # type: ignore[arg-type]


PHASES: dict[str, Callable[[ServerProcess, argparse.Namespace], Any]] = {
    "idle": phase_idle,
    "throughput": phase_throughput,
    "latency": phase_latency,
}


# fanout's runner (bench_server → start_server → ServerProcess) looks these two names up in
# its own module when it runs: point them at the WebSocket servers and phases.
fanout.server_command = server_command
fanout.PHASES = PHASES


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def render_table(results: dict[str, Any], args: argparse.Namespace) -> str:
    names = list(results)

    def get(name: str, phase: str) -> dict[str, Any]:
        return results[name]["phases"].get(phase, {})

    def status(r: dict[str, Any]) -> str:
        if not r:
            return "not run"
        if "error" in r:
            return f"**FAILED**: {r['error'][:100]}"
        if r.get("ok"):
            return "ok"
        c = r.get("check", {})
        keys = ("missing", "duplicates", "unexpected", "order_violations", "malformed_blocks")
        bits = [f"{k}={c[k]}" for k in keys if c.get(k)]
        if r.get("timed_out"):
            bits.insert(0, r.get("outcome", "timeout"))
        if errs := r.get("connect_errors") or r.get("subscribe_errors"):
            bits.append(f"connect errors={errs}")
        if c.get("unexpected_closes"):
            bits.append(f"closed by server={c['unexpected_closes']}")
        if r.get("publish", {}).get("errors"):
            bits.append(f"publish errors={r['publish']['errors']}")
        if samples := r.get("error_samples"):
            bits.append(f"e.g. {samples[0][:80]}")
        return "**NOT OK**: " + (", ".join(bits) or "see JSON")

    def cpu(r: dict[str, Any]) -> str:
        c = r.get("cpu")
        if not c:
            return "-"
        s, lg = c["server_cpu_pct"], c["loadgen_cpu_pct"]
        return f"{c['server_cpu_s']:.1f} s, {s:.0f}% / {lg:.0f}%"

    def core(r: dict[str, Any]) -> str:
        c = r.get("cpu")
        if not c or "server_core_busy_pct" not in c:
            return "-"
        return f"{c['server_core_busy_pct']:.0f}% / {c['loadgen_core_busy_pct']:.0f}%"

    def value(phase: str, key: str, spec: str = "") -> Callable[[str], str]:
        return lambda n: fmt(get(n, phase).get(key), spec)

    def rss(n: str) -> str:
        r = get(n, "idle")
        if "rss_after_kib" not in r:
            return "-"
        return f"{r['rss_before_kib'] / 1024:.0f} → {r['rss_after_kib'] / 1024:.0f}"

    cpu_label = "server CPU s, process CPU server / loadgen"
    rows: list[tuple[str, Callable[[str], str]]] = []
    if "throughput" in args.phases:
        t = f"Throughput, {args.subscribers:,} subs x {args.events:,} events"
        rows += [
            (f"{t}: deliveries/s", value("throughput", "deliveries_per_s", ",")),
            (f"{t}: elapsed s", value("throughput", "elapsed_s")),
            (
                f"{t}: publish rate, events/s",
                lambda n: fmt(get(n, "throughput").get("publish", {}).get("rate_per_s"), ",.0f"),
            ),
            (f"{t}: frames received per event", lambda n: per_event_frames(get(n, "throughput"))),
            (f"{t}: loss / dup / order", lambda n: status(get(n, "throughput"))),
            (f"{t}: {cpu_label}", lambda n: cpu(get(n, "throughput"))),
            (f"{t}: core busy server / loadgen", lambda n: core(get(n, "throughput"))),
        ]
    if "latency" in args.phases:
        t = (
            f"Latency, {args.subscribers:,} subs, "
            f"{args.latency_rate:g} ev/s x {args.latency_duration:g} s"
        )
        rows += [
            (f"{t}: p50 ms", value("latency", "p50_ms")),
            (f"{t}: p99 ms", value("latency", "p99_ms")),
            (f"{t}: max ms", value("latency", "max_ms")),
            (f"{t}: loss / dup / order", lambda n: status(get(n, "latency"))),
            (f"{t}: {cpu_label}", lambda n: cpu(get(n, "latency"))),
            (f"{t}: core busy server / loadgen", lambda n: core(get(n, "latency"))),
        ]
    if "idle" in args.phases:
        t = f"Idle, {args.idle_connections:,} conns ({args.connect_concurrency} in setup at once)"
        rows += [
            (f"{t}: time until all subscribed, s", value("idle", "accept_s")),
            (f"{t}: KiB per idle connection", value("idle", "kib_per_connection")),
            (f"{t}: server RSS before → after, MiB", rss),
            (f"{t}: status", lambda n: status(get(n, "idle"))),
            (f"{t}: {cpu_label}", lambda n: cpu(get(n, "idle"))),
            (f"{t}: core busy server / loadgen", lambda n: core(get(n, "idle"))),
        ]
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for label, f in rows:
        lines.append(f"| {label} | " + " | ".join(f(n) for n in names) + " |")

    # Ratios: every server against python-socketio and against websockets broadcast().
    bases = [b for b in ("python-socketio", "websockets") if b in names]
    pairs: list[tuple[str, str]] = []
    for b in bases:
        pairs += [(n, b) for n in names if n != b and (b, n) not in pairs]
    if pairs:
        lines += ["", "| ratio (one run) | " + " | ".join(f"{n} vs {b}" for n, b in pairs) + " |"]
        lines.append("|---|" + "---:|" * len(pairs))
        for label, phase, key, higher_better, word in (
            ("throughput (deliveries/s)", "throughput", "deliveries_per_s", True, "higher"),
            ("latency p50", "latency", "p50_ms", False, "lower"),
            ("latency p99", "latency", "p99_ms", False, "lower"),
            ("memory per idle connection", "idle", "kib_per_connection", False, "smaller"),
            ("time until all subscribed", "idle", "accept_s", False, "faster"),
        ):
            if phase not in args.phases:
                continue
            cells = []
            for n, b in pairs:
                ours, theirs = get(n, phase).get(key), get(b, phase).get(key)
                if not ours or not theirs or ours <= 0 or theirs <= 0:
                    cells.append("-")
                    continue
                r = ours / theirs if higher_better else theirs / ours
                cells.append(f"{r:.2f}x {word}")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")

    if "sluiceway" in results:
        ours = results["sluiceway"]["phases"]
        aims = []
        tput = ours.get("throughput", {}).get("deliveries_per_s")
        base = results.get("python-socketio", {}).get("phases", {}).get("throughput", {})
        if tput and base.get("deliveries_per_s"):
            r = tput / base["deliveries_per_s"]
            aims.append(f"{r:.1f}x python-socketio's deliveries/s (≥ 3: {met(r >= 3)})")
        kib = ours.get("idle", {}).get("kib_per_connection")
        if kib is not None:
            aims.append(f"{kib} KiB per idle connection (≤ 16: {met(kib <= 16)})")
        if aims:
            lines += ["", "sluiceway aims: " + "; ".join(aims)]

    notes = []
    for n in names:
        for phase, r in results[n]["phases"].items():
            c = r.get("cpu")
            if not c:
                continue
            lg = c.get("loadgen_core_busy_pct", c["loadgen_cpu_pct"])
            sv = c.get("server_core_busy_pct", c["server_cpu_pct"])
            if lg >= 90 and lg >= sv:
                notes.append(
                    f"{n}/{phase}: load generator core {lg}% busy (server core {sv}%),"
                    " result may be load-generator-bound"
                )
            other = disturbance(r)
            if other >= DISTURBED_PCT:
                notes.append(
                    f"{n}/{phase}: up to {other}% of a benchmark core went to other work"
                    " (see *_core_other_pct in the JSON), numbers are disturbed"
                )
            if c.get("server_core_steal_pct", 0) + c.get("loadgen_core_steal_pct", 0) >= 5:
                notes.append(f"{n}/{phase}: hypervisor steal >= 5%, numbers are noisy")
    if notes:
        lines += ["", "Warnings: " + "; ".join(notes)]
    lines += [
        "",
        f"Publishing: one publisher connection, at most {args.window} publishes unacknowledged"
        " (sluiceway: the publish reply; python-socketio: the event's ack; websockets: an"
        " 'ok' after broadcast()). Server CPU s: user+system seconds of the server process in"
        " the measured window; process CPU: the same and the load generator's, as % of the"
        " window. Core busy: the pinned cores (server / load generator) from /proc/stat,"
        " including softirq time, where loopback TCP delivery is accounted.",
    ]
    return "\n".join(lines)


def met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def per_event_frames(r: dict[str, Any]) -> str:
    frames, subs, events = r.get("frames_received"), r.get("subscribers"), r.get("events")
    if not frames or not subs or not events:
        return "-"
    return f"{frames / (subs * events):.2f}"


def machine_info(args: argparse.Namespace) -> dict[str, Any]:
    info = fanout.machine_info(args)
    versions = {}
    for pkg in (
        "sluiceway",
        "uvicorn",
        "uvloop",
        "httptools",
        "websockets",
        "python-socketio",
        "python-engineio",
    ):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    info["versions"] = versions
    # The commit alone does not say what ran when src/ had uncommitted changes.
    status = subprocess.run(
        ["git", "status", "--porcelain", "--", "src"], cwd=ROOT, capture_output=True, text=True
    ).stdout
    info["src_uncommitted_changes"] = status.splitlines()
    with contextlib.suppress(OSError):
        info["ip_local_port_range"] = (
            Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        )
    return info


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--servers",
        default=",".join(SERVER_NAMES),
        help="comma-separated subset of: " + ", ".join(SERVER_NAMES),
    )
    p.add_argument(
        "--phases",
        default="throughput,latency,idle",
        help="comma-separated subset of: idle, throughput, latency",
    )
    p.add_argument(
        "--subscribers", type=int, default=1000, help="subscribers in throughput and latency"
    )
    p.add_argument(
        "--events", type=int, default=2000, help="events published in the throughput phase"
    )
    p.add_argument(
        "--window",
        type=int,
        default=50,
        help="most publishes sent and not yet acknowledged (one publisher connection)",
    )
    p.add_argument("--latency-rate", type=float, default=10.0, help="events/s in the latency phase")
    p.add_argument(
        "--latency-duration",
        type=float,
        default=10.0,
        help="seconds of publishing in the latency phase",
    )
    p.add_argument(
        "--idle-connections",
        type=int,
        default=10_000,
        help="connections (subscribed, idle) in the idle phase",
    )
    p.add_argument(
        "--connect-concurrency",
        type=int,
        default=1000,
        help="connections in their setup (upgrade + connect + subscribe) at once",
    )
    fanout.add_run_arguments(p)
    args = p.parse_args(argv)
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    args.phases = [s.strip() for s in args.phases.split(",") if s.strip()]
    for s in args.servers:
        if s not in SERVER_NAMES:
            p.error(f"unknown server {s!r}")
    for ph in args.phases:
        if ph not in PHASES:
            p.error(f"unknown phase {ph!r}")
    if args.quick:
        args.subscribers, args.events, args.idle_connections = 100, 200, 1000
        args.latency_duration = 2.0
    return args


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    # SIGTERM cancels the run, so that fanout's runner stops the server it has started (each
    # server has a session of its own and would outlive this process).
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    log_dir = Path(tempfile.mkdtemp(prefix="ws-fanout-logs-"))
    results: dict[str, Any] = {}
    t0 = time.monotonic()
    for name in args.servers:
        print(f"== {name}", file=sys.stderr, flush=True)
        results[name] = await fanout.bench_server(name, args, log_dir)
    print(f"server logs in {log_dir}", file=sys.stderr)
    return {"results": results, "total_wall_s": round(time.monotonic() - t0, 1)}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # fanout's summary line reads this name.
    args.idle_subscribers = args.idle_connections
    # Many sockets: connections here plus, for the servers (inherited), their accepted ends.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(args.idle_connections, args.subscribers) + 1024
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(want, soft)), hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < want:
        print(f"warning: RLIMIT_NOFILE {soft}/{hard} below the {want} needed", file=sys.stderr)
    with contextlib.suppress(OSError, ValueError):
        lo, hi = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        if hi - lo < want:
            print(
                f"warning: ephemeral ports {lo}-{hi} are fewer than the {want} needed"
                " (sysctl net.ipv4.ip_local_port_range)",
                file=sys.stderr,
            )
    # Clients may publish on channels starting with "bench" (sluiceway refuses otherwise).
    os.environ.setdefault("SLUICEWAY_WS_PUBLISH_CHANNELS", '["bench*"]')
    # The publisher stands for a trusted backend, not a browser: lift the per-connection
    # command rate limit (default 100/s, burst 200), which would otherwise cap it at 100/s.
    os.environ.setdefault("SLUICEWAY_WS_COMMAND_RATE", "1000000")
    os.environ.setdefault("SLUICEWAY_WS_COMMAND_BURST", "1000000")
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {args.loadgen_cpu})
    started = time.strftime("%Y%m%d-%H%M%S")
    try:
        run = uvloop.run(amain(args))
    except asyncio.CancelledError:
        print("stopped by SIGTERM", file=sys.stderr)
        return 143
    doc = {
        "benchmark": "ws_fanout",
        "started": started,
        "argv": sys.argv[1:] if argv is None else list(argv),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": machine_info(args),
        **run,
    }
    table = render_table(run["results"], args)
    doc["table_markdown"] = table
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"ws_fanout-{started}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(table)
    print(f"\nresults: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    print(f"total {run['total_wall_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
