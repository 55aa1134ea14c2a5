"""WebSocket fan-out benchmark: sluiceway vs python-socketio vs websockets ``broadcast()``.

One run starts each server in turn (pinned to one CPU), drives it from this process (pinned to
another CPU) and prints a markdown table; the full results go to ``bench/results/*.json``.

Servers (each on a free loopback port, one at a time):

* ``sluiceway``       ``sluiceway serve``; Centrifugo's bidirectional client protocol, JSON
                      format, on ``/connection/websocket`` (connect, subscribe to ``bench``;
                      the publisher sends ``publish`` commands on its own connection).
* ``sluiceway-protobuf`` the same server and protocol in its Protobuf format (the
                      ``centrifuge-protobuf`` subprotocol, binary frames, length-prefixed
                      messages); the published data is the same JSON text, as bytes.
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
delivery check are the harness's (``bench/harness/``), shared with ``bench/fanout.py``.
Sluiceway's per-connection command rate limit is lifted for the run (the publisher stands for
a trusted backend; see bench/README.md).

    uv run python bench/ws_fanout.py --help
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import sys
import time
from array import array
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import uvloop
from harness import BENCH_DIR, HOST, VENV_BIN
from harness.cli import choices, parser
from harness.http import MAX_HEAD, build_request
from harness.machine import pin_self, raise_nofile, src_changes
from harness.procs import UVLOOP_HTTPTOOLS, Proc, pinned, sluiceway_command, uvicorn_command
from harness.report import (
    Metric,
    config_of,
    key_of,
    md_table,
    met,
    ratio_table,
    save_results,
    timestamp,
)
from harness.runner import (
    Phase,
    add_run_arguments,
    delivery_status,
    fanout_machine_info,
    fanout_rows,
    idle_window,
    latency_result,
    load_notes,
    rss_cell,
    run_fanout,
    run_servers,
    throughput_result,
    value_cell,
)
from harness.sse import (
    PublishStats,
    Sink,
    close_subscribers,
    open_connections,
)

SERVER_NAMES = ("sluiceway", "sluiceway-protobuf", "python-socketio", "websockets")
#: Versions the JSON records.
PACKAGES = (
    "sluiceway",
    "uvicorn",
    "uvloop",
    "httptools",
    "websockets",
    "python-socketio",
    "python-engineio",
)
CHANNEL = "bench"

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
    if name.startswith("sluiceway"):
        return sluiceway_command(cpu, port)
    if name == "python-socketio":
        return uvicorn_command(
            cpu,
            "ws_peers:socketio_app",
            port,
            *UVLOOP_HTTPTOOLS,
            "--ws",
            "auto",
            "--workers",
            "1",
            "--log-level",
            "warning",
            "--backlog",
            "4096",
        )
    return [
        *pinned(cpu),
        str(VENV_BIN / "python"),
        str(BENCH_DIR / "peers" / "ws_peers.py"),
        "websockets",
        "--host",
        HOST,
        "--port",
        str(port),
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


def upgrade_request(path: str, port: int, subprotocol: str = "") -> bytes:
    headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    if subprotocol:
        headers["Sec-WebSocket-Protocol"] = subprotocol
    return build_request("GET", path, port, headers=headers)


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
    #: the WebSocket subprotocol asked for in the upgrade (none: the server's default)
    subprotocol = ""

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


class CentrifugoProtobufDialect(Dialect):
    """Centrifugo's client protocol, Protobuf: length-prefixed messages in binary frames; the
    server's ping is an empty message. The publication data is the JSON dialect's JSON text,
    so the event marks and the replay's regular expressions find it inside the messages."""

    name = "sluiceway-protobuf"
    sub_path = pub_path = "/connection/websocket"
    subprotocol = "centrifuge-protobuf"
    # A push reply to the channel "bench": the push (field 4) whose channel (field 2) it is.
    msg_mark = b"\x12\x05" + CHANNEL.encode() + b"\x22"
    triggers = (b"\x88", b"\x89", b"\x82\x01\x00")  # an empty message alone: a ping

    def __init__(self) -> None:
        from sluiceway.centrifugo.protobuf_frames import delimited, split
        from sluiceway.centrifugo.wire import client_pb2

        self.pb = client_pb2
        self.split = split
        self.delimited = delimited
        self.CONNECT = self._command(id=1, connect=client_pb2.ConnectRequest())
        self.SUBSCRIBE = self._command(id=2, subscribe=client_pb2.SubscribeRequest(channel=CHANNEL))
        self.PONG = client_frame(b"\x00", 0x2)

    def _command(self, **fields: Any) -> bytes:
        message = self.pb.Command(**fields).SerializeToString()
        return client_frame(self.delimited(message), 0x2)

    def on_open(self, conn: WsConn) -> None:
        conn.write(self.CONNECT)

    def _replies(self, payload: bytes) -> list[Any] | None:
        try:
            return [self.pb.Reply.FromString(message) for message in self.split(payload)]
        except Exception:  # bad lengths (a Disconnect) or a message that does not decode
            return None

    def ping_reply(self, payload: bytes) -> bytes | None:
        """Walks the length prefixes only (no parsing): binary data makes the lazy path look
        at most reads (0x88/0x89 are common bytes in varints), so this must stay cheap."""
        pos, end = 0, len(payload)
        while pos < end:
            n, shift = 0, 0
            while pos < end:
                b = payload[pos]
                pos += 1
                n |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
            if n == 0:
                return self.PONG
            pos += n
        return None

    def on_text(self, conn: WsConn, payload: bytes) -> None:
        replies = self._replies(payload)
        if replies is None:
            conn.fail(f"bad frame {payload[:200]!r}")
            return
        for reply in replies:
            rid = reply.id
            if reply.ByteSize() == 0:
                conn.write(self.PONG)
            elif reply.HasField("push"):
                conn.unexpected_data += 1
            elif reply.HasField("error"):
                if rid >= PUB_ID0 and conn.role == "pub":
                    conn.on_ack(rid - PUB_ID0, f"error {reply.error.code}")
                else:
                    conn.fail(f"reply {reply}")
                return
            elif rid == 1 and reply.HasField("connect"):
                if conn.role == "pub":
                    conn.set_ready()
                else:
                    conn.write(self.SUBSCRIBE)
            elif rid == 2 and reply.HasField("subscribe"):
                conn.set_ready()
            elif rid >= PUB_ID0 and reply.HasField("publish"):
                conn.on_ack(rid - PUB_ID0, None)
            else:
                conn.unexpected_other += 1

    def publish_frame(self, seq: int, t_ns: int) -> bytes:
        data = b'{"s":%d,"t":%d}' % (seq, t_ns)
        request = self.pb.PublishRequest(channel=CHANNEL, data=data)
        return self._command(id=PUB_ID0 + seq, publish=request)


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
    "sluiceway-protobuf": CentrifugoProtobufDialect(),
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
        "bytes_in",
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
        self.bytes_in = 0  # bytes read from the socket (frames, upgrade included)
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
        sink.headers_done += 1  # the SSE Sink's name: "headers" here means "subscribed"
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
        self.bytes_in += len(data)
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
                if op in (0x1, 0x2):
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
                if op in (0x1, 0x2):
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
                if b0 & 0x0F in (0x0, 0x1, 0x2):  # text, binary, or a continuation
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
    path = dialect.pub_path if role == "pub" else dialect.sub_path
    request = upgrade_request(path, port, dialect.subprotocol)

    def describe(exc: Exception) -> str:
        return str(exc) if isinstance(exc, ConnectionError) else repr(exc)

    return await open_connections(
        port,
        count,
        concurrency,
        sink,
        limit_s,
        lambda fut: WsConn(dialect, role, request, sink, fut),
        describe=describe,
        ready="ready",
    )


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


