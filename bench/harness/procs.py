"""Processes under test: command lines, start, readiness, CPU and memory, stop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import psutil

from harness import BENCH_DIR, HOST, ROOT, VENV_BIN
from harness.http import http_request

#: uvicorn's fast event loop and HTTP parser, as every deployment guide has them.
UVLOOP_HTTPTOOLS = ("--loop", "uvloop", "--http", "httptools")


def pinned(cpu: int) -> list[str]:
    """The ``taskset`` prefix that pins a command to one core."""
    return ["taskset", "-c", str(cpu)]


def sluiceway_command(cpu: int, port: int, *, backlog: bool = True) -> list[str]:
    """``sluiceway serve`` on HOST:port pinned to ``cpu``, warnings only, a 4096 backlog."""
    cmd = [
        *pinned(cpu),
        str(VENV_BIN / "sluiceway"),
        "serve",
        "--host",
        HOST,
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    return [*cmd, "--backlog", "4096"] if backlog else cmd


def uvicorn_command(cpu: int, app: str, port: int, *options: str) -> list[str]:
    """uvicorn serving ``app`` of ``bench/peers`` on HOST:port pinned to ``cpu``, then
    ``options``."""
    return [
        *pinned(cpu),
        str(VENV_BIN / "uvicorn"),
        app,
        "--app-dir",
        str(BENCH_DIR / "peers"),
        "--host",
        HOST,
        "--port",
        str(port),
        *options,
    ]


class Proc:
    """A process under test: start, readiness, CPU and memory, stop.

    Output goes to ``log_path`` (appended to with ``append``; None: stdout discarded, stderr
    left to ours). ``env`` is laid over this process's environment. With ``session`` the
    process leads a session of its own, so that a stop signal reaches any workers it spawns;
    with ``tree`` its children count in its CPU and RSS. ``stop`` waits ``stop_timeout`` s
    for it to exit before it kills it.
    """

    def __init__(
        self,
        name: str,
        cmd: list[str],
        log_path: Path | None,
        *,
        port: int = 0,
        env: Mapping[str, str] | None = None,
        cwd: Path = ROOT,
        append: bool = False,
        session: bool = True,
        tree: bool = True,
        stop_timeout: float = 5.0,
    ) -> None:
        self.name = name
        self.cmd = cmd
        self.log_path = log_path
        self.port = port
        self.env = dict(env or {})
        self.cwd = cwd
        self.append = append
        self.session = session
        self.tree = tree
        self.stop_timeout = stop_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.ps: psutil.Process | None = None
        self.ready_s = float("nan")

    def start(self) -> None:
        env = {**os.environ, **self.env}
        if self.log_path is None:
            self.proc = subprocess.Popen(
                self.cmd,
                cwd=self.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                start_new_session=self.session,
            )
        else:
            with self.log_path.open("ab" if self.append else "wb") as log:
                self.proc = subprocess.Popen(
                    self.cmd,
                    cwd=self.cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=self.session,
                )
        self.ps = psutil.Process(self.proc.pid)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _procs(self) -> list[psutil.Process]:
        if self.ps is None:
            return []
        procs = [self.ps]
        if self.tree:
            with contextlib.suppress(psutil.Error):
                procs += self.ps.children(recursive=True)
        return procs

    def cpu_seconds(self) -> float:
        """User + system CPU seconds so far (every thread; with ``tree``, the children's too)."""
        total = 0.0
        for p in self._procs():
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def rss_bytes(self) -> int:
        total = 0
        for p in self._procs():
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total

    def rss_mib(self) -> float:
        return round(self.rss_bytes() / 2**20, 1)

    def threads(self) -> int:
        n = 0
        for p in self._procs():
            with contextlib.suppress(psutil.Error):
                n += p.num_threads()
        return n

    def status_kib(self, field: str) -> int:
        """A ``kB`` field of /proc/<pid>/status (VmRSS, VmHWM, ...)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)

    def reset_peak_rss(self) -> None:
        """Set the high-water mark (VmHWM) back to the current RSS."""
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")

    async def wait_ready(
        self, limit_s: float, path: str = "/healthz", *, attempt_s: float = 1.0, poll_s: float = 0.1
    ) -> float:
        """Poll ``GET path`` until it answers 200; returns the seconds that took."""
        t0 = time.monotonic()
        last = "no attempt"
        while time.monotonic() - t0 < limit_s:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with code {self.returncode}")
            try:
                status, _ = await http_request(self.port, "GET", path, limit_s=attempt_s)
                if status == 200:
                    return time.monotonic() - t0
                last = f"status {status}"
            except (OSError, TimeoutError, ConnectionError, ValueError) as exc:
                last = repr(exc)
            await asyncio.sleep(poll_s)
        raise TimeoutError(f"{self.name} not ready on {path} after {limit_s}s ({last})")

    def wait_ready_blocking(self, limit_s: float, path: str = "/healthz") -> float:
        """:meth:`wait_ready` for a caller without an event loop."""
        return asyncio.run(self.wait_ready(limit_s, path))

    async def wait_quiet(self, max_s: float = 10.0, window: float = 0.25) -> float:
        """Wait until it burns < 5% CPU over a window; returns seconds waited."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < max_s:
            c0 = self.cpu_seconds()
            await asyncio.sleep(window)
            if self.cpu_seconds() - c0 < 0.05 * window:
                break
        return time.monotonic() - t0

    def wait_quiet_blocking(self, max_s: float = 5.0, window: float = 0.25) -> float:
        """:meth:`wait_quiet` for a caller without an event loop."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < max_s:
            c0 = self.cpu_seconds()
            time.sleep(window)
            if self.cpu_seconds() - c0 < 0.05 * window:
                break
        return time.monotonic() - t0

    def _signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            if self.session:
                os.killpg(self.proc.pid, sig)
            else:
                self.proc.send_signal(sig)

    def stop(self) -> None:
        """SIGTERM; SIGKILL if it is still there after ``stop_timeout`` s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self._signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            # SSE streams keep a graceful shutdown waiting; we are done with it anyway.
            self._signal(signal.SIGKILL)
            self.proc.wait(timeout=5)

    def log_tail(self, n: int = 2000) -> str:
        if self.log_path is None:
            return ""
        try:
            return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def log_lines(self, pattern: re.Pattern[str]) -> list[str]:
        """The lines of the log that ``pattern`` matches."""
        if self.log_path is None:
            return []
        try:
            text = self.log_path.read_text("utf-8", "replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if pattern.search(line)]


def newest_log_tail(log_dir: Path, name: str, n: int = 2000) -> str:
    """Tail of the newest ``<name>-*.log`` in log_dir (the process object is gone if its start
    failed)."""
    logs = sorted(log_dir.glob(f"{name}-*.log"), key=lambda p: p.stat().st_mtime)
    return logs[-1].read_bytes()[-n:].decode("utf-8", "replace") if logs else ""
