"""Transfer benchmark: downloads, uploads and a 1M-row CSV export, sluiceway next to Starlette.

One run starts each server (pinned to one CPU), drives it from this process (pinned to the
other) and prints one markdown table; everything measured goes to
``bench/results/transfer-<time>.json``.

* ``sluiceway``  ``sluiceway serve`` (``GET/PUT /files/...``, ``POST /uploads``,
                 ``GET /exports/demo.csv``), compression off;
* ``starlette``  ``bench/peers/transfer_peers.py`` under uvicorn (uvloop, httptools): Starlette's
                 ``FileResponse``; ``await request.body()`` then ``write()``; ``request.form()``
                 then ``await upload.read()``; ``.all()`` rows, csv into a ``StringIO``, one
                 ``Response``.

Phases (fresh servers for each phase; the servers of a phase are measured in alternation):

* ``download``    one client downloads a page-cached file (1 GiB), ``--repeat`` times; MiB/s,
                  server CPU s/GiB, peak RSS; every byte compared with the file.
* ``concurrent``  N clients (32) on keep-alive connections each download a 10 MiB file R times
                  (4) at once; aggregate MiB/s, server CPU s/GiB, peak RSS; every byte compared.
* ``export``      ``GET /exports/demo.csv`` of the 1,000,000-row demo table; rows/s, time to
                  first byte, server CPU, peak RSS; the CSV parsed and every id checked.
* ``put``         ``PUT /files/<name>`` of the 1 GiB file (raw body, sent with ``sendfile``);
                  MiB/s until the response, server CPU, peak RSS; the stored file's SHA-256.
* ``post``        the same as a ``multipart/form-data`` ``POST /uploads``.

Peak RSS is the kernel's high-water mark (``VmHWM``) of the server process, reset
(``clear_refs``) right before each measured request. The load generator is plain blocking
sockets (threads for ``concurrent``) and costs well under the servers per byte: downloads are
received into a reused 4 MiB buffer with ``SO_RCVLOWAT`` at 1 MiB and compared with the
file's known pattern (see :class:`Pattern`), uploads are sent with ``socket.sendfile``.

    uv run python bench/transfer.py            # everything, about 3-5 minutes on a quiet machine
    uv run python bench/transfer.py --quick    # small sizes, under a minute
    uv run python bench/transfer.py --help
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gc
import hashlib
import importlib.metadata
import io
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import psutil

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
VENV_BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
KiB, MiB, GiB = 1024, 1024**2, 1024**3

SERVER_NAMES = ("sluiceway", "starlette")
PHASES = ("download", "concurrent", "export", "put", "post")

#: A window is disturbed when other user processes took this much of one core during it.
DISTURBED_PCT = 10.0
#: Bytes received, then compared with the file, at a time when downloading.
RECV_BUFFER = 4 * MiB
#: The receive low-water mark while downloading (see :class:`Download`).
RCVLOWAT = 1 * MiB
ERROR_LINE_RE = re.compile(r"Traceback|\bERROR\b|Exception|\berror\b", re.IGNORECASE)


# --------------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def server_command(name: str, port: int, cpu: int) -> list[str]:
    pin = ["taskset", "-c", str(cpu)]
    common = ["--host", HOST, "--port", str(port), "--log-level", "warning"]
    if name == "sluiceway":
        return [*pin, str(VENV_BIN / "sluiceway"), "serve", *common]
    return [
        *pin,
        str(VENV_BIN / "uvicorn"),
        "transfer_peers:app",
        "--app-dir",
        str(BENCH_DIR / "peers"),
        *common,
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--workers",
        "1",
    ]


def server_env(name: str, files_dir: Path, database: Path, max_upload: int) -> dict[str, str]:
    env = dict(os.environ)
    url = f"sqlite+aiosqlite:///{database}"
    if name == "sluiceway":
        env.update(
            SLUICEWAY_FILES_DIR=str(files_dir),
            SLUICEWAY_DATABASE_URL=url,
            SLUICEWAY_MAX_UPLOAD_BYTES=str(max_upload),
        )
        env.setdefault("SLUICEWAY_COMPRESSION", "false")
    else:
        env.update(TRANSFER_FILES_DIR=str(files_dir), TRANSFER_DATABASE_URL=url)
    return env


class Server:
    """One server under test: start, readiness, CPU and memory of its process, stop."""

    def __init__(self, name: str, args: argparse.Namespace, log_dir: Path, tag: str) -> None:
        self.name = name
        self.port = free_port()
        self.cmd = server_command(name, self.port, args.server_cpu)
        self.env = server_env(name, args.files_dir, args.database, args.max_upload)
        self.log_path = log_dir / f"{name}-{tag}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ps: psutil.Process | None = None

    def launch(self) -> None:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.cmd,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.ps = psutil.Process(self.proc.pid)

    def wait_ready(self, ready_timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with code {self.proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://{HOST}:{self.port}/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"{self.name}: /healthz not ready after {ready_timeout} s")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu_seconds(self) -> float:
        assert self.ps is not None
        t = self.ps.cpu_times()  # all threads (the file and hashing workers too)
        return t.user + t.system

    def status_kib(self, field: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)

    def reset_peak(self) -> None:
        """Set the high-water mark (VmHWM) back to the current RSS."""
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")

    def wait_quiet(self, max_s: float = 5.0, window: float = 0.25) -> None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < max_s:
            c0 = self.cpu_seconds()
            time.sleep(window)
            if self.cpu_seconds() - c0 < 0.05 * window:
                return

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)

    def log_problems(self) -> list[str]:
        try:
            text = self.log_path.read_text("utf-8", "replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if ERROR_LINE_RE.search(line)][:20]


# --------------------------------------------------------------------------------------------
# CPU accounting: the server, this process, the pinned cores, and everyone else
# --------------------------------------------------------------------------------------------


def core_ticks() -> dict[int, list[int]]:
    """Per-CPU /proc/stat counters: user nice system idle iowait irq softirq steal ..."""
    out: dict[int, list[int]] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, _, rest = line.partition(" ")
        if name.startswith("cpu") and name[3:].isdigit():
            out[int(name[3:])] = [int(x) for x in rest.split()]
    return out


def self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    return ru.ru_utime + ru.ru_stime


def others_cpu(exclude: set[int]) -> dict[int, float]:
    """CPU seconds of every user-space process except ``exclude`` (kernel threads left out:
    on loopback they do our own packet and writeback work)."""
    out: dict[int, float] = {}
    for p in psutil.process_iter(["ppid", "cpu_times"]):
        info = p.info
        if p.pid in exclude or p.pid == 2 or info["ppid"] == 2 or info["cpu_times"] is None:
            continue
        out[p.pid] = info["cpu_times"].user + info["cpu_times"].system
    return out


def others_delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(v - before.get(pid, 0.0) for pid, v in after.items())


class Window:
    """CPU use over a measured window: the server process, this process (the load generator),
    the two pinned cores (/proc/stat, softirq included: loopback TCP delivery is charged
    there) and every other user process on the machine."""

    def __init__(self, server: Server, servers: Sequence[Server], cores: dict[str, int]) -> None:
        self.server = server
        self.cores = cores
        self.exclude = {os.getpid(), *(s.pid for s in servers)}
        self.o0 = others_cpu(self.exclude)
        self.k0 = core_ticks()
        self.s0 = server.cpu_seconds()
        self.c0 = self_cpu()
        self.t0 = time.perf_counter()

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self.t0
        server = self.server.cpu_seconds() - self.s0
        client = self_cpu() - self.c0
        k1 = core_ticks()
        others = others_delta(self.o0, others_cpu(self.exclude))
        res = {
            "wall_s": round(wall, 4),
            "server_cpu_s": round(server, 3),
            "loadgen_cpu_s": round(client, 3),
            "server_cpu_pct": round(100 * server / wall, 1),
            "loadgen_cpu_pct": round(100 * client / wall, 1),
            "others_cpu_pct": round(100 * others / wall, 1),
        }
        for role, core in self.cores.items():
            d = [b - a for a, b in zip(self.k0[core], k1[core], strict=False)]
            total = sum(d[:8]) or 1
            res[f"{role}_core_busy_pct"] = round(100 * (total - d[3] - d[4] - d[7]) / total, 1)
            res[f"{role}_core_softirq_pct"] = round(100 * d[6] / total, 1)
            res[f"{role}_core_steal_pct"] = round(100 * d[7] / total, 1)
        return res


def wait_machine_quiet(servers: Sequence[Server], max_s: float) -> dict[str, float]:
    """Wait (bounded) until, for a whole second, other processes used < DISTURBED_PCT of a
    core and the servers were idle: on a shared 2-core machine a busy neighbour moves every
    number."""
    exclude = {os.getpid(), *(s.pid for s in servers)}
    t0 = time.monotonic()
    quiet_samples = 0
    while True:
        o0, s0 = others_cpu(exclude), [s.cpu_seconds() for s in servers]
        time.sleep(0.5)
        others = 100 * others_delta(o0, others_cpu(exclude)) / 0.5
        busy = max((s.cpu_seconds() - c) / 0.5 * 100 for s, c in zip(servers, s0, strict=True))
        quiet_samples = quiet_samples + 1 if others < DISTURBED_PCT and busy < 5 else 0
        if quiet_samples >= 2 or time.monotonic() - t0 >= max_s:
            return {"waited_s": round(time.monotonic() - t0, 1), "others_pct": round(others, 1)}


# --------------------------------------------------------------------------------------------
# Blocking HTTP/1.1 client
# --------------------------------------------------------------------------------------------


def connect(port: int, timeout: float) -> socket.socket:
    sock = socket.create_connection((HOST, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # A blocking socket (SO_RCVLOWAT applies to blocking reads) with kernel timeouts.
    tv = struct.pack("ll", int(timeout), 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
    return sock


def request_head(method: str, path: str, port: int, extra: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}", "Accept-Encoding: identity"]
    lines += [f"{k}: {v}" for k, v in extra.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_head(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """(status, lower-cased headers, bytes after the head)."""
    buf = b""
    while (end := buf.find(b"\r\n\r\n")) < 0:
        data = sock.recv(64 * KiB)
        if not data:
            raise ConnectionError(f"connection closed before the response head ({buf[:200]!r})")
        buf += data
    lines = buf[:end].decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return int(lines[0].split(" ", 2)[1]), headers, buf[end + 4 :]


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """A whole response read until the server closed: (status, headers, decoded body)."""
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        raise ValueError(f"no response head in {raw[:200]!r}")
    lines = raw[:end].decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    body = raw[end + 4 :]
    if "chunked" in headers.get("transfer-encoding", "").lower():
        parts, pos = [], 0
        while True:
            eol = body.index(b"\r\n", pos)
            size = int(body[pos:eol].split(b";", 1)[0], 16)
            if size == 0:
                break
            parts.append(body[eol + 2 : eol + 2 + size])
            pos = eol + 2 + size + 2
        body = b"".join(parts)
    elif "content-length" in headers:
        body = body[: int(headers["content-length"])]
    return int(lines[0].split(" ", 2)[1]), headers, body


def read_until_close(sock: socket.socket) -> bytes:
    chunks = []
    while data := sock.recv(MiB):
        chunks.append(data)
    return b"".join(chunks)


class Pattern:
    """The content of a test file: one random MiB repeated, each MiB's first 16 bytes replaced
    by its index (so a misplaced, repeated or skipped piece shows). Any stretch of the file can
    be rebuilt from the one MiB, which stays in the CPU cache: comparing a download with it
    costs a ``memcmp`` against hot memory, where reading the file again would cost another
    copy from RAM (on the build machine, as much CPU as the server's whole send path)."""

    STAMP = 16

    def __init__(self) -> None:
        self.block = os.urandom(MiB)

    def window(self, size: int) -> bytearray:
        """A buffer of ``size`` bytes (a multiple of a MiB) holding the block repeated; then
        :meth:`stamp` makes it the file's bytes at some offset."""
        assert size % MiB == 0
        return bytearray(self.block * (size // MiB))

    def stamp(self, window: bytearray, offset: int) -> None:
        """Make ``window`` the file's bytes from ``offset`` (a multiple of a MiB)."""
        first = offset // MiB
        for k in range(len(window) // MiB):
            window[k * MiB : k * MiB + self.STAMP] = (first + k).to_bytes(self.STAMP, "little")

    def write(self, path: Path, size: int) -> str:
        """Write the first ``size`` bytes to ``path``; returns their SHA-256."""
        block = bytearray(self.block)
        digest = hashlib.sha256()
        with path.open("wb") as f:
            for index in range((size + MiB - 1) // MiB):
                block[: self.STAMP] = index.to_bytes(self.STAMP, "little")
                piece = block[: min(MiB, size - index * MiB)]
                f.write(piece)
                digest.update(piece)
        return digest.hexdigest()


class Download:
    """Receive one response body and compare every byte with the file's :class:`Pattern`.

    The body is received a window (``buffer_size``, a multiple of a MiB) at a time into one
    reused buffer, which is compared with the same window rebuilt from the pattern.

    The socket's receive low-water mark (``SO_RCVLOWAT``) is raised to :data:`RCVLOWAT` while
    at least twice that much is still to come, so the reader is woken about once per MiB
    rather than once per 64 KiB loopback segment. (The kernel wakes a reader only once that
    many unread bytes are queued, so the mark drops back to 1 before the tail.)
    """

    def __init__(self, pattern: Pattern, buffer_size: int) -> None:
        self.pattern = pattern
        self.buf = bytearray(buffer_size)
        self.expected = pattern.window(buffer_size)

    def get(self, sock: socket.socket, port: int, path: str, size: int) -> dict[str, Any]:
        sock.sendall(request_head("GET", path, port, {}))
        status, headers, rest = read_head(sock)
        length = int(headers.get("content-length", -1))
        if status != 200 or length != size:
            raise ValueError(f"GET {path}: status {status}, content-length {length} != {size}")
        view, full = memoryview(self.buf), len(self.buf)
        view[: len(rest)] = rest  # the part of the body that came with the head
        exact, pos, filled, lowat = True, 0, len(rest), 1
        try:
            while pos < size:
                want = min(full, size - pos)
                while filled < want:
                    mark = RCVLOWAT if size - pos - filled >= 2 * RCVLOWAT else 1
                    if mark != lowat:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, mark)
                        lowat = mark
                    n = sock.recv_into(view[filled:want], want - filled)
                    if n == 0:
                        raise ConnectionError(f"GET {path}: closed at {pos + filled} of {size}")
                    filled += n
                self.pattern.stamp(self.expected, pos)
                if want == full:
                    exact = exact and self.buf == self.expected  # memcmp, no copies
                else:
                    exact = exact and view[:want].tobytes() == self.expected[:want]
                pos, filled = pos + want, 0
        finally:
            if lowat != 1:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)
        return {"bytes": pos, "byte_exact": exact}


# --------------------------------------------------------------------------------------------
# Test data
# --------------------------------------------------------------------------------------------


def demo_database(args: argparse.Namespace) -> Path:
    """The demo table with ``--rows`` rows, built once with ``sluiceway demo-data`` and kept
    (keyed by the row count) for later runs."""
    path = args.workdir / f"demo-{args.rows}.db"
    if path.exists():
        with contextlib.closing(sqlite3.connect(path)) as db, contextlib.suppress(sqlite3.Error):
            if db.execute("SELECT count(*) FROM demo").fetchone()[0] == args.rows:
                return path
    partial = path.with_suffix(".db.partial")
    for leftover in (partial, Path(f"{partial}-wal"), Path(f"{partial}-shm")):
        leftover.unlink(missing_ok=True)
    print(f"building the demo table ({args.rows:,} rows) in {path} ...", file=sys.stderr)
    started = time.monotonic()
    subprocess.run(
        [
            str(VENV_BIN / "sluiceway"),
            "demo-data",
            "--rows",
            str(args.rows),
            "--database",
            f"sqlite+aiosqlite:///{partial}",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    os.replace(partial, path)
    print(f"  done in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return path


# --------------------------------------------------------------------------------------------
# Measurements: each returns (result, after) where ``after`` runs outside the measured window
# --------------------------------------------------------------------------------------------

Measure = Callable[[Server], tuple[dict[str, Any], Callable[[], dict[str, Any]]]]


def measure_download(args: argparse.Namespace) -> Measure:
    download = Download(args.big_pattern, RECV_BUFFER)

    def run(srv: Server) -> tuple[dict[str, Any], Callable[[], dict[str, Any]]]:
        with contextlib.closing(connect(srv.port, args.timeout)) as sock:
            res = download.get(sock, srv.port, f"/files/{args.big_file.name}", args.file_bytes)
        return res, dict

    return run


def measure_concurrent(args: argparse.Namespace) -> Measure:
    path, size = f"/files/{args.small_file.name}", args.small_bytes

    def run(srv: Server) -> tuple[dict[str, Any], Callable[[], dict[str, Any]]]:
        socks = [connect(srv.port, args.timeout) for _ in range(args.clients)]
        barrier = threading.Barrier(args.clients + 1)
        outcomes: list[dict[str, Any]] = [{} for _ in range(args.clients)]

        def client(i: int) -> None:
            download = Download(args.small_pattern, MiB)
            exact, total = True, 0
            try:
                barrier.wait()
                for _ in range(args.rounds):
                    res = download.get(socks[i], srv.port, path, size)
                    exact, total = exact and res["byte_exact"], total + res["bytes"]
                outcomes[i] = {"bytes": total, "byte_exact": exact}
            except Exception as exc:
                outcomes[i] = {"bytes": total, "byte_exact": False, "error": repr(exc)}

        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        try:
            for t in threads:
                t.start()
            barrier.wait()  # connected, all released at once
            for t in threads:
                t.join()
        finally:
            for s in socks:
                s.close()
        errors = [o["error"] for o in outcomes if "error" in o]
        res = {
            "bytes": sum(o["bytes"] for o in outcomes),
            "byte_exact": not errors and all(o["byte_exact"] for o in outcomes),
            "downloads": args.clients * args.rounds,
        }
        if errors:
            res["errors"] = errors[:5]
        return res, dict

    return run


def check_csv(body: bytes, rows: int) -> dict[str, Any]:
    """Every record must be one row, ids 1..rows in order (an error marker breaks that)."""
    reader = csv.reader(io.StringIO(body.decode("utf-8"), newline=""))
    header = next(reader, [])
    expected, bad = 1, None
    for record in reader:
        if bad is None and (not record or record[0] != str(expected)):
            bad = f"record {expected}: {record[:2]!r}"
        expected += 1
    ok = header[:1] == ["id"] and expected - 1 == rows and bad is None
    return {"rows_received": expected - 1, "columns": header, "rows_ok": ok, "first_bad": bad}


def measure_export(args: argparse.Namespace) -> Measure:
    def run(srv: Server) -> tuple[dict[str, Any], Callable[[], dict[str, Any]]]:
        with contextlib.closing(connect(srv.port, args.timeout)) as sock:
            t0 = time.perf_counter()
            sock.sendall(
                request_head("GET", "/exports/demo.csv", srv.port, {"Connection": "close"})
            )
            first = sock.recv(MiB)
            ttfb = time.perf_counter() - t0
            raw = first + read_until_close(sock)
            wall = time.perf_counter() - t0

        def after() -> dict[str, Any]:
            status, headers, body = split_response(raw)
            out = {"status": status, "body_bytes": len(body), **check_csv(body, args.rows)}
            out["rows_ok"] = out["rows_ok"] and status == 200
            out["chunked"] = "chunked" in headers.get("transfer-encoding", "")
            return out

        return {
            "ttfb_ms": round(ttfb * 1000, 1),
            "request_s": round(wall, 3),
            "rows_per_s": round(args.rows / wall),
        }, after

    return run


def measure_upload(args: argparse.Namespace, multipart: bool) -> Measure:
    counter = iter(range(1_000_000))

    def run(srv: Server) -> tuple[dict[str, Any], Callable[[], dict[str, Any]]]:
        name = f"upload-{srv.name}-{'post' if multipart else 'put'}-{next(counter)}.bin"
        size = args.file_bytes
        if multipart:
            boundary = "----sluicewaybench" + secrets.token_hex(8)
            pre = (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file";'
                f' filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
            ).encode()
            post = f"\r\n--{boundary}--\r\n".encode()
            head = request_head(
                "POST",
                "/uploads",
                srv.port,
                {
                    "Content-Type": f"multipart/form-data; boundary={boundary}",
                    "Content-Length": str(len(pre) + size + len(post)),
                    "Connection": "close",
                },
            )
        else:
            pre = post = b""
            head = request_head(
                "PUT",
                f"/files/{name}",
                srv.port,
                {
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(size),
                    "Connection": "close",
                },
            )
        send_error = None
        with contextlib.closing(connect(srv.port, args.timeout)) as sock:
            t0 = time.perf_counter()
            try:
                sock.sendall(head + pre)
                with args.big_file.open("rb") as f:
                    sock.sendfile(f)  # zero-copy: the client costs next to nothing
                sock.sendall(post)
            except OSError as exc:  # answered early (an error) and closed: read the answer
                send_error = repr(exc)
            sent = time.perf_counter() - t0
            raw = read_until_close(sock)
            wall = time.perf_counter() - t0
        res: dict[str, Any] = {
            "request_s": round(wall, 3),
            "sent_s": round(sent, 3),
            "mib_per_s": round(size / MiB / wall, 1),
        }
        if send_error:
            res["send_error"] = send_error

        def after() -> dict[str, Any]:
            status, _, body = split_response(raw)
            out: dict[str, Any] = {"status": status}
            try:
                answer = json.loads(body)
            except ValueError:
                answer = {"raw": body[:300].decode("utf-8", "replace")}
            out["answer"] = answer
            stored = args.files_dir / name
            if not stored.is_file():
                out["sha256_ok"] = False
                return out
            # How long until the stored bytes are on disk: sluiceway fsyncs before it
            # answers (about 0 here); the peer leaves it to the kernel's writeback.
            fd = os.open(stored, os.O_RDONLY)
            try:
                t = time.perf_counter()
                os.fsync(fd)
                out["fsync_after_s"] = round(time.perf_counter() - t, 3)
            finally:
                os.close(fd)
            with stored.open("rb") as f:
                on_disk = hashlib.file_digest(f, "sha256").hexdigest()
            files = answer.get("files") if isinstance(answer, dict) else None
            reported = (files[0] if files else answer).get("sha256")
            out["stored_bytes"] = stored.stat().st_size
            out["sha256_ok"] = status in (200, 201) and on_disk == args.file_sha256
            if reported is not None:
                out["reported_sha256_ok"] = reported == args.file_sha256
                out["sha256_ok"] = out["sha256_ok"] and out["reported_sha256_ok"]
            stored.unlink()
            return out

        return res, after

    return run


MEASURES: dict[str, Callable[[argparse.Namespace], Measure]] = {
    "download": measure_download,
    "concurrent": measure_concurrent,
    "export": measure_export,
    "put": lambda args: measure_upload(args, multipart=False),
    "post": lambda args: measure_upload(args, multipart=True),
}


def measured(
    srv: Server, servers: Sequence[Server], run: Measure, args: argparse.Namespace
) -> dict[str, Any]:
    """One measured request (or group of them), run again when other processes disturbed it."""
    disturbed: list[dict[str, Any]] = []
    while True:
        quiet = wait_machine_quiet(servers, args.quiet_wait)
        srv.wait_quiet()
        gc.collect()
        rss_before = srv.status_kib("VmRSS")
        srv.reset_peak()
        gc.disable()
        window = Window(srv, servers, {"server": args.server_cpu, "loadgen": args.loadgen_cpu})
        try:
            res, after = run(srv)
        except Exception as exc:
            res, after = {"error": repr(exc)}, dict
        finally:
            cpu = window.stop()
            gc.enable()
        res.update(cpu=cpu, quiet=quiet, rss_before_mib=round(rss_before / KiB, 1))
        if srv.alive():
            peak = srv.status_kib("VmHWM")
            res["peak_rss_mib"] = round(peak / KiB, 1)
            res["rss_growth_mib"] = round((peak - rss_before) / KiB, 1)
        else:
            res["error"] = f"server exited with code {srv.proc.returncode if srv.proc else '?'}"
        try:
            res.update(after())  # checks, outside the window
        except Exception as exc:
            res.setdefault("error", f"check failed: {exc!r}")
        if cpu["others_cpu_pct"] < DISTURBED_PCT or len(disturbed) >= args.disturbed_retries:
            if disturbed:
                res["disturbed_attempts"] = disturbed
            return res
        print(
            f"    [{srv.name}] other processes took {cpu['others_cpu_pct']}% of a core,"
            " measuring again",
            file=sys.stderr,
            flush=True,
        )
        disturbed.append(res)


def summarize(phase: str, runs: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """Medians (peak RSS: the largest) over the runs that worked, and of those the undisturbed
    ones when there are any."""
    good = [r for r in runs if "error" not in r]
    out: dict[str, Any] = {"runs": len(runs), "failed": len(runs) - len(good)}
    if not good:
        out["error"] = runs[0].get("error") if runs else "not run"
        return out
    ok_runs = good
    undisturbed = [r for r in good if r["cpu"]["others_cpu_pct"] < DISTURBED_PCT]
    good = undisturbed or good
    out["runs_used"] = len(good)

    def med(values: list[float]) -> float:
        return statistics.median(values)

    out["peak_rss_mib"] = max(r["peak_rss_mib"] for r in good)
    out["rss_growth_mib"] = max(r["rss_growth_mib"] for r in good)
    out["rss_before_mib"] = med([r["rss_before_mib"] for r in good])
    out["server_cpu_s"] = med([r["cpu"]["server_cpu_s"] for r in good])
    out["loadgen_core_busy_pct"] = max(r["cpu"]["loadgen_core_busy_pct"] for r in good)
    out["server_core_busy_pct"] = max(r["cpu"]["server_core_busy_pct"] for r in good)
    out["others_cpu_pct"] = max(r["cpu"]["others_cpu_pct"] for r in good)
    out["disturbed"] = out["others_cpu_pct"] >= DISTURBED_PCT
    if phase in ("download", "concurrent"):
        out["mib_per_s"] = med([r["bytes"] / MiB / r["cpu"]["wall_s"] for r in good])
        out["cpu_s_per_gib"] = med([r["cpu"]["server_cpu_s"] / (r["bytes"] / GiB) for r in good])
        out["ok"] = len(ok_runs) == len(runs) and all(r["byte_exact"] for r in ok_runs)
    elif phase == "export":
        out["rows_per_s"] = med([r["rows_per_s"] for r in good])
        out["ttfb_ms"] = med([r["ttfb_ms"] for r in good])
        out["request_s"] = med([r["request_s"] for r in good])
        out["body_mib"] = round(good[0]["body_bytes"] / MiB, 1)
        out["ok"] = len(ok_runs) == len(runs) and all(r["rows_ok"] for r in ok_runs)
    else:
        out["mib_per_s"] = med([r["mib_per_s"] for r in good])
        out["request_s"] = med([r["request_s"] for r in good])
        out["fsync_after_s"] = med([r.get("fsync_after_s", float("nan")) for r in good])
        out["ok"] = len(ok_runs) == len(runs) and all(r.get("sha256_ok") for r in ok_runs)
    return out


def run_phase(phase: str, args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    """Fresh servers for the phase, measured in alternation ``--repeat`` times."""
    repeat = args.repeat if phase in ("download", "concurrent") else args.repeat_slow
    starting: list[Server] = []
    servers: list[Server] = []
    out: dict[str, Any] = {name: {"runs": []} for name in args.servers}
    try:
        for name in args.servers:  # started side by side, then waited for
            srv = Server(name, args, log_dir, phase)
            out[name]["cmd"] = srv.cmd
            srv.launch()
            starting.append(srv)
        for srv in starting:
            try:
                srv.wait_ready(args.ready_timeout)
            except Exception as exc:
                out[srv.name]["start_error"] = repr(exc)
                print(f"  [{srv.name}] start failed: {exc!r}", file=sys.stderr, flush=True)
                srv.stop()
                continue
            servers.append(srv)
        run = MEASURES[phase](args)
        if phase == "export":
            for srv in servers:  # a first export would also pay for the engine and imports
                path = "/exports/demo.csv?limit=1" if srv.name == "sluiceway" else "/warmup"
                try:
                    httpx.get(f"http://{HOST}:{srv.port}{path}", timeout=60).raise_for_status()
                except httpx.HTTPError as exc:
                    out[srv.name]["warmup_error"] = repr(exc)
                    print(f"  [{srv.name}] warm-up failed: {exc!r}", file=sys.stderr)
        for i in range(repeat):
            for srv in servers:
                if not srv.alive():
                    continue
                res = measured(srv, servers, run, args)
                out[srv.name]["runs"].append(res)
                print(
                    f"  [{srv.name}] {phase} {i + 1}/{repeat}: {brief(phase, res)}", file=sys.stderr
                )
    finally:
        for srv in starting:
            srv.stop()
            out[srv.name]["log_problems"] = srv.log_problems()
            out[srv.name]["log"] = str(srv.log_path)
    for name in args.servers:
        if "start_error" in out[name]:
            out[name]["summary"] = {"error": out[name]["start_error"]}
        else:
            out[name]["summary"] = summarize(phase, out[name]["runs"], args)
    return out


def brief(phase: str, r: dict[str, Any]) -> str:
    if "error" in r:
        return f"ERROR {r['error']}"
    c = r["cpu"]
    s = f"{c['wall_s']:.2f} s, server cpu {c['server_cpu_s']:.2f} s"
    s += f", peak rss {r['peak_rss_mib']} MiB"
    if phase in ("download", "concurrent"):
        s += f", {r['bytes'] / MiB / c['wall_s']:.0f} MiB/s, exact={r['byte_exact']}"
    elif phase == "export":
        s += f", ttfb {r['ttfb_ms']} ms, {r['rows_per_s']:,} rows/s, rows ok={r['rows_ok']}"
    else:
        s += f", {r['mib_per_s']} MiB/s, sha256 ok={r.get('sha256_ok')}"
    return s + f" (others {c['others_cpu_pct']}%, loadgen core {c['loadgen_core_busy_pct']}%)"


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def fmt(v: Any, spec: str = "") -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    return format(v, spec) if spec else str(v)


def size_label(n: int) -> str:
    return f"{n / GiB:g} GiB" if n >= GiB else f"{n / MiB:g} MiB"


def render_table(results: dict[str, Any], args: argparse.Namespace) -> str:
    names = list(args.servers)
    ratio_col = "sluiceway" in names and "starlette" in names

    def summary(phase: str, name: str) -> dict[str, Any]:
        return results.get(phase, {}).get(name, {}).get("summary", {})

    def mib(phase: str, name: str) -> str:
        s = summary(phase, name)
        return (
            f"{s['peak_rss_mib']:.0f} (+{s['rss_growth_mib']:.0f})" if "peak_rss_mib" in s else "-"
        )

    def check(phase: str, name: str) -> str:
        s = summary(phase, name)
        if "error" in s:
            return f"**FAILED**: {str(s['error'])[:80]}"
        return "ok" if s.get("ok") else "**NOT OK** (see JSON)"

    rows: list[tuple[str, str, Callable[[str, str], str], str | None, bool]] = []
    # (label, phase, cell, key for the ratio, higher is better)
    file_label = size_label(args.file_bytes)
    titles = {
        "download": f"Download {file_label}, 1 client (median of {args.repeat})",
        "concurrent": (
            f"Download {args.clients} clients x {args.rounds} x {size_label(args.small_bytes)}"
            f" (median of {args.repeat})"
        ),
        "export": f"Export {args.rows:,} rows CSV",
        "put": f"Upload {file_label}, PUT raw body",
        "post": f"Upload {file_label}, POST multipart",
    }
    for phase in args.phases:
        t = titles[phase]

        def val(key: str, spec: str = "", phase: str = phase) -> Callable[[str, str], str]:
            return lambda _p, n: fmt(summary(phase, n).get(key), spec)

        if phase in ("download", "concurrent"):
            rows += [
                (f"{t}: MiB/s", phase, val("mib_per_s", ",.0f"), "mib_per_s", True),
                (
                    f"{t}: server CPU s/GiB",
                    phase,
                    val("cpu_s_per_gib", ".2f"),
                    "cpu_s_per_gib",
                    False,
                ),
            ]
        elif phase == "export":
            rows += [
                (f"{t}: rows/s", phase, val("rows_per_s", ",.0f"), "rows_per_s", True),
                (f"{t}: time to first byte, ms", phase, val("ttfb_ms", ",.1f"), "ttfb_ms", False),
                (f"{t}: total s", phase, val("request_s", ".2f"), None, False),
                (f"{t}: server CPU s", phase, val("server_cpu_s", ".2f"), "server_cpu_s", False),
            ]
        else:
            rows += [
                (
                    f"{t}: MiB/s (until the response)",
                    phase,
                    val("mib_per_s", ",.0f"),
                    "mib_per_s",
                    True,
                ),
                (f"{t}: server CPU s", phase, val("server_cpu_s", ".2f"), "server_cpu_s", False),
                (
                    f"{t}: fsync after the response, s",
                    phase,
                    val("fsync_after_s", ".2f"),
                    None,
                    False,
                ),
            ]
        rows += [
            (
                f"{t}: peak RSS MiB (+ over idle)",
                phase,
                lambda p, n: mib(p, n),
                "peak_rss_mib",
                False,
            ),
            (f"{t}: check", phase, check, None, False),
        ]

    header = "| metric | " + " | ".join(names) + " |"
    sep = "|---|" + "---:|" * len(names)
    if ratio_col:
        header += " sluiceway advantage |"
        sep += "---:|"
    lines = [header, sep]
    for label, phase, cell, key, higher in rows:
        line = f"| {label} | " + " | ".join(cell(phase, n) for n in names) + " |"
        if ratio_col:
            ours = summary(phase, "sluiceway").get(key) if key else None
            theirs = summary(phase, "starlette").get(key) if key else None
            if ours and theirs and ours > 0 and theirs > 0:
                r = ours / theirs if higher else theirs / ours
                line += f" {r:.{0 if r >= 100 else 1}f}x {'higher' if higher else 'lower'} |"
            else:
                line += " |"
        lines.append(line)

    notes = []
    for phase in args.phases:
        for name in names:
            s = summary(phase, name)
            if s.get("runs_used", 0) < s.get("runs", 0) - s.get("failed", 0):
                notes.append(
                    f"{name}/{phase}: only {s['runs_used']} of {s['runs']} runs were undisturbed;"
                    " the numbers are from those"
                )
            if s.get("disturbed"):
                notes.append(
                    f"{name}/{phase}: other processes took up to {s['others_cpu_pct']}% of a core"
                    " during a window (numbers disturbed)"
                )
            lg, sv = s.get("loadgen_core_busy_pct", 0), s.get("server_core_busy_pct", 0)
            if lg >= 90 and lg >= sv:
                notes.append(
                    f"{name}/{phase}: load generator core {lg}% busy (server core {sv}%),"
                    " result may be load-generator-bound"
                )
            problems = results.get(phase, {}).get(name, {}).get("log_problems")
            if problems:
                notes.append(f"{name}/{phase}: {len(problems)} error line(s) in the server log")
    if notes:
        lines += ["", "Warnings: " + "; ".join(notes)]
    lines += [
        "",
        "Peak RSS: the server process's VmHWM, reset right before each measured request (in"
        " brackets: growth over its RSS just before). Server CPU: user+system of the server"
        " process (all threads). Upload MiB/s: from the first byte sent until the response;"
        " sluiceway fsyncs before it answers, the peer leaves its bytes to the kernel's"
        " writeback (the fsync row: how long an fsync of the stored file took afterwards)."
        " Advantage: sluiceway/starlette for rates, starlette/sluiceway for costs.",
    ]
    return "\n".join(lines)


def machine_info(args: argparse.Namespace) -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for pkg in (
        "sluiceway",
        "uvicorn",
        "starlette",
        "uvloop",
        "httptools",
        "sqlalchemy",
        "aiosqlite",
        "python-multipart",
    ):
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
        "mem_gib": round(psutil.virtual_memory().total / GiB, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "filesystem": next(
            (
                f"{p.fstype} on {p.device}"
                for p in sorted(psutil.disk_partitions(all=True), key=lambda p: -len(p.mountpoint))
                if str(args.workdir).startswith(p.mountpoint)
            ),
            None,
        ),
        "tcp_rmem": Path("/proc/sys/net/ipv4/tcp_rmem").read_text().split(),
        "tcp_wmem": Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split(),
        "versions": versions,
        "git_commit": commit or None,
    }


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--servers", default=",".join(SERVER_NAMES), help="subset of: sluiceway, starlette"
    )
    p.add_argument("--phases", default=",".join(PHASES), help="subset of: " + ", ".join(PHASES))
    p.add_argument(
        "--file-mib", type=int, default=1024, help="size of the big file (download, uploads)"
    )
    p.add_argument("--small-mib", type=int, default=10, help="file size in the concurrent phase")
    p.add_argument("--clients", type=int, default=32, help="clients in the concurrent phase")
    p.add_argument("--rounds", type=int, default=4, help="downloads per client, concurrent phase")
    p.add_argument("--rows", type=int, default=1_000_000, help="rows in the demo table")
    p.add_argument("--repeat", type=int, default=3, help="runs per server, download phases")
    p.add_argument("--repeat-slow", type=int, default=1, help="runs per server, export and uploads")
    p.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "sluiceway-bench-transfer",
        help="the files (removed afterwards) and the demo database (kept, one per row count)",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=20.0,
        help="before each measured window, wait up to this long for other processes to go idle",
    )
    p.add_argument(
        "--disturbed-retries",
        type=int,
        default=2,
        help=f"measure again (this many times at most) when other processes took >= "
        f"{DISTURBED_PCT:g}%% of a core during a window",
    )
    p.add_argument("--timeout", type=float, default=300.0, help="socket timeout, seconds")
    p.add_argument("--ready-timeout", type=float, default=30.0, help="seconds to wait for /healthz")
    p.add_argument("--server-cpu", type=int, default=0, help="core the servers are pinned to")
    p.add_argument("--loadgen-cpu", type=int, default=1, help="core this process is pinned to")
    p.add_argument("--out", type=Path, default=BENCH_DIR / "results", help="directory for the JSON")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 64 MiB file, 8 clients x 2 x 4 MiB, 20,000 rows, one run each,"
        " no waiting for a quiet machine and no re-runs",
    )
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
        args.file_mib, args.small_mib, args.clients, args.rounds = 64, 4, 8, 2
        args.rows, args.repeat, args.repeat_slow = 20_000, 1, 1
        args.quiet_wait = 0.0
        args.disturbed_retries = 0
    args.file_bytes = args.file_mib * MiB
    args.small_bytes = args.small_mib * MiB
    args.max_upload = 2 * args.file_bytes + GiB
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {args.loadgen_cpu})
    started = time.strftime("%Y%m%d-%H%M%S")
    t0 = time.monotonic()
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.files_dir = Path(tempfile.mkdtemp(prefix="files-", dir=args.workdir))
    log_dir = Path(tempfile.mkdtemp(prefix="transfer-logs-"))
    results: dict[str, Any] = {}
    try:
        args.database = demo_database(args) if "export" in args.phases else Path("unused.db")
        if "export" in args.phases:
            with args.database.open("rb") as f:  # into the page cache, for both servers alike
                while f.read(16 * MiB):
                    pass
        args.big_file = args.files_dir / "big.bin"
        args.small_file = args.files_dir / "small.bin"
        t = time.monotonic()
        args.big_pattern, args.small_pattern = Pattern(), Pattern()
        args.file_sha256 = args.big_pattern.write(args.big_file, args.file_bytes)
        args.small_pattern.write(args.small_file, args.small_bytes)
        os.sync()  # nothing of ours left to write back during a window
        print(f"test files written in {time.monotonic() - t:.1f} s", file=sys.stderr)
        for phase in args.phases:
            print(f"== {phase}", file=sys.stderr, flush=True)
            results[phase] = run_phase(phase, args, log_dir)
    finally:
        shutil.rmtree(args.files_dir, ignore_errors=True)
    total = round(time.monotonic() - t0, 1)
    print(f"server logs in {log_dir}", file=sys.stderr)

    table = render_table(results, args)
    config = {
        k: (str(v) if isinstance(v, Path) else v)
        for k, v in vars(args).items()
        if k not in ("big_file", "small_file", "files_dir", "big_pattern", "small_pattern")
    }
    doc = {
        "benchmark": "transfer",
        "started": started,
        "argv": sys.argv[1:] if argv is None else list(argv),
        "config": config,
        "machine": machine_info(args),
        "results": results,
        "total_wall_s": total,
        "table_markdown": table,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"transfer-{started}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(table)
    print(f"\nresults: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    print(f"total {total} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