async def phase_idle(srv: Proc, args: argparse.Namespace) -> dict[str, Any]:
    dialect = DIALECTS[srv.name]

    def opener(sink: Sink) -> Any:
        return open_conns(
            dialect,
            "sub",
            srv.port,
            args.idle_connections,
            args.connect_concurrency,
            sink,
            args.timeout,
        )

    w = await idle_window(srv, args, opener)
    conns = w.conns
    n = len(conns)
    kib = round((w.rss_after - w.rss_before) / 1024 / n, 2) if n else None
    return {
        "ok": not w.errors and n == args.idle_connections and w.still_open == n,
        "connections_requested": args.idle_connections,
        "connections_open": n,
        "still_open_at_rss_sample": w.still_open,
        "connect_concurrency": args.connect_concurrency,
        "connect_errors": len(w.errors),
        "connect_error_samples": sorted(set(w.errors))[:5],
        "accept_s": round(w.accept_s, 3),
        "rss_before_kib": w.rss_before // 1024,
        "rss_after_kib": w.rss_after // 1024,
        "kib_per_connection": kib,
        "kib_per_subscriber": kib,  # the runner's summary line's name for it
        "settle_after_connect_s": round(w.quiet_s, 2),
        "machine_before": w.machine,
        "cpu": w.cpu,
        **conn_notes(conns),
        "error_samples": error_samples(conns),
    }


