"""``sluiceway serve --workers N``: N processes on one port, sharing a Redis backend.

Each worker is a full ``sluiceway serve`` bound with ``SO_REUSEPORT``, so the kernel spreads
connections over them; the supervisor forwards SIGTERM/SIGINT, restarts a worker that dies on
its own, and exits 0 once every worker has shut down cleanly.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from types import FrameType

from pydantic import SecretStr

from sluiceway.hub import BackendUnavailable
from sluiceway.server.settings import Settings

logger = logging.getLogger("sluiceway")

#: Set in a worker's environment: bind with SO_REUSEPORT (not a setting users set).
REUSE_PORT_ENV = "_SLUICEWAY_REUSE_PORT"


def check_backend(url: str) -> None:
    """Fail fast, with a message that says where, when Redis cannot be reached."""
    import redis  # only with a Redis backend

    from sluiceway.hub.redis_backend import (
        CLUSTER_SCHEMES,
        cluster_node_refusal,
        cluster_seeds,
        describe_url,
    )

    clients = (
        [
            redis.Redis(host=h, port=p, socket_connect_timeout=3, socket_timeout=3)
            for h, p in cluster_seeds(url)
        ]
        if url.split("://", 1)[0] in CLUSTER_SCHEMES
        else [redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)]
    )
    failure: Exception | None = None
    for client in clients:  # a cluster is reachable when any of its seeds answers
        try:
            client.ping()
            plain = len(clients) == 1 and url.startswith(("redis://", "rediss://"))
            if plain and client.info("cluster").get("cluster_enabled"):
                raise BackendUnavailable(cluster_node_refusal(url))
            return
        except (redis.RedisError, OSError, ValueError) as exc:
            failure = exc
        finally:
            client.close()
    raise BackendUnavailable(f"cannot reach Redis at {describe_url(url)}: {failure}") from None


def reuse_port_socket(host: str, port: int, backlog: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    return sock


def settings_environment(settings: Settings) -> dict[str, str]:
    """The settings as ``SLUICEWAY_*`` variables, so that a worker gets exactly these."""
    env: dict[str, str] = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, list):
            value = json.dumps(value)
        env[f"SLUICEWAY_{name.upper()}"] = str(value)
    return env


def supervise(settings: Settings) -> None:
    if not settings.shared_backend:
        raise ValueError(
            "--workers needs a shared backend (--backend redis://...): with the in-process "
            "backend each worker would have a hub of its own"
        )
    if settings.port == 0:
        raise ValueError("--workers needs a fixed --port (each worker binds the same one)")
    check_backend(settings.backend)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SLUICEWAY_")},
        **settings_environment(settings),
        "SLUICEWAY_WORKERS": "1",
        REUSE_PORT_ENV: "1",
    }
    command = [sys.executable, "-m", "sluiceway.cli", "serve"]
    workers = [subprocess.Popen(command, env=env) for _ in range(settings.workers)]
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logger.info("supervising %d workers on port %d", len(workers), settings.port)
    while not stopping:
        time.sleep(0.2)
        for index, worker in enumerate(workers):
            code = worker.poll()
            if code is not None and not stopping:
                logger.warning("worker %d exited with %s; starting another", worker.pid, code)
                time.sleep(0.5)
                workers[index] = subprocess.Popen(command, env=env)
    deadline = time.monotonic() + settings.shutdown_timeout + 10
    for worker in workers:
        try:
            worker.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.kill()
