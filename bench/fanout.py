"""Fan-out benchmark: sluiceway vs sse-starlette vs the tutorial StreamingResponse pattern.

One run starts each server in turn (pinned to one CPU), drives it from this process (pinned to
another CPU) and prints a markdown table; the full results go to ``bench/results/*.json``.

Phases (each against a freshly started server unless ``--reuse-server``):

* ``idle``       open many subscribers with bounded concurrency; accept time until every
                 subscriber has its response headers, and server RSS per idle subscriber.
* ``throughput`` N subscribers on one topic, publish E events as fast as the server takes them;
                 deliveries/s until the last subscriber has the last event; loss/dup/order check.
* ``latency``    N subscribers, publish at a fixed rate; publish-to-receive latency percentiles.

The load generator is asyncio + uvloop with raw ``asyncio.Protocol`` connections: a hand-written
GET, a minimal status/header parser, chunked decoding, then SSE blocks split on blank lines.
While measuring, a subscriber only stores each read with its arrival time and counts
``data:`` lines; the parsing and checks run after the measured window, so the load generator
costs less per event than any of the servers (its CPU use is reported next to theirs).

    uv run python bench/fanout.py --help
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.metadata
import json
import os
import platform
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import psutil
import uvloop

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
VENV_BIN = Path(sys.executable).parent
HOST = "127.0.0.1"

SEQ_RE = re.compile(rb'"s":(\d+)')
SEQ_T_RE = re.compile(rb'"s":(\d+),"t":(\d+)')
CONTENT_LENGTH_RE = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
CHUNKED_RE = re.compile(rb"\r\ntransfer-encoding:[ \t]*chunked", re.IGNORECASE)
MAX_HEAD = 64 * 1024

SERVER_NAMES = ("sluiceway", "sse-starlette", "tutorial")


# --------------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------------


def server_command(name: str, port: int, cpu: int) -> list[str]:
    pin = ["taskset", "-c", str(cpu)]
    if name == "sluiceway":
        return [
            *pin,
            str(VENV_BIN / "sluiceway"),
            "serve",
            "--host",
            HOST,
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--backlog",
            "4096",
        ]
    module = {"sse-starlette": "sse_starlette_app", "tutorial": "tutorial_app"}[name]
    return [
        *pin,
        str(VENV_BIN / "uvicorn"),
        f"{module}:app",
        "--app-dir",
        str(BENCH_DIR / "peers"),
        "--host",
        HOST,
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--workers",
        "1",
        "--log-level",
        "warning",
        "--backlog",
        "4096",
    ]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """One server under test: start, readiness, CPU/RSS sampling, stop."""

    def __init__(self, name: str, cpu: int, log_dir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.cmd = server_command(name, self.port, cpu)
        self.log_path = log_dir / f"{name}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ps: psutil.Process | None = None
        self.ready_s = float("nan")

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.cmd,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # so a stop signal reaches any workers it spawns
            )
        self.ps = psutil.Process(self.proc.pid)

    async def wait_ready(self, limit_s: float) -> float:
        t0 = time.monotonic()
        deadline = t0 + limit_s
        last_err = "no attempt"
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with code {self.proc.returncode}")
            try:
                status, _ = await http_request(self.port, b"GET", "/healthz", None, limit_s=1.0)
                if status == 200:
                    return time.monotonic() - t0
                last_err = f"status {status}"
            except (OSError, TimeoutError, ConnectionError, ValueError) as exc:
                last_err = repr(exc)
            await asyncio.sleep(0.1)
        raise TimeoutError(f"/healthz not ready after {limit_s}s ({last_err})")

    def _tree(self) -> list[psutil.Process]:
        assert self.ps is not None
        procs = [self.ps]
        with contextlib.suppress(psutil.Error):
            procs += self.ps.children(recursive=True)
        return procs

    def cpu_seconds(self) -> float:
        total = 0.0
        for p in self._tree():
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def rss_bytes(self) -> int:
        total = 0
        for p in self._tree():
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total

    async def wait_quiet(self, max_s: float = 10.0, window: float = 0.25) -> float:
        """Wait until the server burns < 5% CPU over a window; returns seconds waited."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < max_s:
            c0 = self.cpu_seconds()
            await asyncio.sleep(window)
            if self.cpu_seconds() - c0 < 0.05 * window:
                break
        return time.monotonic() - t0

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            # SSE streams keep a graceful shutdown waiting; we are done with it anyway.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    @staticmethod
    def read_tail(log_dir: Path, name: str, n: int = 2000) -> str:
        """Tail of the newest log of `name` (the server object is gone if start failed)."""
        logs = sorted(log_dir.glob(f"{name}-*.log"), key=lambda p: p.stat().st_mtime)
        return logs[-1].read_bytes()[-n:].decode("utf-8", "replace") if logs else ""


# --------------------------------------------------------------------------------------------
# Minimal HTTP/1.1 client (publisher, health checks)
# --------------------------------------------------------------------------------------------


