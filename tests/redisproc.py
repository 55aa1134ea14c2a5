"""A private ``redis-server`` on a free loopback port, so test runs never interfere.

Stoppable and restartable with or without persistence, to test what clients get when Redis
goes away.  When ``redis-server`` is not installed, tests that need it are skipped *visibly*
(``-ra`` lists the reason); CI has it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import redis
from serverproc import HOST, free_port

REDIS_SERVER = shutil.which("redis-server")


class RedisProcess:
    def __init__(self, *, persistent: bool = False) -> None:
        self.persistent = persistent
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="sluiceway-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> RedisProcess:
        assert REDIS_SERVER is not None
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.persistent
            else ["--appendonly", "no"]
        )
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--bind",
                HOST,
                "--port",
                str(self.port),
                "--save",
                "",
                "--dir",
                str(self.dir),
                *persistence,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                redis.Redis(host=HOST, port=self.port, socket_timeout=1).ping()
                return self
            except redis.ConnectionError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def client(self) -> redis.Redis:
        return redis.Redis(host=HOST, port=self.port, socket_timeout=5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> RedisProcess:
        """Stop and start on the same port; with ``persistent`` the data survives."""
        self.stop()
        return self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
