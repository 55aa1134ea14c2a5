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
Processes, CPU accounting, the blocking HTTP client and the results file are the harness's
(``bench/harness/``).

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
import io
import json
import os
import re
import secrets
import shutil
import socket
import sqlite3
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import psutil
from harness import DISTURBED_PCT, HOST, VENV_BIN, GiB, KiB, MiB
from harness.cli import add_out_argument, choices, parser
from harness.cpu import CpuWindow, wait_others_quiet
from harness.http import (
    connect,
    free_port,
    read_head,
    read_until_close,
    request_head,
    split_response,
)
from harness.machine import machine_info, pin_self
from harness.procs import UVLOOP_HTTPTOOLS, Proc, sluiceway_command, uvicorn_command
from harness.report import config_of, fmt, md_table, ratio_cell, save_results, say, timestamp

SERVER_NAMES = ("sluiceway", "starlette")
PHASES = ("download", "concurrent", "export", "put", "post")
#: Versions the JSON records.
PACKAGES = (
    "sluiceway",
    "uvicorn",
    "starlette",
    "uvloop",
    "httptools",
    "sqlalchemy",
    "aiosqlite",
    "python-multipart",
)
#: Bytes received, then compared with the file, at a time when downloading.
RECV_BUFFER = 4 * MiB
#: The receive low-water mark while downloading (see :class:`Download`).
RCVLOWAT = 1 * MiB
ERROR_LINE_RE = re.compile(r"Traceback|\bERROR\b|Exception|\berror\b", re.IGNORECASE)


# --------------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------------


def server_command(name: str, port: int, cpu: int) -> list[str]:
    if name == "sluiceway":
        return sluiceway_command(cpu, port, backlog=False)
    return uvicorn_command(
        cpu,
        "transfer_peers:app",
        port,
        "--log-level",
        "warning",
        *UVLOOP_HTTPTOOLS,
        "--workers",
        "1",
    )


def server_env(name: str, files_dir: Path, database: Path, max_upload: int) -> dict[str, str]:
    """What a server's environment adds: where the files and the demo table are."""
    url = f"sqlite+aiosqlite:///{database}"
    if name != "sluiceway":
        return {"TRANSFER_FILES_DIR": str(files_dir), "TRANSFER_DATABASE_URL": url}
    env = {
        "SLUICEWAY_FILES_DIR": str(files_dir),
        "SLUICEWAY_DATABASE_URL": url,
        "SLUICEWAY_MAX_UPLOAD_BYTES": str(max_upload),
    }
    if "SLUICEWAY_COMPRESSION" not in os.environ:
        env["SLUICEWAY_COMPRESSION"] = "false"
    return env


def server(name: str, args: argparse.Namespace, log_dir: Path, tag: str) -> Proc:
    """Server ``name`` (not started yet). Its CPU is its own process's, every thread (the
    file and hashing workers too)."""
    port = free_port()
    return Proc(
        name,
        server_command(name, port, args.server_cpu),
        log_dir / f"{name}-{tag}-{port}.log",
        port=port,
        env=server_env(name, args.files_dir, args.database, args.max_upload),
        tree=False,
        stop_timeout=10,
    )


def log_problems(srv: Proc) -> list[str]:
    return srv.log_lines(ERROR_LINE_RE)[:20]


# --------------------------------------------------------------------------------------------
# What the client reads: the pattern of a test file, downloads compared with it
# --------------------------------------------------------------------------------------------


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
    say(f"building the demo table ({args.rows:,} rows) in {path} ...")
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
    say(f"  done in {time.monotonic() - started:.1f} s")
    return path


# --------------------------------------------------------------------------------------------
# Measurements: each returns (result, after) where ``after`` runs outside the measured window
# --------------------------------------------------------------------------------------------

Measure = Callable[[Proc], tuple[dict[str, Any], Callable[[], dict[str, Any]]]]


def measure_download(args: argparse.Namespace) -> Measure:
    download = Download(args.big_pattern, RECV_BUFFER)

    def run(srv: Proc) -> tuple[dict[str, Any], Callable[[], dict[str, Any]]]:
        with contextlib.closing(connect(srv.port, args.timeout)) as sock:
            res = download.get(sock, srv.port, f"/files/{args.big_file.name}", args.file_bytes)
        return res, dict

    return run