def parse_response(buf: bytes) -> tuple[int, bytes, int] | None:
    """Parse one complete response at the start of buf -> (status, body, consumed) or None."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > MAX_HEAD:
            raise ValueError("response head too large")
        return None
    head = buf[: end + 2]
    status = int(head[9:12])
    pos = end + 4
    if m := CONTENT_LENGTH_RE.search(head):
        n = int(m.group(1))
        if len(buf) < pos + n:
            return None
        return status, buf[pos : pos + n], pos + n
    if CHUNKED_RE.search(head):
        parts = []
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return None
            size = int(buf[pos:eol].split(b";", 1)[0], 16)
            pos = eol + 2
            if size == 0:
                # No trailers expected; the final CRLF ends the message.
                if len(buf) < pos + 2:
                    return None
                return status, b"".join(parts), pos + 2
            if len(buf) < pos + size + 2:
                return None
            parts.append(buf[pos : pos + size])
            pos += size + 2
    return status, b"", pos


class HttpConn(asyncio.Protocol):
    """Keep-alive connection carrying one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, hence the cast.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.waiter is None or self.waiter.done():
            return
        try:
            parsed = parse_response(self.buf)
        except ValueError as exc:
            self.waiter.set_exception(exc)
            return
        if parsed is not None:
            status, body, used = parsed
            self.buf = self.buf[used:]
            self.waiter.set_result((status, body))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection lost: {exc!r}"))

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        if self.closed or self.transport is None:
            raise ConnectionError("connection closed")
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def build_request(method: bytes, path: str, port: int, body: bytes | None) -> bytes:
    head = b"%s %s HTTP/1.1\r\nHost: %s:%d\r\n" % (method, path.encode(), HOST.encode(), port)
    if body is None:
        return head + b"\r\n"
    return head + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )


async def open_http(port: int) -> HttpConn:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(HttpConn, HOST, port)
    return proto


async def http_request(
    port: int, method: bytes, path: str, body: bytes | None, limit_s: float
) -> tuple[int, bytes]:
    async with asyncio.timeout(limit_s):
        conn = await open_http(port)
        try:
            return await conn.request(build_request(method, path, port, body))
        finally:
            conn.close()


def publish_body(seq: int) -> bytes:
    # data is a compact JSON document carried as a JSON string: {"s":seq,"t":monotonic_ns}
    return b'{"data":"{\\"s\\":%d,\\"t\\":%d}"}' % (seq, time.monotonic_ns())


# --------------------------------------------------------------------------------------------
# Subscribers
# --------------------------------------------------------------------------------------------


class Sink:
    """Collects what the subscribers of one phase receive.

    Modes while measuring: "idle" (body ignored) and "lazy": keep the raw reads with their
    arrival times and only count ``data:`` lines, so the load generator stays much cheaper
    per event than the servers and adds little delay to the receive timestamps; everything
    is parsed by `Subscriber.replay` after the measured window, in mode "seq" (seqs only)
    or "lat" (seqs and latency samples).
    """

    def __init__(self, mode: str, expected: int = 0) -> None:
        self.mode = mode
        self.expected = expected
        self.n_subs = 0
        self.done_count = 0
        self.all_done = asyncio.Event()
        self.last_done_ns = 0
        self.latencies = array("q")
        self.headers_done = 0
        self.last_header_ns = 0
        self.unexpected_close = 0
        self.reads = 0  # progress counter for the "nothing arrives any more" fallback

    def sub_done(self) -> None:
        self.done_count += 1
        self.last_done_ns = time.monotonic_ns()
        if self.done_count >= self.n_subs:
            self.all_done.set()