async def fanout(
    srv: Proc, args: argparse.Namespace, events: int, rate: float | None
) -> tuple[Sink, list[WsConn], PublishStats, dict[str, Any]]:
    """Subscribe, publish on one connection, wait for delivery (every subscriber has its
    subscribe/join answered before the first publish)."""
    dialect = DIALECTS[srv.name]

    def opener(sink: Sink) -> Any:
        return open_conns(
            dialect, "sub", srv.port, args.subscribers, args.connect_concurrency, sink, args.timeout
        )

    async def publisher(stats: PublishStats, stop: asyncio.Event) -> None:
        try:
            await publish(dialect, srv.port, events, args.window, rate, stats, stop)
        except TimeoutError:
            raise  # the runner reports a publisher that did not finish
        except (OSError, ConnectionError) as exc:
            stats.errors.append(f"publisher: {exc!r}")

    return await run_fanout(srv, args, events, rate, opener, publisher)


async def phase_throughput(srv: Proc, args: argparse.Namespace) -> dict[str, Any]:
    sink, subs, stats, info = await fanout(srv, args, args.events, None)
    try:
        # One publisher connection: every subscriber must see the events in order. Frames
        # are counted while the streams are parsed.
        res = throughput_result(
            sink,
            subs,
            stats,
            info,
            args,
            1,
            more=lambda: {
                "frames_received": frame_count(subs),
                "bytes_received": sum(s.bytes_in for s in subs),
            },
        )
        return {**res, **conn_notes(subs), "error_samples": error_samples(subs)}
    finally:
        await close_subscribers(subs)


async def phase_latency(srv: Proc, args: argparse.Namespace) -> dict[str, Any]:
    events = round(args.latency_rate * args.latency_duration)
    _, subs, stats, info = await fanout(srv, args, events, args.latency_rate)
    try:
        res = latency_result(subs, stats, info, args, events, 1, window=True)
        return {**res, **conn_notes(subs), "error_samples": error_samples(subs)}
    finally:
        await close_subscribers(subs)


PHASES: dict[str, Phase] = {
    "idle": phase_idle,
    "throughput": phase_throughput,
    "latency": phase_latency,
}


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def cpu_cell(r: dict[str, Any]) -> str:
    """The server's CPU seconds; process CPU: server / load generator."""
    c = r.get("cpu")
    if not c:
        return "-"
    s, lg = c["server_cpu_pct"], c["loadgen_cpu_pct"]
    return f"{c['server_cpu_s']:.1f} s, {s:.0f}% / {lg:.0f}%"


