"""Private ``redis-server``\\s on loopback: one Redis (:class:`RedisServer`) or a Redis Cluster
(:class:`RedisCluster`), no persistence, each node pinned to a core and writing its own log.

The pieces a cluster needs whoever starts its nodes are here too, and the tests' own cluster
(``tests/redisproc.py``) uses them: the command line (:func:`server_args`), ``redis-cli
--cluster create`` (:func:`create_cluster`), ``CLUSTER INFO`` (:func:`parse_cluster_info`,
:func:`cluster_ok`).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import redis

from harness import HOST
from harness.http import free_port
from harness.procs import Proc, pinned

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")
#: The slots of a Redis Cluster.
SLOTS = 16384


def server_args(
    port: int,
    directory: Path,
    *,
    persistence: Sequence[str] = ("--appendonly", "no"),
    cluster_port: int | None = None,
    node_timeout_ms: int | None = None,
    logfile: Path | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """``redis-server``'s options (the executable not included): ``HOST:port``, no RDB
    snapshots, its files in ``directory``; with ``cluster_port`` a cluster node with its bus on
    that port (explicit: the default, port + 10000, may be out of range or taken) and its
    ``nodes.conf`` in ``directory``.

    >>> server_args(7000, Path("/tmp/r"))
    ['--bind', '127.0.0.1', '--port', '7000', '--save', '', '--dir', '/tmp/r', '--appendonly', 'no']
    >>> server_args(7000, Path("/tmp/r"), cluster_port=17001, node_timeout_ms=1000)[10:]
    ... # doctest: +NORMALIZE_WHITESPACE
    ['--cluster-enabled', 'yes', '--cluster-config-file', '/tmp/r/nodes.conf',
     '--cluster-port', '17001', '--cluster-node-timeout', '1000']
    """
    args = ["--bind", HOST, "--port", str(port), "--save", "", "--dir", str(directory)]
    args += persistence
    if cluster_port is not None:
        args += [
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(directory / "nodes.conf"),
            "--cluster-port", str(cluster_port),
        ]  # fmt: skip
        if node_timeout_ms is not None:
            args += ["--cluster-node-timeout", str(node_timeout_ms)]
    if logfile is not None:
        args += ["--logfile", str(logfile)]
    return [*args, *extra]


def create_cluster(ports: Sequence[int], replicas: int) -> None:
    """``redis-cli --cluster create`` over the nodes on ``HOST:ports`` with ``replicas`` replicas
    per master (so slots are spread as in production); its output in the error if it fails."""
    cli = REDIS_CLI or "redis-cli"
    addresses = [f"{HOST}:{port}" for port in ports]
    cmd = [cli, "--cluster", "create", *addresses, "--cluster-replicas", str(replicas)]
    done = subprocess.run(
        [*cmd, "--cluster-yes"], capture_output=True, text=True, errors="replace", check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"redis-cli --cluster create failed ({done.returncode}): "
            f"{(done.stdout + done.stderr)[-2000:]}"
        )


def parse_cluster_info(raw: bytes | str) -> dict[str, str]:
    """``CLUSTER INFO``'s answer as a dict of strings.

    >>> parse_cluster_info(b"cluster_state:ok\\r\\ncluster_slots_ok:16384\\r\\n")
    {'cluster_state': 'ok', 'cluster_slots_ok': '16384'}
    """
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def cluster_ok(infos: Iterable[Mapping[str, str]]) -> bool:
    """Every node says the cluster is ok with all slots served.

    >>> cluster_ok([{"cluster_state": "ok", "cluster_slots_ok": "16384"}])
    True
    >>> cluster_ok([{"cluster_state": "fail", "cluster_slots_ok": "10923"}])
    False
    """
    return all(
        i.get("cluster_state") == "ok" and i.get("cluster_slots_ok") == str(SLOTS) for i in infos
    )


def counter_deltas(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, float]:
    """``after - before`` of every numeric field that changed (counters of INFO / CLUSTER INFO).

    >>> counter_deltas({"a": "1", "b": 2, "s": "ok"}, {"a": "4", "b": 2, "s": "ok", "c": 1})
    {'a': 3.0, 'c': 1.0}
    """
    out: dict[str, float] = {}
    for key, value in after.items():
        try:
            delta = float(value) - float(before.get(key, 0))
        except (TypeError, ValueError):
            continue
        if delta:
            out[key] = delta
    return out


class RedisServer:
    """A private redis-server on a free loopback port, no persistence, pinned to one core;
    with ``cluster_port`` a cluster node (see :class:`RedisCluster`)."""

    def __init__(
        self,
        cpu: int,
        log_dir: Path,
        *,
        name: str = "redis-server",
        cluster_port: int | None = None,
        node_timeout_ms: int | None = None,
    ) -> None:
        if REDIS_SERVER is None:
            raise RuntimeError("redis-server is not installed")
        port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="sluiceway-bench-redis-"))
        self.log_path = log_dir / f"{name}-{port}.log"
        self.cluster_port = cluster_port
        args = server_args(
            port,
            self.dir,
            cluster_port=cluster_port,
            node_timeout_ms=node_timeout_ms,
            logfile=self.log_path,
        )
        # It writes its own log; a plain child (not a session of its own), its CPU alone.
        cmd = [*pinned(cpu), REDIS_SERVER, *args]
        self.proc = Proc(name, cmd, None, port=port, session=False, tree=False)
        self.client: redis.Redis | None = None
        self.version = ""

    @property
    def port(self) -> int:
        return self.proc.port

    @property
    def cmd(self) -> list[str]:
        return self.proc.cmd

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> None:
        self.proc.start()
        deadline = time.monotonic() + 10
        while True:
            try:
                client = redis.Redis(host=HOST, port=self.port, socket_timeout=5)
                client.ping()
                self.client = client
                self.version = str(client.info("server").get("redis_version", ""))
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline or not self.proc.alive():
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.05)

    def alive(self) -> bool:
        return self.proc.alive()

    def cpu_seconds(self) -> float:
        return self.proc.cpu_seconds()

    def commandstats(self) -> dict[str, dict[str, float]]:
        """``INFO commandstats``, keyed by command (``cmdstat_`` left off)."""
        assert self.client is not None
        raw = self.client.info("commandstats")
        return {k.removeprefix("cmdstat_"): v for k, v in raw.items()}

    def log_tail(self, n: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text("utf-8", "replace")[-n:]
        return ""

    def stop(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.close()
        self.proc.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisCluster:
    """A private Redis Cluster on loopback: ``masters`` masters with ``replicas`` replicas each,
    every node a :class:`RedisServer` pinned to ``cpu`` (all of them on one core: the same
    server-side CPU budget as one Redis), built with ``redis-cli --cluster create``.

    ``node_timeout_ms`` is ``cluster-node-timeout`` (None: Redis's default, 15 s; the
    benchmarks fail nothing over, and a longer timeout means less gossip on the bus).
    """

    def __init__(
        self,
        cpu: int,
        log_dir: Path,
        *,
        masters: int = 3,
        replicas: int = 1,
        node_timeout_ms: int | None = None,
    ) -> None:
        self.masters = masters
        self.replicas = replicas
        self.nodes = [
            RedisServer(
                cpu,
                log_dir,
                name="redis-node",
                cluster_port=free_port(),
                node_timeout_ms=node_timeout_ms,
            )
            for _ in range(masters * (1 + replicas))
        ]
        self.version = ""

    @property
    def url(self) -> str:
        """``redis+cluster://`` with every node as a seed."""
        return "redis+cluster://" + ",".join(f"{HOST}:{n.port}" for n in self.nodes)

    @property
    def cmd(self) -> list[str]:
        """The first node's command line (the others differ in ports and paths)."""
        return self.nodes[0].cmd

    @property
    def bus_ports(self) -> dict[int, int]:
        return {n.port: n.cluster_port or 0 for n in self.nodes}

    def start(self) -> RedisCluster:
        for node in self.nodes:
            node.start()
        self.version = self.nodes[0].version
        create_cluster([n.port for n in self.nodes], self.replicas)
        self.wait_ok()
        self.wait_replicating()
        return self

    def client(self, node: RedisServer) -> redis.Redis:
        assert node.client is not None
        return node.client

    def info(self, node: RedisServer) -> dict[str, str]:
        return parse_cluster_info(self.client(node).execute_command("CLUSTER", "INFO"))

    def wait_ok(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError):
                if cluster_ok(self.info(n) for n in self.nodes):
                    return
            time.sleep(0.1)
        raise RuntimeError("the Redis Cluster did not become ok")

    def wait_replicating(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError):
                links = [
                    self.client(n).info("replication").get("master_link_status") for n in self.nodes
                ]
                if all(link in (None, "up") for link in links):
                    return
            time.sleep(0.1)
        raise RuntimeError("the Redis Cluster's replicas did not start replicating")

    def topology(self) -> dict[int, dict[str, Any]]:
        """Each node's role, by port: ``{"role": "master", "slots": [(start, end), ...]}`` or
        ``{"role": "replica", "master": port}``: each node's own ``ROLE`` (another node's
        ``CLUSTER SLOTS`` lists a replica only once gossip has told it), the masters' slots from
        ``CLUSTER SLOTS``."""
        found: dict[int, dict[str, Any]] = {}
        for node in self.alive():
            role = self.client(node).execute_command("ROLE")
            kind = role[0].decode() if isinstance(role[0], bytes) else str(role[0])
            if kind == "master":
                found[node.port] = {"role": "master", "slots": []}
            else:
                found[node.port] = {"role": "replica", "master": int(role[2])}
        for start, end, master, *_replicas in self.client(self.alive()[0]).execute_command(
            "CLUSTER", "SLOTS"
        ):
            entry = found.setdefault(int(master[1]), {"role": "master", "slots": []})
            entry.setdefault("slots", []).append((int(start), int(end)))
        return found

    def key_slot(self, key: str) -> int:
        return int(self.client(self.nodes[0]).execute_command("CLUSTER", "KEYSLOT", key))

    def master_for(self, key: str) -> RedisServer:
        """The node that serves ``key``'s slot as master."""
        slot = self.key_slot(key)
        for port, entry in self.topology().items():
            if any(a <= slot <= b for a, b in entry.get("slots", [])):
                return next(n for n in self.nodes if n.port == port)
        raise LookupError(key)

    def alive(self) -> list[RedisServer]:
        return [n for n in self.nodes if n.alive()]

    def cpu_seconds(self) -> float:
        """Every node's CPU together."""
        return sum(n.cpu_seconds() for n in self.nodes)

    def flush(self) -> None:
        """FLUSHALL on every master (the replicas follow)."""
        for port, entry in self.topology().items():
            if entry["role"] == "master":
                node = next(n for n in self.nodes if n.port == port)
                self.client(node).flushall()

    def log_tail(self, n: int = 1500) -> str:
        return "\n".join(f"--- node {node.port}\n{node.log_tail(n)}" for node in self.nodes)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