class Subscriber(asyncio.Protocol):
    """A raw SSE client: status line + headers, chunked decoding, blank-line block split."""

    __slots__ = (
        "chunk_left",
        "chunked",
        "closing",
        "count",
        "data_lines",
        "done",
        "eof",
        "error",
        "head",
        "headers_fut",
        "in_body",
        "now",
        "pending",
        "read_ns",
        "reads",
        "request",
        "seqs",
        "sink",
        "skip",
        "sse",
        "status",
        "tail",
        "transport",
    )

    def __init__(self, request: bytes, sink: Sink, headers_fut: asyncio.Future[None]) -> None:
        self.request = request
        self.sink = sink
        self.headers_fut = headers_fut
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.in_body = False
        self.status = 0
        self.chunked = True
        self.chunk_left = 0
        self.skip = 0  # bytes of the CRLF that trails a chunk's data still to drop
        self.pending = b""  # incomplete chunk-size line
        self.sse = b""  # incomplete SSE block
        self.seqs = array("q")
        self.data_lines = 0
        self.reads: list[bytes] = []  # "lazy" mode: raw body reads, parsed after the window
        self.count = 0  # "lazy" mode: data: lines seen so far
        self.tail = b""  # "lazy" mode: last bytes of the previous read
        self.read_ns = array("q")  # "lazy" mode: arrival time of each read
        self.now = 0  # replay: arrival time of the read being parsed
        self.done = False
        self.eof = False
        self.closing = False
        self.error: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, hence the cast.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.headers_fut.done():
            self.headers_fut.set_exception(ConnectionError(f"closed before headers: {exc!r}"))
        elif not self.closing:
            self.sink.unexpected_close += 1
            self.error = f"closed by server: {exc!r}"

    def data_received(self, data: bytes) -> None:
        if not self.in_body:
            head = self.head + data
            end = head.find(b"\r\n\r\n")
            if end < 0:
                self.head = head
                if len(head) > MAX_HEAD:
                    self._fail("response head too large")
                return
            self.head = b""
            self._on_head(head[: end + 2])
            if not self.in_body:  # bad status: already failed and closing
                return
            data = head[end + 4 :]
            if not data:
                return
        sink = self.sink
        if sink.mode == "idle":
            return  # only keep-alive comments could arrive; nothing to check
        # "lazy": keep the bytes and their arrival time, count events (replay parses them
        # later). A token split across two reads is caught by looking at the previous read's
        # last 4 bytes together with this read's first 4.
        self.read_ns.append(time.monotonic_ns())
        self.reads.append(data)
        sink.reads += 1
        n = data.count(b"data:")
        if self.tail:
            n += (self.tail + data[:4]).count(b"data:")
        self.tail = data[-4:] if len(data) >= 4 else (self.tail + data)[-4:]
        if n:
            self.count += n
            if not self.done and self.count >= sink.expected:
                self.done = True
                sink.sub_done()

    def _fail(self, why: str) -> None:
        self.error = why
        if not self.headers_fut.done():
            self.headers_fut.set_exception(ConnectionError(why))
        self.close()

    def _on_head(self, head: bytes) -> None:
        try:
            self.status = int(head[9:12])
        except ValueError:
            self._fail(f"bad status line {head[:40]!r}")
            return
        if self.status != 200:
            self._fail(f"status {self.status}")
            return
        self.chunked = CHUNKED_RE.search(head) is not None
        self.in_body = True
        sink = self.sink
        sink.headers_done += 1
        sink.last_header_ns = time.monotonic_ns()
        self.headers_fut.set_result(None)

    def _dechunk(self, data: bytes) -> bytes:
        if self.pending:
            data = self.pending + data
            self.pending = b""
        out: list[bytes] = []
        pos = 0
        n = len(data)
        while pos < n:
            if self.chunk_left:
                end = pos + self.chunk_left
                if end <= n:
                    out.append(data[pos:end])
                    self.chunk_left = 0
                    self.skip = 2
                    pos = end
                else:
                    out.append(data[pos:])
                    self.chunk_left -= n - pos
                    pos = n
            elif self.skip:
                take = min(self.skip, n - pos)
                pos += take
                self.skip -= take
            else:
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    self.pending = data[pos:]
                    if len(self.pending) > 64:
                        self._fail("bad chunk size line")
                    break
                size = int(data[pos:eol].split(b";", 1)[0], 16)
                pos = eol + 2
                if size == 0:
                    self.eof = True  # server ended the stream
                    break
                self.chunk_left = size
        if len(out) == 1:
            return out[0]
        return b"".join(out)

    def _feed(self, body: bytes) -> None:
        buf = self.sse + body if self.sse else body
        # A block ends at a blank line; our server uses LF, sse-starlette CRLF.
        lf = buf.rfind(b"\n\n")
        crlf = buf.rfind(b"\r\n\r\n")
        cut = max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)
        if cut == 0:
            self.sse = buf
            return
        if cut == len(buf):
            complete = buf
            self.sse = b""
        else:
            complete = buf[:cut]
            self.sse = buf[cut:]
        self._complete(complete)

    def _complete(self, complete: bytes) -> None:
        """Account for a run of whole SSE blocks."""
        sink = self.sink
        self.data_lines += complete.count(b"data:")
        if sink.mode == "seq":
            self.seqs.extend(map(int, SEQ_RE.findall(complete)))
        else:
            now = self.now  # arrival time of the read that completed these blocks
            lat = sink.latencies
            seqs = self.seqs
            for s, t in SEQ_T_RE.findall(complete):
                seqs.append(int(s))
                lat.append(now - int(t))
        if not self.done and len(self.seqs) >= sink.expected:
            self.done = True
            sink.sub_done()

    def replay(self, latencies: array[int] | None = None) -> None:
        """Parse what "lazy" mode stored; with `latencies`, per read, adding samples there."""
        reads, self.reads = self.reads, []
        self.seqs = array("q")
        self.data_lines = 0
        self.chunk_left = self.skip = 0
        self.pending = self.sse = b""
        if latencies is None:
            # Only the seqs matter: one pass over the whole stream is much faster.
            self.sink = Sink("seq", expected=1 << 62)  # private: no done bookkeeping
            reads = [b"".join(reads)]
        else:
            self.sink = Sink("lat", expected=1 << 62)
            self.sink.latencies = latencies
        for data, t in zip(reads, self.read_ns, strict=False):
            self.now = t
            body = self._dechunk(data) if self.chunked else data
            if body:
                self._feed(body)

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()


async def open_subscribers(
    port: int, topic: str, count: int, concurrency: int, sink: Sink, limit_s: float
) -> tuple[list[Subscriber], list[str], float]:
    """Open `count` subscribers, at most `concurrency` connecting/awaiting headers at once.

    Returns (subscribers with headers, error strings, seconds until the last had its headers).
    The whole open is bounded by `limit_s`; on expiry every connection made is closed.
    """
    loop = asyncio.get_running_loop()
    request = build_request(b"GET", f"/topics/{topic}", port, None)
    request = request[:-2] + b"Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
    sem = asyncio.Semaphore(concurrency)
    made: list[Subscriber] = []
    subs: list[Subscriber] = []
    errors: list[str] = []
    sink.n_subs = count

    def factory(fut: asyncio.Future[None]) -> Subscriber:
        proto = Subscriber(request, sink, fut)
        made.append(proto)
        return proto

    async def one() -> None:
        async with sem:
            fut: asyncio.Future[None] = loop.create_future()
            try:
                _, proto = await loop.create_connection(lambda: factory(fut), HOST, port)
                await fut
                subs.append(proto)
            except (OSError, ConnectionError) as exc:
                errors.append(repr(exc))

    t0 = time.monotonic_ns()
    try:
        async with asyncio.timeout(limit_s):
            await asyncio.gather(*(one() for _ in range(count)))
    except TimeoutError:
        await close_subscribers(made)
        raise TimeoutError(
            f"subscribing timed out after {limit_s}s: {len(subs)}/{count} had headers,"
            f" {len(errors)} errors"
        ) from None
    elapsed = (sink.last_header_ns - t0) / 1e9 if sink.headers_done else float("nan")
    sink.n_subs = len(subs)
    return subs, errors, elapsed