def render_table(results: dict[str, Any], args: argparse.Namespace) -> str:
    names = list(results)

    def get(name: str, phase: str) -> dict[str, Any]:
        return results[name]["phases"].get(phase, {})

    idle_title = (
        f"Idle, {args.idle_connections:,} conns ({args.connect_concurrency} in setup at once)"
    )
    idle = [
        ("time until all subscribed, s", value_cell("accept_s")),
        ("KiB per idle connection", value_cell("kib_per_connection")),
        ("server RSS before → after, MiB", rss_cell),
        ("status", delivery_status),
    ]
    cpu = ("server CPU s, process CPU server / loadgen", cpu_cell)
    frames = [
        ("frames received per event", per_event_frames),
        ("bytes received per event and subscriber", per_event_bytes),
    ]
    rows = fanout_rows(results, args, cpu, idle_title, idle, per_event=frames)
    lines = md_table(["metric", *names], rows, right=True)

    # Ratios: every server against python-socketio and against websockets broadcast().
    bases = [b for b in ("python-socketio", "websockets") if b in names]
    pairs: list[tuple[str, str]] = []
    for b in bases:
        pairs += [(n, b) for n in names if n != b and (b, n) not in pairs]
    if pairs:
        columns = [(n, b, f"{n} vs {b}") for n, b in pairs]
        lines += [
            "",
            *ratio_table(
                "ratio (one run)", columns, RATIOS, get, phases=args.phases, digits=2, right=True
            ),
        ]

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

    if notes := load_notes(results, names):
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


#: The ratio table's rows.
RATIOS: list[Metric] = [
    ("throughput (deliveries/s)", "throughput", key_of("deliveries_per_s"), True, "higher"),
    ("latency p50", "latency", key_of("p50_ms"), False, "lower"),
    ("latency p99", "latency", key_of("p99_ms"), False, "lower"),
    ("memory per idle connection", "idle", key_of("kib_per_connection"), False, "smaller"),
    ("time until all subscribed", "idle", key_of("accept_s"), False, "faster"),
]


def frame_count(subs: Sequence[WsConn]) -> int:
    return sum(s.frames for s in subs)


def per_event_frames(r: dict[str, Any]) -> str:
    frames, subs, events = r.get("frames_received"), r.get("subscribers"), r.get("events")
    if not frames or not subs or not events:
        return "-"
    return f"{frames / (subs * events):.2f}"


def per_event_bytes(r: dict[str, Any]) -> str:
    """Bytes on the wire (WebSocket frames, upgrade and setup included) per delivery."""
    received, subs, events = r.get("bytes_received"), r.get("subscribers"), r.get("events")
    if not received or not subs or not events:
        return "-"
    return f"{received / (subs * events):.1f}"


def machine_info(args: argparse.Namespace) -> dict[str, Any]:
    after: dict[str, Any] = {"src_uncommitted_changes": src_changes()}
    with contextlib.suppress(OSError):
        after["ip_local_port_range"] = (
            Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        )
    return fanout_machine_info(args.server_cpu, args.loadgen_cpu, PACKAGES, after)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = parser(__doc__)
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
    add_run_arguments(p)
    args = p.parse_args(argv)
    args.servers = choices(p, args.servers, SERVER_NAMES, "server")
    args.phases = choices(p, args.phases, PHASES, "phase")
    if args.quick:
        args.subscribers, args.events, args.idle_connections = 100, 200, 1000
        args.latency_duration = 2.0
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Kept from the days of fanout.py's runner: the JSON's config has always carried it.
    args.idle_subscribers = args.idle_connections
    # Many sockets: connections here plus, for the servers (inherited), their accepted ends.
    want = max(args.idle_connections, args.subscribers) + 1024
    raise_nofile(want, warn=True)
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
    pin_self(args.loadgen_cpu)
    started = timestamp()
    try:
        # SIGTERM cancels the run, so that the runner stops the server it has started.
        run = uvloop.run(run_servers(args, server_command, PHASES, "ws-fanout-logs-", sigterm=True))
    except asyncio.CancelledError:
        print("stopped by SIGTERM", file=sys.stderr)
        return 143
    save_results(
        "ws_fanout",
        started,
        argv,
        config_of(args),
        machine_info(args),
        run,
        lambda doc: render_table(run["results"], args),
        args.out,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