def measure_concurrent(args: argparse.Namespace) -> Measure:
    path, size = f"/files/{args.small_file.name}", args.small_bytes

    def run(srv: Proc) -> tuple[dict[str, Any], Callable[[], dict[str, Any]]]:
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
    def run(srv: Proc) -> tuple[dict[str, Any], Callable[[], dict[str, Any]]]:
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

    def run(srv: Proc) -> tuple[dict[str, Any], Callable[[], dict[str, Any]]]:
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
    srv: Proc, servers: Sequence[Proc], run: Measure, args: argparse.Namespace
) -> dict[str, Any]:
    """One measured request (or group of them), run again when other processes disturbed it."""
    disturbed: list[dict[str, Any]] = []
    cores = {"server": args.server_cpu, "loadgen": args.loadgen_cpu}
    while True:
        quiet = wait_others_quiet(servers, args.quiet_wait)
        srv.wait_quiet_blocking()
        gc.collect()
        rss_before = srv.status_kib("VmRSS")
        srv.reset_peak_rss()
        gc.disable()
        window = CpuWindow({"server": srv}, others_exclude={os.getpid(), *(s.pid for s in servers)})
        try:
            res, after = run(srv)
        except Exception as exc:
            res, after = {"error": repr(exc)}, dict
        finally:
            cpu = window.stop().by_role(cores, wall_digits=4)
            gc.enable()
        res.update(cpu=cpu, quiet=quiet, rss_before_mib=round(rss_before / KiB, 1))
        if srv.alive():
            peak = srv.status_kib("VmHWM")
            res["peak_rss_mib"] = round(peak / KiB, 1)
            res["rss_growth_mib"] = round((peak - rss_before) / KiB, 1)
        else:
            res["error"] = f"server exited with code {srv.returncode}"
        try:
            res.update(after())  # checks, outside the window
        except Exception as exc:
            res.setdefault("error", f"check failed: {exc!r}")
        if cpu["others_cpu_pct"] < DISTURBED_PCT or len(disturbed) >= args.disturbed_retries:
            if disturbed:
                res["disturbed_attempts"] = disturbed
            return res
        say(
            f"    [{srv.name}] other processes took {cpu['others_cpu_pct']}% of a core,"
            " measuring again"
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
    starting: list[Proc] = []
    servers: list[Proc] = []
    out: dict[str, Any] = {name: {"runs": []} for name in args.servers}
    try:
        for name in args.servers:  # started side by side, then waited for
            srv = server(name, args, log_dir, phase)
            out[name]["cmd"] = srv.cmd
            srv.start()
            starting.append(srv)
        for srv in starting:
            try:
                srv.wait_ready_blocking(args.ready_timeout)
            except Exception as exc:
                out[srv.name]["start_error"] = repr(exc)
                say(f"  [{srv.name}] start failed: {exc!r}")
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
                    say(f"  [{srv.name}] warm-up failed: {exc!r}")
        for i in range(repeat):
            for srv in servers:
                if not srv.alive():
                    continue
                res = measured(srv, servers, run, args)
                out[srv.name]["runs"].append(res)
                say(f"  [{srv.name}] {phase} {i + 1}/{repeat}: {brief(phase, res)}")
    finally:
        for srv in starting:
            srv.stop()
            out[srv.name]["log_problems"] = log_problems(srv)
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

    def advantage(phase: str, key: str | None, higher: bool) -> str:
        if key is None:
            return ""
        ours, theirs = summary(phase, "sluiceway").get(key), summary(phase, "starlette").get(key)
        word = "higher" if higher else "lower"
        return ratio_cell(ours, theirs, higher, word=word, whole_from=100, missing="")

    header = ["metric", *names, *(["sluiceway advantage"] if ratio_col else [])]
    lines = md_table(
        header,
        [
            [
                label,
                *(cell(phase, n) for n in names),
                *([advantage(phase, key, higher)] if ratio_col else []),
            ]
            for label, phase, cell, key, higher in rows
        ],
        right=True,
    )

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


def machine_record(args: argparse.Namespace) -> dict[str, Any]:
    partitions = sorted(psutil.disk_partitions(all=True), key=lambda p: -len(p.mountpoint))
    before = {
        "filesystem": next(
            (
                f"{p.fstype} on {p.device}"
                for p in partitions
                if str(args.workdir).startswith(p.mountpoint)
            ),
            None,
        ),
        "tcp_rmem": Path("/proc/sys/net/ipv4/tcp_rmem").read_text().split(),
        "tcp_wmem": Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split(),
    }
    return machine_info(PACKAGES, before=before)


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = parser(__doc__)
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
    add_out_argument(p)
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 64 MiB file, 8 clients x 2 x 4 MiB, 20,000 rows, one run each,"
        " no waiting for a quiet machine and no re-runs",
    )
    args = p.parse_args(argv)
    args.servers = choices(p, args.servers, SERVER_NAMES, "server")
    args.phases = choices(p, args.phases, PHASES, "phase")
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
    pin_self(args.loadgen_cpu)
    started = timestamp()
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
        say(f"test files written in {time.monotonic() - t:.1f} s")
        for phase in args.phases:
            say(f"== {phase}")
            results[phase] = run_phase(phase, args, log_dir)
    finally:
        shutil.rmtree(args.files_dir, ignore_errors=True)
    say(f"server logs in {log_dir}")
    # Not recorded: what this run made (the files, their patterns).
    made = ("big_file", "small_file", "files_dir", "big_pattern", "small_pattern")
    save_results(
        "transfer",
        started,
        argv,
        config_of(args, skip=made),
        machine_record(args),
        {"results": results, "total_wall_s": round(time.monotonic() - t0, 1)},
        lambda doc: render_table(results, args),
        args.out,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