async def close_subscribers(subs: Sequence[Subscriber]) -> None:
    for s in subs:
        s.close()
    await asyncio.sleep(0)  # let the transports flush their FINs


# --------------------------------------------------------------------------------------------
# Publisher
# --------------------------------------------------------------------------------------------


@dataclass
class PublishStats:
    sent: int = 0
    ok: int = 0
    errors: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    first_ns: int = 0
    last_ns: int = 0
    late: int = 0  # fixed-rate mode: publishes that started > 5 ms behind schedule

    def rate(self) -> float:
        dt = (self.last_ns - self.first_ns) / 1e9
        return self.ok / dt if dt > 0 else float("nan")


async def publish(
    port: int,
    topic: str,
    count: int,
    lanes: int,
    rate: float | None,
    stats: PublishStats,
    stop: asyncio.Event,
) -> None:
    """Publish seq 0..count-1 over `lanes` keep-alive connections (one in flight each).

    Lane k publishes seqs k, k+lanes, ... in order, so per lane the server's order is known.
    With `rate`, publish i starts at t0 + i/rate (absolute schedule, no drift).
    """
    conns = [await open_http(port) for _ in range(lanes)]
    path = f"/topics/{topic}"
    prefix = build_request(b"POST", path, port, b"")[: -len(b"Content-Length: 0\r\n\r\n")]
    stats.first_ns = time.monotonic_ns()
    t0 = time.monotonic()

    async def lane(k: int) -> None:
        conn = conns[k]
        for seq in range(k, count, lanes):
            if stop.is_set():
                return
            if rate is not None:
                delay = t0 + seq / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif delay < -0.005:
                    stats.late += 1
            body = publish_body(seq)
            stats.sent += 1
            try:
                status, resp = await conn.request(
                    prefix + b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )
            except (OSError, ConnectionError, ValueError) as exc:
                stats.errors.append(f"seq {seq}: {exc!r}")
                return
            if status != 200:
                stats.errors.append(f"seq {seq}: status {status} {resp[:200]!r}")
                continue
            stats.ok += 1
            stats.last_ns = time.monotonic_ns()
            try:
                stats.ids.append(str(json.loads(resp)["id"]))
            except (ValueError, KeyError, TypeError):
                stats.errors.append(f"seq {seq}: bad response body {resp[:200]!r}")

    try:
        await asyncio.gather(*(lane(k) for k in range(min(lanes, count))))
    finally:
        for c in conns:
            c.close()


# --------------------------------------------------------------------------------------------
# Checks and measurement helpers
# --------------------------------------------------------------------------------------------


def check_delivery(subs: Sequence[Subscriber], count: int, lanes: int) -> dict[str, Any]:
    """Per subscriber: exactly seqs 0..count-1 once each, and each lane's seqs in order.

    Lane k published k, k+lanes, ... one after another, so that order is the only one the
    server is bound to keep; the full check runs once per distinct sequence seen.
    """
    totals = dict.fromkeys(("missing", "duplicates", "unexpected", "order_violations"), 0)
    malformed = bad_subs = differs_from_first = 0
    ref: array[int] | None = None
    ref_clean = False
    for sub in subs:
        seqs = sub.seqs
        malformed += sub.data_lines - len(seqs)
        if ref is not None and seqs == ref and ref_clean:
            continue
        if ref is not None and seqs != ref:
            differs_from_first += 1
        uniq = set(seqs)
        in_range = sum(1 for s in uniq if 0 <= s < count)
        issues = {
            "duplicates": len(seqs) - len(uniq),
            "missing": count - in_range,
            "unexpected": len(uniq) - in_range,
            "order_violations": 0,
        }
        last = [-1] * lanes
        for s in seqs:
            k = s % lanes
            if s <= last[k]:
                issues["order_violations"] += 1
            last[k] = s
        clean = not any(issues.values())
        if ref is None:
            ref, ref_clean = seqs, clean
        if not clean:
            bad_subs += 1
            for k, v in issues.items():
                totals[k] += v
    ok = not any(totals.values()) and malformed == 0
    return {
        "ok": ok,
        "subscribers": len(subs),
        **totals,
        "malformed_blocks": malformed,
        "subscribers_with_issues": bad_subs,
        "subscribers_order_differs_from_first": differs_from_first,
        "unexpected_closes": sum(1 for s in subs if s.error),
    }


