"""The fan-out load generator: raw SSE subscribers, the publisher, and the delivery check.

A subscriber is an ``asyncio.Protocol``: a hand-written GET, a minimal status/header parser,
then, while measuring, only each read stored with its arrival time and ``data:`` lines counted;
chunked decoding and the SSE blocks (split on blank lines) are parsed after the measured window
(:meth:`Subscriber.replay`), so the load generator costs less per event than any server.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, cast

from harness import HOST
from harness.http import CHUNKED_RE, MAX_HEAD, ChunkDecoder, build_request, open_http

SEQ_RE = re.compile(rb'"s":(\d+)')
SEQ_T_RE = re.compile(rb'"s":(\d+),"t":(\d+)')
#: The event a Sluiceway stream opened without an id starts with (its position, as a data
#: line): not one of the published events, and not malformed either.
POSITION = b"event: sluiceway.position"


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
        "chunked",
        "closing",
        "count",
        "data_lines",
        "dechunker",
        "done",
        "eof",
        "error",
        "head",
        "headers_fut",
        "in_body",
        "now",
        "read_ns",
        "reads",
        "request",
        "seqs",
        "sink",
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
        self.dechunker = ChunkDecoder()
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
            if not self._on_head(head[: end + 2]):  # bad status: already failed and closing
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
        # A stream's opening position (``sluiceway.position``, with a data line) is no event.
        n = data.count(b"data:") - data.count(POSITION)
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

    def _on_head(self, head: bytes) -> bool:
        """Take the response head; False if it is not a 200 (then failed and closing)."""
        try:
            self.status = int(head[9:12])
        except ValueError:
            self._fail(f"bad status line {head[:40]!r}")
            return False
        if self.status != 200:
            self._fail(f"status {self.status}")
            return False
        self.chunked = CHUNKED_RE.search(head) is not None
        self.in_body = True
        sink = self.sink
        sink.headers_done += 1
        sink.last_header_ns = time.monotonic_ns()
        self.headers_fut.set_result(None)
        return True

    def _dechunk(self, data: bytes) -> bytes:
        dechunker = self.dechunker
        body = dechunker.feed(data)
        if dechunker.ended:
            self.eof = True  # server ended the stream
        if dechunker.bad_size_line:
            self._fail("bad chunk size line")
        return body

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
        self.data_lines += complete.count(b"data:") - complete.count(POSITION)
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
        self.dechunker = ChunkDecoder()
        self.sse = b""
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
    port: int,
    topic: str,
    count: int,
    concurrency: int,
    sink: Sink,
    limit_s: float,
    cls: type[Subscriber] = Subscriber,
) -> tuple[list[Subscriber], list[str], float]:
    """Open `count` subscribers (of `cls`) of `topic`: :func:`open_connections`."""
    request = build_request(
        "GET",
        f"/topics/{topic}",
        port,
        None,
        {"Accept": "text/event-stream", "Cache-Control": "no-cache"},
    )
    return await open_connections(
        port, count, concurrency, sink, limit_s, lambda fut: cls(request, sink, fut)
    )


#: A connection's protocol (an ``asyncio.Protocol`` that can close its connection).
C = TypeVar("C", bound="Closable")


async def open_connections(
    port: int,
    count: int,
    concurrency: int,
    sink: Sink,
    limit_s: float,
    make: Callable[[asyncio.Future[None]], C],
    *,
    describe: Callable[[Exception], str] = repr,
    ready: str = "had headers",
) -> tuple[list[C], list[str], float]:
    """Open `count` connections, each the protocol `make` returns for a future that it resolves
    once it is ready (has its headers, is subscribed) and that it counts in the sink's
    ``headers_done``, at most `concurrency` connecting or setting up at once.

    Returns (connections ready, errors as `describe` puts them, seconds until the last was
    ready). The whole open is bounded by `limit_s`; on expiry every connection made is closed
    (the message says how many were `ready`).
    """
    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(concurrency)
    made: list[C] = []
    done: list[C] = []
    errors: list[str] = []
    sink.n_subs = count

    def factory(fut: asyncio.Future[None]) -> C:
        proto = make(fut)
        made.append(proto)
        return proto

    async def one() -> None:
        async with sem:
            fut: asyncio.Future[None] = loop.create_future()
            try:
                _, proto = await loop.create_connection(
                    lambda: cast(asyncio.Protocol, factory(fut)), HOST, port
                )
                await fut
                done.append(cast(C, proto))
            except (OSError, ConnectionError) as exc:
                errors.append(describe(exc))

    t0 = time.monotonic_ns()
    try:
        async with asyncio.timeout(limit_s):
            await asyncio.gather(*(one() for _ in range(count)))
    except TimeoutError:
        await close_subscribers(made)
        raise TimeoutError(
            f"subscribing timed out after {limit_s}s: {len(done)}/{count} {ready},"
            f" {len(errors)} errors"
        ) from None
    elapsed = (sink.last_header_ns - t0) / 1e9 if sink.headers_done else float("nan")
    sink.n_subs = len(done)
    return done, errors, elapsed


class Closable(Protocol):
    def close(self) -> None: ...


async def close_subscribers(subs: Sequence[Closable]) -> None:
    for s in subs:
        s.close()
    await asyncio.sleep(0)  # let the transports flush their FINs


@dataclass
class PublishStats:
    """What the publisher did: sent, acknowledged, errors, ids, first/last ack time."""

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


def publish_body(seq: int) -> bytes:
    """A publish's JSON: data is a compact JSON document carried as a JSON string,
    ``{"s":seq,"t":monotonic_ns}``, t taken now."""
    return b'{"data":"{\\"s\\":%d,\\"t\\":%d}"}' % (seq, time.monotonic_ns())


async def publish(
    ports: Sequence[int],
    topic: str,
    count: int,
    lanes: int,
    rate: float | None,
    stats: PublishStats,
    stop: asyncio.Event,
    post_ns: array[int] | None = None,
) -> None:
    """Publish seq 0..count-1 over `lanes` keep-alive connections (one POST in flight each),
    lane k to ``ports[k % len(ports)]``.

    Lane k publishes seqs k, k+lanes, ... one after another (each POST answered before the
    next), so per lane the order is fixed whichever process it goes through. With `rate`,
    publish i starts at t0 + i/rate (absolute schedule, no drift). With `post_ns`, each POST's
    round trip (written -> response parsed) is appended there.
    """
    conns = [await open_http(ports[k % len(ports)]) for k in range(lanes)]
    prefixes = [
        build_request("POST", f"/topics/{topic}", ports[k % len(ports)], b"")[
            : -len(b"Content-Length: 0\r\n\r\n")
        ]
        for k in range(lanes)
    ]
    stats.first_ns = time.monotonic_ns()
    t0 = time.monotonic()

    async def lane(k: int) -> None:
        conn, prefix = conns[k], prefixes[k]
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
            t_req = time.monotonic_ns() if post_ns is not None else 0
            try:
                status, resp = await conn.request(
                    prefix + b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )
            except (OSError, ConnectionError, ValueError) as exc:
                stats.errors.append(f"seq {seq}: {exc!r}")
                return
            if post_ns is not None:
                post_ns.append(time.monotonic_ns() - t_req)
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


async def finish_publish(pub: asyncio.Task[None], stats: PublishStats, stop: asyncio.Event) -> None:
    """After a measured window: tell the publisher to stop and give it 10 s to (the stats say
    when it did not)."""
    stop.set()
    try:
        async with asyncio.timeout(10):
            await pub
    except TimeoutError:
        pub.cancel()
        stats.errors.append("publisher did not finish within 10 s after the phase")


def publish_report(stats: PublishStats, events: int) -> dict[str, Any]:
    """The ``publish`` part of a phase's JSON."""
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


class Delivered(Protocol):
    """What :func:`check_delivery` reads of a subscriber."""

    seqs: array[int]
    data_lines: int
    error: str | None


def check_delivery(subs: Sequence[Delivered], count: int, lanes: int) -> dict[str, Any]:
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
            for name, v in issues.items():
                totals[name] += v
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
