"""A private ``redis-server`` on a free loopback port, so test runs never interfere.

Stoppable and restartable with or without persistence, to test what clients get when Redis
goes away.  When ``redis-server`` is not installed, tests that need it are skipped *visibly*
(``-ra`` lists the reason); CI has it.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
from serverproc import HOST, free_port

# The command line and the cluster's creation are the benchmarks' (bench/harness/), not a copy.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from harness.redis_servers import (
    REDIS_SERVER,
    cluster_ok,
    create_cluster,
    parse_cluster_info,
    server_args,
)

__all__ = ["REDIS_SERVER", "RedisCluster", "RedisProcess"]


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
            [REDIS_SERVER, *server_args(self.port, self.dir, persistence=persistence)],
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


class RedisCluster:
    """A private Redis Cluster on loopback ports: ``masters`` masters, each with ``replicas``
    replicas, built with ``redis-cli --cluster create`` (so slots are spread as in production).

    ``fail_master(i)`` kills a master (its replica is promoted by the cluster's own failure
    detection, shortened by ``cluster-node-timeout``); ``restart(node)`` brings a killed node
    back (it rejoins as a replica of its promoted replica).
    """

    NODE_TIMEOUT_MS = 1000

    def __init__(self, *, masters: int = 3, replicas: int = 1) -> None:
        self.nodes = [RedisProcess() for _ in range(masters * (1 + replicas))]
        # Explicit bus ports: the default (port + 10000) may be out of range or taken.
        self.bus_ports = {node.port: free_port() for node in self.nodes}
        self.masters = masters
        self.replicas = replicas

    @property
    def url(self) -> str:
        """A seed node's URL, as a user would give it (``redis+cluster://``)."""
        return f"redis+cluster://{HOST}:{self.nodes[0].port}"

    def _start_node(self, node: RedisProcess) -> None:
        assert REDIS_SERVER is not None
        args = server_args(
            node.port,
            node.dir,
            cluster_port=self.bus_ports[node.port],
            node_timeout_ms=self.NODE_TIMEOUT_MS,
            # A replica may take over however long ago it last heard from its master.
            extra=("--cluster-replica-validity-factor", "0"),
        )
        node.proc = subprocess.Popen(
            [REDIS_SERVER, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                redis.Redis(host=HOST, port=node.port, socket_timeout=1).ping()
                return
            except redis.ConnectionError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server (cluster node) did not start on port {node.port}")

    def start(self) -> RedisCluster:
        try:
            for node in self.nodes:
                self._start_node(node)
            create_cluster([node.port for node in self.nodes], self.replicas)
            self.wait_ok()
            self.wait_replicating()
        except BaseException:
            self.close()  # no node of a cluster that never formed outlives the attempt
            raise
        return self

    def wait_replicating(self, timeout: float = 30.0) -> None:
        """Until every live replica's link to its master is up (before that, a failover has
        nothing to promote)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError):
                links = [
                    node.client().info("replication").get("master_link_status")
                    for node in self.alive()
                ]
                if all(link in (None, "up") for link in links):
                    return
            time.sleep(0.1)
        raise RuntimeError("the Redis Cluster's replicas did not start replicating")

    def info(self, node: RedisProcess) -> dict[str, str]:
        return parse_cluster_info(node.client().execute_command("CLUSTER", "INFO"))

    def alive(self) -> list[RedisProcess]:
        return [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says the cluster is ok with all slots served."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if cluster_ok(self.info(n) for n in self.alive()):
                    return
            except redis.RedisError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the Redis Cluster did not become ok")

    def master_for(self, key: str) -> RedisProcess:
        """The node that serves ``key``'s slot as master (CLUSTER SLOTS: start, end, master…)."""
        client = self.alive()[0].client()
        slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
        for start, end, master, *_replicas in client.execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return self._by_port(master[1])
        raise LookupError(key)

    def _by_port(self, port: int) -> RedisProcess:
        return next(n for n in self.nodes if n.port == int(port))

    def fail_master(self, node: RedisProcess, timeout: float = 30.0) -> None:
        """Kill ``node`` (a master) hard; wait until every live node has a replica serving its
        slots (failure detection takes about ``cluster-node-timeout``)."""
        assert node.proc is not None
        node.proc.kill()
        node.proc.wait(10)
        node.proc = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError):
                masters = {
                    int(master[1])
                    for live in self.alive()
                    for _start, _end, master, *_ in live.client().execute_command(
                        "CLUSTER", "SLOTS"
                    )
                }
                if node.port not in masters:
                    self.wait_ok(max(0.1, deadline - time.monotonic()))
                    return
            time.sleep(0.1)
        raise RuntimeError(f"no replica took over from the master on port {node.port}")

    def restart(self, node: RedisProcess) -> None:
        self._start_node(node)
        self.wait_ok()
        self.wait_replicating()

    def flush(self) -> None:
        for node in self.alive():
            with contextlib.suppress(redis.RedisError):
                node.client().flushall()

    def close(self) -> None:
        for node in self.nodes:
            node.close()