def loadgen_cpu() -> tuple[float, float]:
    """(user, system) CPU seconds of this process."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime, ru.ru_stime


def core_ticks() -> dict[int, list[int]]:
    """Per-CPU /proc/stat counters: user nice system idle iowait irq softirq steal ..."""
    out: dict[int, list[int]] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/stat").read_text().splitlines():
            name, _, rest = line.partition(" ")
            if name.startswith("cpu") and name[3:].isdigit():
                out[int(name[3:])] = [int(x) for x in rest.split()]
    return out


async def wait_machine_quiet(
    cores: Sequence[int], max_s: float, limit_pct: float = 10.0
) -> dict[str, float]:
    """Wait (bounded) until the benchmark's cores are nearly idle before a measured window.

    The servers and this process are idle at that point, so anything busy is someone else
    (on a shared machine: a test run, a build); returns the wait and the last reading.
    """
    t0 = time.monotonic()
    busy = 100.0
    while True:
        k0 = core_ticks()
        await asyncio.sleep(0.5)
        k1 = core_ticks()
        readings = []
        for core in cores:
            if core in k0 and core in k1:
                d = [b - a for a, b in zip(k0[core], k1[core], strict=False)]
                total = sum(d[:8]) or 1
                readings.append(100 * (total - d[3] - d[4]) / total)
        busy = max(readings, default=0.0)
        if busy < limit_pct or time.monotonic() - t0 >= max_s:
            break
    return {"waited_s": round(time.monotonic() - t0, 1), "busy_pct": round(busy, 1)}


class CpuWindow:
    """CPU use of server and load generator over a wall-clock window.

    Process CPU (user+system) leaves out softirq time, and on loopback the TCP work of a send
    (delivering into the receiver's socket) runs as softirq on the sender's core; so the busy
    share of each pinned core, from /proc/stat, is reported too: that is what says who is
    saturated. Steal (time the hypervisor gave to someone else) is reported separately.
    """

    def __init__(self, server: ServerProcess, server_core: int, loadgen_core: int) -> None:
        self.server = server
        self.cores = {"server": server_core, "loadgen": loadgen_core}
        self.t0 = time.monotonic()
        self.s0 = server.cpu_seconds()
        self.l0 = loadgen_cpu()
        self.k0 = core_ticks()
        self.result: dict[str, float] = {}

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self.t0
        s = self.server.cpu_seconds() - self.s0
        lu, ls = loadgen_cpu()
        lu, ls = lu - self.l0[0], ls - self.l0[1]
        lg = lu + ls
        k1 = core_ticks()
        res: dict[str, float] = {
            "wall_s": round(wall, 3),
            "server_cpu_s": round(s, 3),
            "loadgen_cpu_s": round(lg, 3),
            "loadgen_user_s": round(lu, 3),
            "loadgen_sys_s": round(ls, 3),
            "server_cpu_pct": round(100 * s / wall, 1) if wall > 0 else float("nan"),
            "loadgen_cpu_pct": round(100 * lg / wall, 1) if wall > 0 else float("nan"),
        }
        for role, core in self.cores.items():
            if core not in self.k0 or core not in k1:
                continue
            d = [b - a for a, b in zip(self.k0[core], k1[core], strict=False)]
            total = sum(d[:8]) or 1
            idle = d[3] + d[4]
            busy = round(100 * (total - idle - d[7]) / total, 1)
            res[f"{role}_core_busy_pct"] = busy
            # Busy beyond our own process: another process on the core (or softirq work
            # not charged to ours); on a shared machine, the first thing to check.
            res[f"{role}_core_other_pct"] = round(max(0.0, busy - res[f"{role}_cpu_pct"]), 1)
            res[f"{role}_core_softirq_pct"] = round(100 * d[6] / total, 1)
            res[f"{role}_core_steal_pct"] = round(100 * d[7] / total, 1)
        self.result = res
        return res


def percentile(sorted_vals: Sequence[int], q: float) -> float:
    if not sorted_vals:
        return float("nan")
    i = min(len(sorted_vals) - 1, max(0, round(q * (len(sorted_vals) - 1))))
    return float(sorted_vals[i])


# --------------------------------------------------------------------------------------------
# Phases
# --------------------------------------------------------------------------------------------


async def phase_idle(srv: ServerProcess, args: argparse.Namespace) -> dict[str, Any]:
    await srv.wait_quiet()
    machine = await wait_machine_quiet((args.server_cpu, args.loadgen_cpu), args.quiet_wait)
    rss_before = srv.rss_bytes()
    sink = Sink("idle")
    cpu = CpuWindow(srv, args.server_cpu, args.loadgen_cpu)
    subs, errors, accept_s = await open_subscribers(
        srv.port, "idle", args.idle_subscribers, args.connect_concurrency, sink, args.timeout
    )
    cpu_r = cpu.stop()
    try:
        quiet_s = await srv.wait_quiet()
        await asyncio.sleep(0.5)
        rss_after = srv.rss_bytes()
        still_open = sum(1 for s in subs if not s.error)
    finally:
        await close_subscribers(subs)
    n = len(subs)
    return {
        "ok": not errors and n == args.idle_subscribers and still_open == n,
        "subscribers_requested": args.idle_subscribers,
        "subscribers_open": n,
        "still_open_at_rss_sample": still_open,
        "connect_concurrency": args.connect_concurrency,
        "connect_errors": len(errors),
        "connect_error_samples": sorted(set(errors))[:5],
        "accept_s": round(accept_s, 3),
        "rss_before_kib": rss_before // 1024,
        "rss_after_kib": rss_after // 1024,
        "kib_per_subscriber": round((rss_after - rss_before) / 1024 / n, 2) if n else None,
        "settle_after_connect_s": round(quiet_s, 2),
        "machine_before": machine,
        "cpu": cpu_r,
    }


async def run_fanout(
    srv: ServerProcess,
    args: argparse.Namespace,
    topic: str,
    events: int,
    rate: float | None,
) -> tuple[Sink, list[Subscriber], PublishStats, dict[str, Any]]:
    """Subscribe, publish, wait for delivery; returns raw material for the phase report."""
    sink = Sink("lazy", expected=events)
    subs, errors, accept_s = await open_subscribers(
        srv.port, topic, args.subscribers, args.connect_concurrency, sink, args.timeout
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
    # Let the server finish registering; a registration race still shows up as loss.
    await asyncio.sleep(args.settle)
    await srv.wait_quiet(max_s=5)
    info["machine_before"] = await wait_machine_quiet(
        (args.server_cpu, args.loadgen_cpu), args.quiet_wait
    )
    stop = asyncio.Event()
    cpu = CpuWindow(srv, args.server_cpu, args.loadgen_cpu)
    pub = asyncio.create_task(publish(srv.port, topic, events, args.window, rate, stats, stop))
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
    timed_out = outcome != "done"
    info["cpu"] = cpu.stop()
    stop.set()
    try:
        async with asyncio.timeout(10):
            await pub
    except TimeoutError:
        pub.cancel()
        stats.errors.append("publisher did not finish within 10 s after the phase")
    info["timed_out"] = timed_out
    info["outcome"] = outcome
    info["deadline_s"] = deadline
    # Give stragglers (duplicates, late blocks) a moment to show up before checking.
    await asyncio.sleep(0.3)
    return sink, subs, stats, info


def publish_report(stats: PublishStats, events: int) -> dict[str, Any]:
    return {
        "requested": events,
        "sent": stats.sent,
        "ok": stats.ok,
        "errors": len(stats.errors),
        "error_samples": stats.errors[:5],
        "unique_ids": len(set(stats.ids)),
        "rate_per_s": round(stats.rate(), 1),
        "late_starts": stats.late,
    }


async def phase_throughput(srv: ServerProcess, args: argparse.Namespace) -> dict[str, Any]:
    sink, subs, stats, info = await run_fanout(srv, args, "throughput", args.events, None)
    try:
        for sub in subs:
            sub.replay()
        delivered = sum(len(s.seqs) for s in subs)
        # Only meaningful when every subscriber got every event.
        complete = not info["timed_out"] and sink.done_count == len(subs) == args.subscribers
        elapsed = (sink.last_done_ns - stats.first_ns) / 1e9 if complete else None
        check = check_delivery(subs, args.events, args.window)
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
            "check": check,
        }
    finally:
        await close_subscribers(subs)


async def phase_latency(srv: ServerProcess, args: argparse.Namespace) -> dict[str, Any]:
    events = round(args.latency_rate * args.latency_duration)
    _, subs, stats, info = await run_fanout(srv, args, "latency", events, args.latency_rate)
    try:
        samples: array[int] = array("q")
        for sub in subs:
            sub.replay(samples)
        lat = sorted(samples)
        check = check_delivery(subs, events, args.window)
        ms = 1e6
        ok = not info["timed_out"] and check["ok"] and not stats.errors
        return {
            "ok": ok,
            **info,
            "events": events,
            "rate": args.latency_rate,
            "publish": publish_report(stats, events),
            "samples": len(lat),
            "p50_ms": round(percentile(lat, 0.50) / ms, 2),
            "p90_ms": round(percentile(lat, 0.90) / ms, 2),
            "p99_ms": round(percentile(lat, 0.99) / ms, 2),
            "max_ms": round(lat[-1] / ms, 2) if lat else None,
            "mean_ms": round(sum(lat) / len(lat) / ms, 2) if lat else None,
            "check": check,
        }
    finally:
        await close_subscribers(subs)


PHASES: dict[str, Callable[[ServerProcess, argparse.Namespace], Any]] = {
    "idle": phase_idle,
    "throughput": phase_throughput,
    "latency": phase_latency,
}


# --------------------------------------------------------------------------------------------
# Runner
# --------------------------------------------------------------------------------------------


async def start_server(name: str, args: argparse.Namespace, log_dir: Path) -> ServerProcess:
    srv = ServerProcess(name, args.server_cpu, log_dir)
    srv.start()
    try:
        srv.ready_s = await srv.wait_ready(args.ready_timeout)
    except BaseException:
        srv.stop()
        raise
    return srv


async def bench_server(name: str, args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"cmd": server_command(name, 0, args.server_cpu), "phases": {}}
    srv: ServerProcess | None = None
    logs: list[str] = []

    def stop() -> None:
        nonlocal srv
        if srv is not None:
            srv.stop()
            logs.append(srv.log_tail())
            srv = None

    try:
        attempts: dict[str, int] = {}
        queue = list(args.phases)
        while queue:
            phase = queue.pop(0)
            attempts[phase] = attempts.get(phase, 0) + 1
            if srv is None or not args.reuse_server:
                stop()
                try:
                    srv = await start_server(name, args, log_dir)
                except Exception as exc:
                    # A server that will not start will not start for the next phase either.
                    err = f"server start: {exc!r}"
                    for ph in [phase, *queue]:
                        out["phases"][ph] = {"ok": False, "error": err}
                    print(f"  [{name}] {err}", file=sys.stderr, flush=True)
                    logs.append(ServerProcess.read_tail(log_dir, name))
                    break
                out["cmd"] = srv.cmd
            print(f"  [{name}] {phase} ...", file=sys.stderr, flush=True)
            gc.collect()
            gc.disable()  # no collector pauses inside the measured windows
            t0 = time.monotonic()
            try:
                async with asyncio.timeout(args.phase_budget):
                    res = await PHASES[phase](srv, args)
            except Exception as exc:
                res = {"ok": False, "error": repr(exc) or type(exc).__name__}
            finally:
                gc.enable()
            res["phase_wall_s"] = round(time.monotonic() - t0, 1)
            if srv.proc is not None and srv.proc.poll() is not None:
                res["ok"] = False
                res["error"] = f"server exited with code {srv.proc.returncode}"
            print(f"  [{name}] {phase}: {summary_line(phase, res)}", file=sys.stderr, flush=True)
            other = disturbance(res)
            if other >= DISTURBED_PCT and attempts[phase] <= args.disturbed_retries:
                # Someone else used a benchmark core during the window: measure again.
                print(
                    f"  [{name}] {phase}: {other}% of a core went to other work, running it again",
                    file=sys.stderr,
                    flush=True,
                )
                disturbed = out.setdefault("disturbed_attempts", {}).setdefault(phase, [])
                disturbed.append(res)
                queue.insert(0, phase)
                if not args.reuse_server:
                    stop()
                continue
            res["attempt"] = attempts[phase]
            out["phases"][phase] = res
            if not res.get("ok"):
                stop()  # start clean for the next phase
    finally:
        stop()
        out["log_tails"] = [t for t in logs if t]
    return out


DISTURBED_PCT = 10.0


def disturbance(res: dict[str, Any]) -> float:
    """Largest share of a benchmark core that went to other processes in a phase's window."""
    c = res.get("cpu") or {}
    return max(c.get("server_core_other_pct", 0.0), c.get("loadgen_core_other_pct", 0.0))


def summary_line(phase: str, r: dict[str, Any]) -> str:
    if "error" in r:
        return f"ERROR {r['error']}"
    if phase == "idle":
        s = f"accept {r['accept_s']} s, {r['kib_per_subscriber']} KiB/sub"
    elif phase == "throughput":
        s = f"{r['deliveries_per_s']} deliveries/s, publish {r['publish']['rate_per_s']}/s"
    else:
        s = f"p50 {r['p50_ms']} ms p99 {r['p99_ms']} ms max {r['max_ms']} ms"
    return s + (", ok" if r.get("ok") else ", NOT OK") + f" cpu {r.get('cpu')}"


def machine_info(args: argparse.Namespace) -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for pkg in ("sluiceway", "uvicorn", "starlette", "sse-starlette", "uvloop", "httptools"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return {
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "mem_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "somaxconn": Path("/proc/sys/net/core/somaxconn").read_text().strip(),
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
        "server_cpu": args.server_cpu,
        "loadgen_cpu": args.loadgen_cpu,
        "versions": versions,
        "git_commit": commit or None,
    }


def fmt(v: Any, spec: str = "") -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    return format(v, spec) if spec else str(v)


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
        return "**NOT OK**: " + (", ".join(bits) or "see JSON")

    def cpu(r: dict[str, Any]) -> str:
        c = r.get("cpu")
        if not c:
            return "-"
        return f"{c['server_cpu_pct']:.0f}% / {c['loadgen_cpu_pct']:.0f}%"

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
            (f"{t}: loss / dup / order", lambda n: status(get(n, "throughput"))),
            (f"{t}: process CPU server / loadgen", lambda n: cpu(get(n, "throughput"))),
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
            (f"{t}: process CPU server / loadgen", lambda n: cpu(get(n, "latency"))),
            (f"{t}: core busy server / loadgen", lambda n: core(get(n, "latency"))),
        ]
    if "idle" in args.phases:
        t = f"Idle, {args.idle_subscribers:,} subs ({args.connect_concurrency} connects in flight)"
        rows += [
            (f"{t}: accept time s", value("idle", "accept_s")),
            (f"{t}: KiB per idle subscriber", value("idle", "kib_per_subscriber")),
            (f"{t}: server RSS before → after, MiB", rss),
            (f"{t}: status", lambda n: status(get(n, "idle"))),
            (f"{t}: process CPU server / loadgen", lambda n: cpu(get(n, "idle"))),
            (f"{t}: core busy server / loadgen", lambda n: core(get(n, "idle"))),
        ]
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label, f in rows:
        lines.append(f"| {label} | " + " | ".join(f(n) for n in names) + " |")

    if "sluiceway" in results and len(names) > 1:
        peers = [n for n in names if n != "sluiceway"]
        lines += ["", "| sluiceway vs peer (one run) | " + " | ".join(peers) + " |"]
        lines.append("|---|" + "---|" * len(peers))
        for label, phase, key, higher_better, word in (
            ("throughput (deliveries/s)", "throughput", "deliveries_per_s", True, "higher"),
            ("latency p99", "latency", "p99_ms", False, "lower"),
            ("memory per idle subscriber", "idle", "kib_per_subscriber", False, "smaller"),
            ("accept time", "idle", "accept_s", False, "faster"),
        ):
            if phase not in args.phases:
                continue
            cells = []
            for peer in peers:
                ours, theirs = get("sluiceway", phase).get(key), get(peer, phase).get(key)
                if not ours or not theirs or ours <= 0 or theirs <= 0:
                    cells.append("-")
                    continue
                r = ours / theirs if higher_better else theirs / ours
                cells.append(f"{r:.1f}x {word}")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")

        ours = results["sluiceway"]["phases"]
        targets = []
        for phase, key, limit, unit in (
            ("latency", "p99_ms", 30, "ms p99"),
            ("idle", "kib_per_subscriber", 10, "KiB per idle subscriber"),
            ("idle", "accept_s", 3, "s accept time"),
        ):
            v = ours.get(phase, {}).get(key)
            if v is not None:
                targets.append(f"{v} {unit} (≤ {limit}: {'met' if v <= limit else 'MISSED'})")
        if targets:
            lines += ["", "sluiceway targets: " + "; ".join(targets)]

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
        "Process CPU: user+system time of the server process / the load generator, as % of the"
        " measured window. Core busy: the pinned cores (server / load generator) from"
        " /proc/stat, including softirq time, where loopback TCP delivery is accounted.",
    ]
    return "\n".join(lines)


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """The options every fan-out benchmark shares: deadlines, a quiet machine, pinning, output
    (``bench/ws_fanout.py`` uses them too)."""
    p.add_argument(
        "--settle",
        type=float,
        default=0.2,
        help="seconds between the last subscribe and the first publish",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=180.0,
        help="deadline for subscribing, and for delivery counted from the first publish",
    )
    p.add_argument(
        "--phase-budget", type=float, default=300.0, help="hard cap on one phase, seconds"
    )
    p.add_argument(
        "--stall",
        type=float,
        default=3.0,
        help="end a phase early when publishing is over and nothing arrived for this long",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=30.0,
        help="before each measured window, wait up to this long for both cores to be idle",
    )
    p.add_argument(
        "--disturbed-retries",
        type=int,
        default=1,
        help="run a phase again (this many times at most) when other processes took"
        f" >= {DISTURBED_PCT:g}%% of a benchmark core during it",
    )
    p.add_argument("--ready-timeout", type=float, default=30.0, help="seconds to wait for /healthz")
    p.add_argument("--server-cpu", type=int, default=0, help="core the servers are pinned to")
    p.add_argument("--loadgen-cpu", type=int, default=1, help="core this process is pinned to")
    p.add_argument(
        "--reuse-server",
        action="store_true",
        help="one server process for all phases instead of a fresh one per phase",
    )
    p.add_argument(
        "--out", type=Path, default=BENCH_DIR / "results", help="directory for the JSON results"
    )
    p.add_argument("--quick", action="store_true", help="small counts for a smoke test")


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
        default="idle,throughput,latency",
        help="comma-separated subset of: idle, throughput, latency",
    )
    p.add_argument(
        "--subscribers",
        type=int,
        default=1000,
        help="subscribers in the throughput and latency phases",
    )
    p.add_argument(
        "--events", type=int, default=2000, help="events published in the throughput phase"
    )
    p.add_argument(
        "--window",
        type=int,
        default=8,
        help="publisher keep-alive connections, one request in flight each",
    )
    p.add_argument("--latency-rate", type=float, default=20.0, help="events/s in the latency phase")
    p.add_argument(
        "--latency-duration",
        type=float,
        default=10.0,
        help="seconds of publishing in the latency phase",
    )
    p.add_argument(
        "--idle-subscribers", type=int, default=10_000, help="subscribers in the idle/accept phase"
    )
    p.add_argument(
        "--connect-concurrency", type=int, default=1000, help="connects waiting for headers at once"
    )
    add_run_arguments(p)
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
        args.subscribers, args.events, args.idle_subscribers = 100, 200, 1000
        args.latency_duration = 3.0
    return args


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    log_dir = Path(tempfile.mkdtemp(prefix="fanout-logs-"))
    results: dict[str, Any] = {}
    t0 = time.monotonic()
    for name in args.servers:
        print(f"== {name}", file=sys.stderr, flush=True)
        results[name] = await bench_server(name, args, log_dir)
    print(f"server logs in {log_dir}", file=sys.stderr)
    return {"results": results, "total_wall_s": round(time.monotonic() - t0, 1)}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Many sockets: subscribers here plus, for the servers (inherited), their accepted ends.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(args.idle_subscribers, args.subscribers) + 1024
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(want, soft)), hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < want:
        print(f"warning: RLIMIT_NOFILE {soft}/{hard} below the {want} needed", file=sys.stderr)
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {args.loadgen_cpu})
    started = time.strftime("%Y%m%d-%H%M%S")
    run = uvloop.run(amain(args))
    doc = {
        "benchmark": "fanout",
        "started": started,
        "argv": sys.argv[1:] if argv is None else list(argv),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": machine_info(args),
        **run,
    }
    table = render_table(run["results"], args)
    doc["table_markdown"] = table
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"fanout-{started}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(table)
    print(f"\nresults: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    print(f"total {run['total_wall_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
