"""Fan-out through Redis and a Redis Cluster side by side with the in-process backend.

Four setups, one run, same workload, one markdown table (full results in
``bench/results/redis_fanout-<time>.json``):

* ``memory``     one ``sluiceway serve`` (in-process backend), all subscribers on it;
* ``redis-1``    one ``sluiceway serve --backend redis://...``, all subscribers on it;
* ``redis-2``    two ``sluiceway serve --backend redis://...`` (A and B), half the subscribers
                 on each; events are published through A (``--publish-via alternate``: lane k
                 publishes through A when k is even, B when odd);
* ``cluster-2``  the same two processes with ``--backend redis+cluster://...`` on a private
                 Redis Cluster (3 masters, ``--cluster-replicas`` replicas each; every node on
                 the Redis core): live fan-out with ``SPUBLISH``/``SSUBSCRIBE``.

``redis-1`` against ``memory`` is the cost of Redis (one Lua script per publish, the pub/sub
notification back, the mirror); ``redis-2`` against ``redis-1`` is the cost of splitting the
subscribers over two processes on the same CPU budget; ``cluster-2`` against ``redis-2`` is the
cost of the cluster (the cluster client, sharded pub/sub, the replicas) on that budget.

Phases (fresh servers each; one private ``redis-server`` for the Redis setups and one private
cluster for ``cluster-2``, never both at once; FLUSHALL between phases):

* ``throughput``  N subscribers (default 1,000), E events (2,000) published as fast as they are
                  accepted, 8 keep-alive publishers with one POST in flight each (as
                  ``fanout.py``); deliveries/s; Redis ``INFO commandstats`` read before and
                  after, divided by the events published (on a cluster: the masters' sum).
* ``small``       the same with 100 subscribers: Redis commands per publish must not grow with
                  the number of subscribers.
* ``latency``     N subscribers, 20 events/s for 10 s on an absolute schedule;
                  publish-to-receive p50/p99/max (and per process for two processes).
* ``pubsub``      (clusters only, no servers) M messages (1,000) with classic ``PUBLISH`` and
                  M with ``SPUBLISH`` to one channel, straight from redis-py through the master
                  of its slot: the cluster-bus messages each node sends and receives per
                  message (``CLUSTER INFO``), the contrast to what Sluiceway does.

In every phase through Redis, each node's ``CLUSTER INFO`` (bus messages by type, among them
``publish`` and ``publishshard``), ``INFO stats`` (``pubsub_channels``,
``pubsubshard_channels``) and ``INFO commandstats`` are read before and after the window, and
the differences divided by the events published: pub/sub messages executed and received per
publish per node, by the node's place (the topic's master, its replica, the other masters,
their replicas), and the subscriptions to the topic's channel on each node after the window.

Every delivery is checked for loss, duplicates and per-publisher order (the harness's
``check_delivery``, as in ``fanout.py``);
``sluiceway_backend_refills_total`` is read from each process's ``/metrics`` before and after
each measured window, and each server's log is scanned for warnings and errors.  The table also
says how many streams the server answered through its ASGI route instead of the native stream
path (with Redis, a subscriber that arrives while its topic's mirror is still loading takes the
ASGI route for the life of its stream; ``--warm-mirror`` loads the mirror with one subscriber
per process before the burst), how many events each subscriber read carried on average, and
the POST round trip seen by the publishers.

    uv run python bench/redis_fanout.py --help
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import re
import tempfile
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvloop
from harness import DISTURBED_PCT
from harness.cli import add_out_argument, choices, parser
from harness.cpu import CpuWindow, wait_machine_quiet
from harness.http import http_request
from harness.machine import package_versions, pin_self, raise_nofile
from harness.procs import Proc, sluiceway_command
from harness.redis_servers import RedisCluster, RedisServer, counter_deltas
from harness.report import (
    config_of,
    fmt,
    latency_summary,
    md_table,
    percentile,
    ratio_cell,
    save_results,
    say,
    timestamp,
)
from harness.runner import (
    delivery_status,
    fanout_machine_info,
    publish_rate_cell,
    server_proc,
    timed_phase,
    wait_delivery,
)
from harness.sse import (
    PublishStats,
    Sink,
    Subscriber,
    check_delivery,
    close_subscribers,
    finish_publish,
    open_subscribers,
    publish,
    publish_report,
)

from sluiceway.hub.redis_backend import channel_of

SETUPS = ("memory", "redis-1", "redis-2", "cluster-2")
SETUP_TITLES = {
    "memory": "in-process, 1 proc",
    "redis-1": "Redis, 1 proc",
    "redis-2": "Redis, 2 procs",
    "cluster-2": "Redis Cluster, 2 procs",
}
#: Setups with two server processes, and those on the cluster.
TWO_PROCS = ("redis-2", "cluster-2")
CLUSTER_SETUPS = ("cluster-2",)
PHASE_NAMES = ("throughput", "small", "latency", "pubsub")
#: Phases with servers and subscribers (``pubsub`` talks to the cluster alone).
FANOUT_PHASES = ("throughput", "small", "latency")
#: Our own readings, left out of the commands per publish.
OUR_COMMANDS = ("info", "cluster|info")
#: A Redis node's place for a topic, in the order the table shows them, and its label.
NODE_KINDS = {
    "single": "the Redis",
    "owner": "topic's master",
    "owner-replica": "its replica",
    "other-master": "other masters",
    "other-replica": "their replicas",
}
#: Versions the JSON records (those of ``fanout.py``; redis-py and redis-server are added).
PACKAGES = ("sluiceway", "uvicorn", "starlette", "sse-starlette", "uvloop", "httptools")
METRIC_RE = re.compile(rb"^(sluiceway_[a-z_]+)(?:\{[^}]*\})? ([0-9.e+-]+)$", re.MULTILINE)
LOG_PROBLEM_RE = re.compile(r"^(WARNING|ERROR|CRITICAL)|Traceback", re.MULTILINE)


# --------------------------------------------------------------------------------------------
# Which path served each stream
# --------------------------------------------------------------------------------------------

#: The native stream path writes its own head, content-type first; the ASGI route's head comes
#: from uvicorn, which puts ``date``/``server`` first.  (Tied to the current implementation.)
NATIVE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type:"


class PathRecordingSubscriber(Subscriber):
    """The harness's SSE subscriber that also notes whether the server's native stream path
    answered (a subscriber that arrives while its topic's mirror is still loading goes through
    the ASGI route instead, for the whole life of its stream)."""

    __slots__ = ("native_path",)

    def _on_head(self, head: bytes) -> bool:
        self.native_path = head[: len(NATIVE_HEAD)].lower() == NATIVE_HEAD.lower()
        return super()._on_head(head)


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


def sluiceway_proc(cpu: int, log_dir: Path, backend: str | None) -> Proc:
    """``sluiceway serve`` (not started yet), with ``--backend`` when given one."""
    more = [] if backend is None else ["--backend", backend]
    return server_proc(
        "sluiceway", lambda _, port, cpu: [*sluiceway_command(cpu, port), *more], cpu, log_dir
    )


async def read_metrics(port: int) -> dict[str, float]:
    try:
        status, body = await http_request(port, "GET", "/metrics", limit_s=5.0)
    except (OSError, TimeoutError, ConnectionError, ValueError) as exc:
        return {"error": repr(exc)}  # type: ignore[dict-item]
    if status != 200:
        return {"error": f"status {status}"}  # type: ignore[dict-item]
    return {m.group(1).decode(): float(m.group(2)) for m in METRIC_RE.finditer(body)}


def log_problems(srv: Proc) -> dict[str, Any]:
    lines = srv.log_lines(LOG_PROBLEM_RE)
    return {"count": len(lines), "samples": sorted(set(lines))[:8]}


# --------------------------------------------------------------------------------------------
# A window disturbed by other processes
# --------------------------------------------------------------------------------------------


def disturbance(res: dict[str, Any]) -> float:
    """Largest share of a benchmark core that went to other processes in the window: busy
    minus our pinned processes minus softirq (on this machine, a loaded fan-out leaves 10-20%
    softirq on a core that is charged to no process; other processes show up far above it)."""
    cores = (res.get("cpu") or {}).get("cores", {})
    return max((c.get("other_minus_softirq_pct", 0.0) for c in cores.values()), default=0.0)


# --------------------------------------------------------------------------------------------
# Publishing (the harness's publisher: lane k through ``ports[k % len(ports)]``)
# --------------------------------------------------------------------------------------------


async def warm_up(ports: Sequence[int], lanes: int) -> None:
    """A few publishes to a throw-away topic through each publishing process, outside the
    measured window, so Redis has the script cached and redis-py's pool is at its working size
    (each new pool connection costs a CLIENT SETINFO pair, once)."""
    stats, stop = PublishStats(), asyncio.Event()
    await publish(ports, f"warmup-{time.monotonic_ns()}", 4 * lanes, lanes, None, stats, stop)
    if stats.errors:
        raise RuntimeError(f"warm-up publishes failed: {stats.errors[:3]}")


# --------------------------------------------------------------------------------------------
# One measured phase
# --------------------------------------------------------------------------------------------


@dataclass
class Node:
    """One server process of a setup and its subscribers."""

    label: str  # "A" or "B"
    srv: Proc
    subscribers: int
    sink: Sink | None = None
    subs: list[Subscriber] = field(default_factory=list)


def command_deltas(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]], events: int
) -> dict[str, Any]:
    calls: dict[str, int] = {}
    failed: dict[str, int] = {}
    usec: dict[str, float] = {}
    for cmd, a in after.items():
        b = before.get(cmd, {})
        n = int(a.get("calls", 0) - b.get("calls", 0))
        if n:
            calls[cmd] = n
            usec[cmd] = a.get("usec", 0) - b.get("usec", 0)
        f = int(a.get("failed_calls", 0) - b.get("failed_calls", 0))
        f += int(a.get("rejected_calls", 0) - b.get("rejected_calls", 0))
        if f:
            failed[cmd] = f
    total = sum(calls.values())
    per = {c: round(n / events, 4) for c, n in sorted(calls.items(), key=lambda x: (-x[1], x[0]))}
    return {
        "events": events,
        "calls": calls,
        "calls_total": total,
        "per_publish": per,
        "per_publish_total": round(total / events, 3) if events else None,
        # The readings taken before the window are counted in the "after" one (INFO, and
        # CLUSTER INFO on a cluster): left out here.
        "per_publish_total_without_our_info": round(
            (total - sum(calls.get(c, 0) for c in OUR_COMMANDS)) / events, 3
        )
        if events
        else None,
        "failed_or_rejected": failed,
        "evalsha_usec_per_call": round(usec["evalsha"] / calls["evalsha"], 2)
        if calls.get("evalsha")
        else None,
    }


# --------------------------------------------------------------------------------------------
# What each Redis node did in a window
# --------------------------------------------------------------------------------------------

Backend = RedisServer | RedisCluster


def backend_nodes(rds: Backend) -> list[RedisServer]:
    return list(rds.nodes) if isinstance(rds, RedisCluster) else [rds]


def flush(rds: Backend) -> None:
    if isinstance(rds, RedisCluster):
        rds.flush()
    else:
        assert rds.client is not None
        rds.client.flushall()


def snapshot(rds: Backend) -> dict[int, dict[str, Any]]:
    """Each node's counters, by port: ``INFO commandstats``, ``INFO stats`` and, on a cluster,
    ``CLUSTER INFO`` (its bus messages by type)."""
    out: dict[int, dict[str, Any]] = {}
    for node in backend_nodes(rds):
        assert node.client is not None
        entry: dict[str, Any] = {}
        if isinstance(rds, RedisCluster):
            entry["cluster"] = rds.info(node)
        entry["stats"] = node.client.info("stats")
        entry["commandstats"] = node.commandstats()
        out[node.port] = entry
    return out


def node_kinds(rds: Backend, channel: str) -> dict[int, str]:
    """Each node's place for ``channel`` (see NODE_KINDS), by port."""
    if not isinstance(rds, RedisCluster):
        return {rds.port: "single"}
    owner = rds.master_for(channel).port
    kinds = {}
    for port, entry in rds.topology().items():
        if entry["role"] == "master":
            kinds[port] = "owner" if port == owner else "other-master"
        else:
            kinds[port] = "owner-replica" if entry.get("master") == owner else "other-replica"
    return kinds


def merged_commandstats(
    snap: dict[int, dict[str, Any]], ports: Sequence[int]
) -> dict[str, dict[str, float]]:
    """The nodes' ``INFO commandstats`` summed, command by command."""
    merged: dict[str, dict[str, float]] = {}
    for port in ports:
        for cmd, fields in snap[port]["commandstats"].items():
            into = merged.setdefault(cmd, {})
            for k, v in fields.items():
                if isinstance(v, int | float):
                    into[k] = into.get(k, 0) + v
    return merged


def subscriptions(rds: Backend, node: RedisServer, channel: str) -> int:
    """Connections subscribed to ``channel`` on ``node`` (``PUBSUB SHARDNUMSUB`` on a cluster,
    ``PUBSUB NUMSUB`` on one Redis)."""
    assert node.client is not None
    sub = "SHARDNUMSUB" if isinstance(rds, RedisCluster) else "NUMSUB"
    try:
        answer = node.client.execute_command("PUBSUB", sub, channel)
    except Exception:  # a node that refuses: -1 in the JSON
        return -1
    return int(answer[1]) if len(answer) > 1 else 0


def per_node(
    rds: Backend,
    channel: str,
    before: dict[int, dict[str, Any]],
    after: dict[int, dict[str, Any]],
    messages: int,
) -> list[dict[str, Any]]:
    """What each node did per message in the window, in NODE_KINDS order: pub/sub commands it
    executed (``PUBLISH``, ``SPUBLISH``; a script's count), cluster-bus messages of those kinds
    it received and sent, every bus message (gossip included), its commands, and (read after
    the window) the channels subscribed on it and the subscriptions to ``channel``."""
    kinds = node_kinds(rds, channel)
    order = list(NODE_KINDS)
    rows = []
    for node in sorted(backend_nodes(rds), key=lambda n: (order.index(kinds[n.port]), n.port)):
        b, a = before[node.port], after[node.port]
        cmds = command_deltas(b["commandstats"], a["commandstats"], messages)
        bus = counter_deltas(b.get("cluster", {}), a.get("cluster", {}))

        def per(n: float) -> float:
            return round(n / messages, 4) if messages else 0.0

        row: dict[str, Any] = {
            "port": node.port,
            "kind": kinds[node.port],
            "executed": {
                c: per(cmds["calls"].get(c, 0)) for c in ("publish", "spublish", "evalsha")
            },
            "bus_received": {
                k: per(bus.get(f"cluster_stats_messages_{k}_received", 0))
                for k in ("publish", "publishshard")
            },
            "bus_sent": {
                k: per(bus.get(f"cluster_stats_messages_{k}_sent", 0))
                for k in ("publish", "publishshard")
            },
            "bus_all_received": per(bus.get("cluster_stats_messages_received", 0)),
            "bus_deltas": {k: int(v) for k, v in bus.items() if k.startswith("cluster_stats")},
            "commands_per_publish": cmds["per_publish"],
            "commands_per_publish_total": cmds["per_publish_total_without_our_info"],
            "pubsub_channels": a["stats"].get("pubsub_channels"),
            # ``pubsubshard_channels`` in Redis 7.0's INFO stats.
            "pubsub_shardchannels": a["stats"].get(
                "pubsubshard_channels", a["stats"].get("pubsub_shardchannels")
            ),
        }
        row["pubsub_received"] = round(sum(row["bus_received"].values()), 4)
        row["subscriptions_to_topic"] = subscriptions(rds, node, channel)
        rows.append(row)
    return rows


def masters_of(rds: Backend) -> list[int]:
    if not isinstance(rds, RedisCluster):
        return [rds.port]
    return [port for port, e in rds.topology().items() if e["role"] == "master"]


def pubsub_contrast(cluster: RedisCluster, messages: int) -> dict[str, Any]:
    """Classic ``PUBLISH`` against ``SPUBLISH``: ``messages`` of each to one channel, straight
    from redis-py through the master of the channel's slot (no Sluiceway, no subscriber), and
    what every node sent and received on the cluster bus per message."""
    channel = channel_of(f"pubsub-{time.monotonic_ns()}")
    entry = cluster.master_for(channel)
    client = cluster.client(entry)
    out: dict[str, Any] = {"messages": messages, "channel": channel, "entry_port": entry.port}
    for command in ("PUBLISH", "SPUBLISH"):
        before = snapshot(cluster)
        t0 = time.monotonic()
        for first in range(0, messages, 100):
            pipe = client.pipeline(transaction=False)
            for i in range(first, min(messages, first + 100)):
                pipe.execute_command(command, channel, str(i))
            pipe.execute()
        sent_s = time.monotonic() - t0
        time.sleep(1.0)  # the bus is asynchronous: let every node read what was sent
        after = snapshot(cluster)
        out[command.lower()] = {
            "sent_s": round(sent_s, 3),
            "nodes": per_node(cluster, channel, before, after, messages),
        }
    return out


# --------------------------------------------------------------------------------------------
# One measured phase
# --------------------------------------------------------------------------------------------


async def run_phase(
    setup: str,
    phase: str,
    args: argparse.Namespace,
    rds: Backend | None,
    log_dir: Path,
) -> dict[str, Any]:
    n_subs = args.small_subscribers if phase == "small" else args.subscribers
    rate = args.latency_rate if phase == "latency" else None
    events = round(args.latency_rate * args.latency_duration) if rate else args.events
    backend = rds.url if rds is not None else None
    if rds is not None:
        flush(rds)
    nproc = 2 if setup in TWO_PROCS else 1
    cpus = [args.cpu_a, args.cpu_b][:nproc]
    counts = [n_subs - n_subs // 2, n_subs // 2] if nproc == 2 else [n_subs]
    procs: list[Node] = []
    try:
        for label, cpu, cnt in zip("AB", cpus, counts, strict=False):
            srv = sluiceway_proc(cpu, log_dir, backend)
            srv.start()
            procs.append(Node(label, srv, cnt))
        for p in procs:
            p.srv.ready_s = await p.srv.wait_ready(args.ready_timeout)
        return await measure(setup, phase, args, rds, procs, events, rate)
    finally:
        for p in procs:
            await close_subscribers(p.subs)
        for p in procs:
            p.srv.stop()


async def measure(
    setup: str,
    phase: str,
    args: argparse.Namespace,
    rds: Backend | None,
    procs: list[Node],
    events: int,
    rate: float | None,
) -> dict[str, Any]:
    topic = f"{phase}-{time.monotonic_ns()}"
    via = [p.srv.port for p in procs] if args.publish_via == "alternate" else [procs[0].srv.port]
    await warm_up(via, args.window)

    if args.warm_mirror and rds is not None:
        # One subscriber per process first, so the topic's mirror is loaded before the burst
        # (it stays loaded: a mirror is dropped only after 30 s without subscribers).
        for p in procs:
            probe, errors, _ = await open_subscribers(
                p.srv.port, topic, 1, 1, Sink("idle"), args.timeout
            )
            await close_subscribers(probe)
            if errors:
                raise RuntimeError(f"warming the mirror on {p.label} failed: {errors[:1]}")

    # Subscribe (both processes at once), then let everything settle.
    async def open_on(p: Node) -> tuple[list[str], float]:
        p.sink = Sink("lazy", expected=events)
        p.subs, errors, accept_s = await open_subscribers(
            p.srv.port,
            topic,
            p.subscribers,
            args.connect_concurrency,
            p.sink,
            args.timeout,
            cls=PathRecordingSubscriber,
        )
        return errors, accept_s

    opened = await asyncio.gather(*(open_on(p) for p in procs))
    info: dict[str, Any] = {
        "subscribers": {p.label: len(p.subs) for p in procs},
        "subscribe_errors": sum(len(e) for e, _ in opened),
        "subscribe_error_samples": sorted({x for e, _ in opened for x in e})[:5],
        "subscribe_s": {p.label: round(s, 3) for p, (_, s) in zip(procs, opened, strict=True)},
        "streams_on_asgi_path": {
            p.label: sum(1 for s in p.subs if not getattr(s, "native_path", True)) for p in procs
        },
        "publish_via": [p.label for p in procs][: len(via)],
    }
    await asyncio.sleep(args.settle)
    for p in procs:
        await p.srv.wait_quiet(max_s=5)
    cores = sorted({args.cpu_a, args.cpu_b, args.redis_cpu, args.loadgen_cpu})
    info["machine_before"] = await wait_machine_quiet(cores, args.quiet_wait)

    metrics_before = {p.label: await read_metrics(p.srv.port) for p in procs}
    stats_before = snapshot(rds) if rds is not None else None
    watched: dict[str, Any] = {f"server {p.label}": p.srv for p in procs}
    pinned_to = {f"server {p.label}": args.cpu_a if p.label == "A" else args.cpu_b for p in procs}
    if rds is not None:
        watched["redis-server"] = rds
        pinned_to["redis-server"] = args.redis_cpu

    gc.collect()
    gc.disable()  # no collector pauses in the load generator inside the window
    try:
        stop = asyncio.Event()
        pub_stats = PublishStats()
        post_ns: array[int] = array("q")
        window = CpuWindow(watched)
        pub = asyncio.create_task(
            publish(via, topic, events, args.window, rate, pub_stats, stop, post_ns)
        )
        deadline = args.timeout + (events / rate if rate else 0)
        sinks = [p.sink for p in procs if p.sink]
        outcome = await wait_delivery(sinks, pub, deadline, args.stall)
        info["cpu"] = window.stop().by_process(pinned_to, args.loadgen_cpu)
    finally:
        gc.enable()
    stats_after = snapshot(rds) if rds is not None else None
    await finish_publish(pub, pub_stats, stop)
    await asyncio.sleep(0.3)  # stragglers (duplicates, late blocks) before checking
    metrics_after = {p.label: await read_metrics(p.srv.port) for p in procs}

    # Checks and numbers, outside the window.
    samples_by: dict[str, array[int]] = {}
    for p in procs:
        samples = array("q")
        for sub in p.subs:
            sub.replay(samples if rate else None)
        samples_by[p.label] = samples
    all_subs = [s for p in procs for s in p.subs]
    check = check_delivery(all_subs, events, args.window)
    # Coalescing: how many events each read carried on average (one read ~ one server write
    # when the load generator keeps up), per process.
    coalescing = {}
    for p in procs:
        reads = sum(len(s.read_ns) for s in p.subs)
        got = sum(len(s.seqs) for s in p.subs)
        coalescing[p.label] = {
            "reads": reads,
            "deliveries": got,
            "events_per_read": round(got / reads, 2) if reads else None,
        }
    post = sorted(post_ns)
    expected_subs = sum(p.subscribers for p in procs)
    timed_out = outcome != "done"
    ok = not timed_out and check["ok"] and not pub_stats.errors and len(all_subs) == expected_subs
    res: dict[str, Any] = {
        "ok": ok,
        "outcome": outcome,
        "timed_out": timed_out,
        **info,
        "events": events,
        "window": args.window,
        "publish": publish_report(pub_stats, events),
        "post_round_trip_ms": {
            "p50": round(percentile(post, 0.5) / 1e6, 2),
            "p99": round(percentile(post, 0.99) / 1e6, 2),
            "max": round(post[-1] / 1e6, 2) if post else None,
        },
        "coalescing": coalescing,
        "check": check,
    }
    if rate is None:
        complete = not timed_out and all(
            p.sink is not None and p.sink.done_count == len(p.subs) == p.subscribers for p in procs
        )
        last = max((p.sink.last_done_ns for p in procs if p.sink), default=0)
        elapsed = (last - pub_stats.first_ns) / 1e9 if complete else None
        res["deliveries_received"] = sum(len(s.seqs) for s in all_subs)
        res["elapsed_s"] = round(elapsed, 3) if elapsed else None
        res["deliveries_per_s"] = round(len(all_subs) * events / elapsed) if elapsed else None
        res["elapsed_by_process_s"] = {
            p.label: round((p.sink.last_done_ns - pub_stats.first_ns) / 1e9, 3)
            for p in procs
            if complete and p.sink
        }
    else:
        res["rate"] = rate
        res["latency"] = {"all": latency_summary([s for v in samples_by.values() for s in v])}
        if len(procs) > 1:
            for label, v in samples_by.items():
                res["latency"][label] = latency_summary(v)
    if rds is not None and stats_before is not None and stats_after is not None:
        # The commands the masters ran (on one Redis, its own); the replicas' are per node.
        masters = masters_of(rds)
        res["redis_commands"] = command_deltas(
            merged_commandstats(stats_before, masters),
            merged_commandstats(stats_after, masters),
            pub_stats.ok,
        )
        res["redis_nodes"] = per_node(
            rds, channel_of(topic), stats_before, stats_after, pub_stats.ok
        )
    res["metrics"] = {
        p.label: {"before": metrics_before[p.label], "after": metrics_after[p.label]} for p in procs
    }
    res["refills"] = {
        p.label: metrics_after[p.label].get("sluiceway_backend_refills_total", 0)
        - metrics_before[p.label].get("sluiceway_backend_refills_total", 0)
        for p in procs
        if "sluiceway_backend_refills_total" in metrics_after[p.label]
    }
    res["refills_since_start"] = {
        p.label: metrics_after[p.label].get("sluiceway_backend_refills_total")
        for p in procs
        if "sluiceway_backend_refills_total" in metrics_after[p.label]
    }
    res["ready_s"] = {p.label: round(p.srv.ready_s, 2) for p in procs}
    for p in procs:
        if not p.srv.alive():
            res["ok"] = False
            res["error"] = f"server {p.label} exited with code {p.srv.returncode}"
    res["log_problems"] = {p.label: log_problems(p.srv) for p in procs}
    return res


# --------------------------------------------------------------------------------------------
# Runner and report
# --------------------------------------------------------------------------------------------


def summary(phase: str, r: dict[str, Any]) -> str:
    if "error" in r and "outcome" not in r:
        return f"ERROR {r['error']}"
    if phase == "latency":
        lat = r.get("latency", {}).get("all", {})
        s = f"p50 {lat.get('p50_ms')} ms p99 {lat.get('p99_ms')} ms"
    else:
        s = f"{r.get('deliveries_per_s')} deliveries/s"
    if rc := r.get("redis_commands"):
        s += f", {rc['per_publish_total']} redis cmds/publish"
    if nodes := r.get("redis_nodes"):
        s += f", pub/sub per publish per node: {pubsub_cell(nodes)}"
    s += f", refills {r.get('refills')}, ASGI-path streams {r.get('streams_on_asgi_path')}"
    s += ", ok" if r.get("ok") else f", NOT OK ({r.get('outcome')}, {r.get('check')})"
    cpu = r.get("cpu", {})
    procs = " ".join(
        f"{k.removeprefix('server ')} {v:.0f}%" for k, v in cpu.get("process_pct", {}).items()
    )
    cores = " ".join(
        f"core{k} {c['busy_pct']:.0f}% (other {c['other_minus_softirq_pct']:.0f}%)"
        for k, c in cpu.get("cores", {}).items()
    )
    return s + f"; cpu {procs}; {cores}"


def grouped(nodes: list[dict[str, Any]], value: Any) -> str:
    """A cell over every node, grouped by its place: ``label value / value; ...``."""
    parts = []
    for kind, label in NODE_KINDS.items():
        values = [value(n) for n in nodes if n["kind"] == kind]
        if values:
            parts.append(f"{label} " + " / ".join(values))
    return "; ".join(parts) or "-"


def num(v: float) -> str:
    """A per-publish figure: 0 when none, else two decimals.

    >>> num(0.0), num(1.0), num(0.00049), num(4.9996)
    ('0', '1.00', '0.0005', '5.00')
    """
    if v == 0:
        return "0"
    return f"{v:.2f}" if abs(v) >= 0.01 else f"{v:.4f}"


def pubsub_cell(nodes: list[dict[str, Any]]) -> str:
    """Pub/sub messages per publish, per node: the PUBLISH/SPUBLISH it executed (from a script
    or a client) and, on a cluster, the publish/publishshard messages it received on the bus."""

    def one(n: dict[str, Any]) -> str:
        ex = n["executed"]
        done = ", ".join(f"{c.upper()} {num(ex[c])}" for c in ("publish", "spublish") if ex.get(c))
        if n["kind"] == "single":
            return done or "0"
        got = num(n["pubsub_received"])
        return f"{got} ({done} run here)" if done else got

    return grouped(nodes, one)


def pubsub_summary(r: dict[str, Any]) -> str:
    out = []
    for command in ("publish", "spublish"):
        nodes = r[command]["nodes"]
        out.append(
            f"{command.upper()}: received per message "
            + grouped(nodes, lambda n: num(n["pubsub_received"]))
            + f", the entry master sent {num(sum(nodes[0]['bus_sent'].values()))}"
        )
    return " | ".join(out)


async def run_with_retries(
    setup: str,
    phase: str,
    args: argparse.Namespace,
    rds: Backend | None,
    log_dir: Path,
    results: dict[str, Any],
) -> dict[str, Any]:
    """One measurement; again on fresh servers (up to --disturbed-retries times) when other
    processes took a benchmark core meanwhile (the disturbed attempt stays in the JSON)."""
    attempts = 0
    while True:
        attempts += 1
        say(f"  [{setup}] {phase} ...")
        # The collector is off inside the measured window only (see measure).
        res = await timed_phase(
            run_phase(setup, phase, args, rds, log_dir), args.phase_budget, no_gc=False
        )
        res["attempt"] = attempts
        say(f"  [{setup}] {phase}: {summary(phase, res)}")
        other = disturbance(res)
        if other >= DISTURBED_PCT and attempts <= args.disturbed_retries:
            say(f"  [{setup}] {phase}: {other}% of a core went to other work, running it again")
            disturbed = results[setup].setdefault("disturbed_attempts", {})
            disturbed.setdefault(phase, []).append(res)
            continue
        return res


def pick_median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """With --repeat: the run with the median deliveries/s (failed runs count as 0); the
    others' figures stay in ``repeats``."""
    if len(runs) == 1:
        return runs[0]
    ranked = sorted(runs, key=lambda r: r.get("deliveries_per_s") or 0)
    median = dict(ranked[(len(ranked) - 1) // 2])
    median["repeats"] = [
        {
            k: r.get(k)
            for k in (
                "ok",
                "deliveries_per_s",
                "elapsed_s",
                "coalescing",
                "post_round_trip_ms",
                "streams_on_asgi_path",
            )
        }
        for r in runs
    ]
    return median


def about(rds: Backend | None) -> dict[str, Any] | None:
    """What the JSON records about a Redis or a cluster (its log's end included)."""
    if rds is None:
        return None
    out: dict[str, Any] = {"version": rds.version, "cmd": rds.cmd, "log_tail": rds.log_tail()}
    if isinstance(rds, RedisCluster):
        out["masters"], out["replicas"] = rds.masters, rds.replicas
        out["url"] = rds.url
        out["bus_ports"] = {str(k): v for k, v in rds.bus_ports.items()}
        with contextlib.suppress(Exception):
            out["topology"] = {str(k): v for k, v in rds.topology().items()}
    return out


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    log_dir = Path(tempfile.mkdtemp(prefix="redis-fanout-logs-"))
    results: dict[str, Any] = {s: {"phases": {}} for s in args.setups}
    # One Redis for the Redis setups, one cluster for the cluster ones; never both at once (they
    # share the Redis core).
    single: RedisServer | None = None
    cluster: RedisCluster | None = None
    recorded: dict[str, Any] = {"redis": None, "redis_cluster": None}
    t0 = time.monotonic()

    def stop_single() -> None:
        nonlocal single
        if single is not None:
            single.stop()
            recorded["redis"] = about(single)
            single = None

    def stop_cluster() -> None:
        nonlocal cluster
        if cluster is not None:
            with contextlib.suppress(Exception):
                recorded["redis_cluster"] = about(cluster)
            cluster.stop()
            if recorded["redis_cluster"] is not None:
                recorded["redis_cluster"]["log_tail"] = cluster.log_tail()
            cluster = None

    try:
        for setup in args.setups:
            say(f"== {setup}")
            rds: Backend | None = None
            try:
                if setup in CLUSTER_SETUPS:
                    stop_single()
                    if cluster is None:
                        cluster = RedisCluster(
                            args.redis_cpu,
                            log_dir,
                            masters=args.cluster_masters,
                            replicas=args.cluster_replicas,
                        )
                        t = time.monotonic()
                        cluster.start()
                        say(f"  cluster of {len(cluster.nodes)} nodes up in"
                            f" {time.monotonic() - t:.1f} s")  # fmt: skip
                    rds = cluster
                elif setup != "memory":
                    stop_cluster()
                    if single is None:
                        single = RedisServer(args.redis_cpu, log_dir)
                        single.start()
                    rds = single
            except Exception as exc:
                results[setup]["error"] = f"{type(exc).__name__}: {exc}"
                say(f"  [{setup}] could not start its Redis: {results[setup]['error']}")
                stop_cluster()
                continue
            for phase in args.phases:
                if phase == "pubsub":
                    if isinstance(rds, RedisCluster):
                        say(f"  [{setup}] pubsub ...")
                        flush(rds)
                        r = pubsub_contrast(rds, args.pubsub_messages)
                        results[setup]["phases"][phase] = r
                        say(f"  [{setup}] pubsub: {pubsub_summary(r)}")
                    continue
                runs = args.repeat if phase != "latency" else 1
                done = [await run_with_retries(setup, phase, args, rds, log_dir, results)]
                for _ in range(runs - 1):
                    done.append(await run_with_retries(setup, phase, args, rds, log_dir, results))
                results[setup]["phases"][phase] = pick_median(done)
    finally:
        stop_single()
        stop_cluster()
    say(f"server logs in {log_dir}")
    return {
        "results": results,
        "redis": recorded["redis"] or {"version": None, "cmd": None, "log_tail": ""},
        "redis_cluster": recorded["redis_cluster"],
        "log_dir": str(log_dir),
        "total_wall_s": round(time.monotonic() - t0, 1),
    }


def lat_all(r: dict[str, Any], key: str) -> Any:
    return r.get("latency", {}).get("all", {}).get(key)


def render_table(run: dict[str, Any], args: argparse.Namespace) -> str:
    results = run["results"]
    setups = list(results)

    def get(s: str, phase: str) -> dict[str, Any]:
        return results[s]["phases"].get(phase, {})

    def cpu(r: dict[str, Any]) -> str:
        p = (r.get("cpu") or {}).get("process_pct")
        if not p:
            return "-"
        order = ("server A", "server B", "redis-server", "loadgen")
        return " / ".join(f"{k.removeprefix('server ')} {p[k]:.0f}" for k in order if k in p)

    def cores(r: dict[str, Any]) -> str:
        c = (r.get("cpu") or {}).get("cores")
        if not c:
            return "-"
        return " / ".join(
            f"{k}: {v['busy_pct']:.0f} (si {v['softirq_pct']:.0f})" for k, v in sorted(c.items())
        )

    def refills(r: dict[str, Any]) -> str:
        if not r or "refills" not in r:
            return "-"
        if not r["refills"]:
            return "n/a"
        return " / ".join(f"{k} {v:.0f}" for k, v in r["refills"].items())

    def logs(r: dict[str, Any]) -> str:
        lp = r.get("log_problems")
        if not lp:
            return "-"
        return " / ".join(f"{k} {v['count']}" for k, v in lp.items())

    def deliveries(r: dict[str, Any]) -> str:
        v = fmt(r.get("deliveries_per_s"), ",")
        reps = [x.get("deliveries_per_s") or 0 for x in r.get("repeats", [])]
        if len(reps) > 1:
            v += f" (median of {len(reps)}: {min(reps):,} to {max(reps):,})"
        return v

    def post_rtt(r: dict[str, Any]) -> str:
        p = r.get("post_round_trip_ms")
        return "-" if not p else f"{p['p50']} / {p['p99']}"

    def asgi_path(r: dict[str, Any]) -> str:
        a = r.get("streams_on_asgi_path")
        return "-" if not a else " / ".join(f"{k} {v}" for k, v in a.items())

    def per_read(r: dict[str, Any]) -> str:
        c = r.get("coalescing")
        if not c:
            return "-"
        return " / ".join(f"{k} {fmt(v['events_per_read'])}" for k, v in c.items())

    def cmds_total(r: dict[str, Any]) -> str:
        rc = r.get("redis_commands")
        return "n/a" if not rc else fmt(rc["per_publish_total_without_our_info"])

    def cmds_detail(r: dict[str, Any]) -> str:
        rc = r.get("redis_commands")
        if not rc:
            return "n/a"
        return ", ".join(f"{k} {v:g}" for k, v in rc["per_publish"].items())

    def nodes_cell(r: dict[str, Any], cell: Any) -> str:
        nodes = r.get("redis_nodes")
        return "n/a" if not nodes else cell(nodes)

    def pubsub_rows(t: str, phase: str) -> list[tuple[str, Any]]:
        return [
            (
                f"{t}: pub/sub messages per publish, per node (received; run here)",
                lambda s: nodes_cell(get(s, phase), pubsub_cell),
            ),
            (
                f"{t}: subscriptions to the topic's channel, per node",
                lambda s: nodes_cell(
                    get(s, phase),
                    lambda ns: grouped(ns, lambda n: str(n.get("subscriptions_to_topic", "?"))),
                ),
            ),
            (
                f"{t}: Redis commands per publish, per node",
                lambda s: nodes_cell(
                    get(s, phase),
                    lambda ns: grouped(ns, lambda n: num(n["commands_per_publish_total"] or 0)),
                ),
            ),
        ]

    def lat(phase: str, key: str, which: str = "all") -> Any:
        return lambda s: fmt(get(s, phase).get("latency", {}).get(which, {}).get(key))

    rows: list[tuple[str, Any]] = []
    for phase, n in (("throughput", args.subscribers), ("small", args.small_subscribers)):
        if phase not in args.phases:
            continue
        t = f"Throughput, {n:,} subs x {args.events:,} events"
        rows += [
            (f"{t}: deliveries/s", lambda s, ph=phase: deliveries(get(s, ph))),
            (f"{t}: elapsed s", lambda s, ph=phase: fmt(get(s, ph).get("elapsed_s"))),
            (
                f"{t}: publish rate, events/s",
                lambda s, ph=phase: publish_rate_cell(get(s, ph)),
            ),
            (f"{t}: loss / dup / order", lambda s, ph=phase: delivery_status(get(s, ph))),
            (f"{t}: Redis commands per publish", lambda s, ph=phase: cmds_total(get(s, ph))),
            (f"{t}: per command", lambda s, ph=phase: cmds_detail(get(s, ph))),
            *pubsub_rows(t, phase),
            (
                f"{t}: evalsha µs in Redis",
                lambda s, ph=phase: fmt(
                    (get(s, ph).get("redis_commands") or {}).get("evalsha_usec_per_call")
                ),
            ),
            (
                f"{t}: POST round trip p50 / p99 ms",
                lambda s, ph=phase: post_rtt(get(s, ph)),
            ),
            (f"{t}: events per subscriber read", lambda s, ph=phase: per_read(get(s, ph))),
            (f"{t}: streams on the ASGI path", lambda s, ph=phase: asgi_path(get(s, ph))),
            (f"{t}: refills during window", lambda s, ph=phase: refills(get(s, ph))),
            (f"{t}: process CPU % A / B / redis / loadgen", lambda s, ph=phase: cpu(get(s, ph))),
            (f"{t}: core busy % (softirq)", lambda s, ph=phase: cores(get(s, ph))),
        ]
    if "latency" in args.phases:
        t = (
            f"Latency, {args.subscribers:,} subs, "
            f"{args.latency_rate:g} ev/s x {args.latency_duration:g} s"
        )
        rows += [
            (f"{t}: p50 ms", lat("latency", "p50_ms")),
            (f"{t}: p99 ms", lat("latency", "p99_ms")),
            (f"{t}: max ms", lat("latency", "max_ms")),
            (
                f"{t}: p50 / p99 ms on A / on B",
                lambda s: (
                    "-"
                    if "B" not in get(s, "latency").get("latency", {})
                    else " / ".join(
                        f"{k}: {get(s, 'latency')['latency'][k]['p50_ms']} / "
                        f"{get(s, 'latency')['latency'][k]['p99_ms']}"
                        for k in ("A", "B")
                    )
                ),
            ),
            (f"{t}: streams on the ASGI path", lambda s: asgi_path(get(s, "latency"))),
            (f"{t}: loss / dup / order", lambda s: delivery_status(get(s, "latency"))),
            (f"{t}: Redis commands per publish", lambda s: cmds_total(get(s, "latency"))),
            (f"{t}: per command", lambda s: cmds_detail(get(s, "latency"))),
            *pubsub_rows(t, "latency"),
            (f"{t}: refills during window", lambda s: refills(get(s, "latency"))),
            (f"{t}: process CPU % A / B / redis / loadgen", lambda s: cpu(get(s, "latency"))),
            (f"{t}: core busy % (softirq)", lambda s: cores(get(s, "latency"))),
        ]

    def log_counts(s: str) -> str:
        cells = []
        for k in ("A", "B"):
            seen = [
                get(s, ph)["log_problems"][k]
                for ph in args.phases
                if k in get(s, ph).get("log_problems", {})
            ]
            if seen:
                cells.append(f"{k} {sum(x['count'] for x in seen)}")
        return " / ".join(cells) or "-"

    rows.append(("server log warnings/errors (all phases)", log_counts))
    titles = [SETUP_TITLES[s] for s in setups]
    lines = md_table(["metric", *titles], [[label, *(f(s) for s in setups)] for label, f in rows])

    # Ratios, from this run only.
    pairs = [
        ("redis-1", "memory", "Redis 1 proc vs in-process"),
        ("redis-2", "memory", "Redis 2 procs vs in-process"),
        ("redis-2", "redis-1", "Redis 2 procs vs Redis 1 proc"),
        ("cluster-2", "redis-2", "Cluster 2 procs vs Redis 2 procs"),
    ]
    pairs = [p for p in pairs if p[0] in results and p[1] in results]
    if pairs:
        metrics: list[tuple[str, str, Any, bool]] = [
            (
                f"deliveries/s, {args.subscribers:,} subs",
                "throughput",
                lambda r: r.get("deliveries_per_s"),
                True,
            ),
            (
                f"deliveries/s, {args.small_subscribers:,} subs",
                "small",
                lambda r: r.get("deliveries_per_s"),
                True,
            ),
            ("latency p50", "latency", lambda r: lat_all(r, "p50_ms"), False),
            ("latency p99", "latency", lambda r: lat_all(r, "p99_ms"), False),
        ]
        # The plain ratio a/b, whichever way is better.
        ratios = [
            [
                label,
                *(
                    ratio_cell(
                        key(get(a, phase)),
                        key(get(b, phase)),
                        digits=2,
                        word="(higher is better)" if higher_better else "",
                    )
                    for a, b, _ in pairs
                ),
            ]
            for label, phase, key, higher_better in metrics
            if phase in args.phases
        ]
        lines += ["", *md_table(["ratio (one run)", *(p[2] for p in pairs)], ratios)]

    for s in setups:
        contrast = results[s]["phases"].get("pubsub")
        if not contrast:
            continue
        pub, spub = contrast["publish"]["nodes"], contrast["spublish"]["nodes"]

        def by_kind(nodes: list[dict[str, Any]], kind: str, key: Any) -> str:
            return " / ".join(num(key(n)) for n in nodes if n["kind"] == kind) or "-"

        def received(n: dict[str, Any]) -> float:
            return float(n["pubsub_received"])

        def sent(n: dict[str, Any]) -> float:
            return float(sum(n["bus_sent"].values()))

        crows = [["bus messages sent by the channel's master", by_kind(pub, "owner", sent),
                  by_kind(spub, "owner", sent)]]  # fmt: skip
        for kind in ("owner-replica", "other-master", "other-replica"):
            crows.append(
                [
                    f"bus messages received: {NODE_KINDS[kind]}",
                    by_kind(pub, kind, received),
                    by_kind(spub, kind, received),
                ]
            )
        lines += [
            "",
            f"{SETUP_TITLES[s]}: {contrast['messages']:,} messages to one channel sent straight"
            " from redis-py to the master of its slot (no Sluiceway, no subscriber), per message:",
            "",
            *md_table(["pub/sub on the cluster bus", "PUBLISH", "SPUBLISH"], crows),
        ]

    notes = []
    for s in setups:
        if "error" in results[s]:
            notes.append(f"{s}: {results[s]['error']}")
        for phase, r in results[s]["phases"].items():
            if phase == "pubsub":
                continue
            other = disturbance(r)
            if other >= DISTURBED_PCT:
                notes.append(f"{s}/{phase}: up to {other}% of a core went to other work")
            cores_ = (r.get("cpu") or {}).get("cores", {})
            lg = cores_.get(str(args.loadgen_cpu), {}).get("busy_pct", 0)
            if lg >= 90:
                notes.append(f"{s}/{phase}: load generator core {lg}% busy (may be loadgen-bound)")
            if any(c.get("steal_pct", 0) >= 5 for c in cores_.values()):
                notes.append(f"{s}/{phase}: hypervisor steal >= 5%")
    if notes:
        lines += ["", "Warnings: " + "; ".join(notes)]
    lines += [
        "",
        f"Pinning: server A on core {args.cpu_a}, server B on core {args.cpu_b}, redis-server on"
        f" core {args.redis_cpu}, load generator on core {args.loadgen_cpu}. Publishing through"
        f" {'A only' if args.publish_via == 'a' else 'A and B alternately (by lane)'},"
        f" {args.window} publishers with one POST in flight each. Redis commands per publish:"
        " INFO commandstats after minus before the window, over events published, without the"
        " INFO (and CLUSTER INFO) that took the readings; on a cluster the masters' sum."
        + (
            f" The cluster: {args.cluster_masters} masters with {args.cluster_replicas}"
            " replica(s) each, every node on the Redis core (its CPU is the nodes' sum, under"
            " 'redis'). Pub/sub messages per publish per node: the publish and publishshard"
            " messages the node received on the cluster bus (CLUSTER INFO), and in parentheses"
            " the PUBLISH/SPUBLISH it ran itself (from the publish script); on one Redis, the"
            " PUBLISH it ran. Nodes by place: the topic's master, its replica, the other masters,"
            " their replicas."
            if any(s in CLUSTER_SETUPS for s in setups)
            else ""
        )
        + (
            " Each process's mirror of the topic was loaded (one subscriber) before the burst"
            " (--warm-mirror)."
            if args.warm_mirror
            else ""
        )
        + (
            f" Throughput phases ran {args.repeat} times each (fresh servers); the table shows"
            " the median run, and ratios use it."
            if args.repeat > 1
            else ""
        ),
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = parser(__doc__)
    p.add_argument("--setups", default=",".join(SETUPS), help="subset of: " + ", ".join(SETUPS))
    p.add_argument(
        "--phases", default=",".join(PHASE_NAMES), help="subset of: " + ", ".join(PHASE_NAMES)
    )
    p.add_argument("--subscribers", type=int, default=1000, help="throughput and latency phases")
    p.add_argument("--small-subscribers", type=int, default=100, help="the 'small' phase")
    p.add_argument("--events", type=int, default=2000, help="events in the throughput phases")
    p.add_argument("--window", type=int, default=8, help="publishers, one POST in flight each")
    p.add_argument("--latency-rate", type=float, default=20.0, help="events/s, latency phase")
    p.add_argument("--latency-duration", type=float, default=10.0, help="seconds of publishing")
    p.add_argument(
        "--publish-via",
        choices=("a", "alternate"),
        default="a",
        help="publish through server A only, or alternate lanes between A and B (redis-2)",
    )
    p.add_argument("--connect-concurrency", type=int, default=1000)
    p.add_argument(
        "--warm-mirror",
        action="store_true",
        help="Redis setups: open one subscriber per process before the burst, so that the"
        " topic's mirror is loaded and every stream of the burst takes the native path",
    )
    p.add_argument("--settle", type=float, default=0.2, help="seconds before the first publish")
    p.add_argument("--timeout", type=float, default=180.0, help="subscribe / delivery deadline")
    p.add_argument("--phase-budget", type=float, default=300.0, help="hard cap on one phase, s")
    p.add_argument("--stall", type=float, default=3.0, help="end early: nothing arrived this long")
    p.add_argument("--quiet-wait", type=float, default=30.0, help="wait for idle cores, at most")
    p.add_argument("--disturbed-retries", type=int, default=1)
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run each throughput phase this many times (fresh servers each) and report the"
        " median run, with the spread",
    )
    p.add_argument("--cluster-masters", type=int, default=3, help="cluster setups")
    p.add_argument(
        "--cluster-replicas",
        type=int,
        default=1,
        help="replicas per master (cluster setups; every node runs on --redis-cpu)",
    )
    p.add_argument(
        "--pubsub-messages",
        type=int,
        default=1000,
        help="messages of each kind (PUBLISH, SPUBLISH) in the 'pubsub' phase",
    )
    p.add_argument("--ready-timeout", type=float, default=30.0)
    p.add_argument("--cpu-a", type=int, default=0, help="core for server A")
    p.add_argument("--cpu-b", type=int, default=0, help="core for server B")
    p.add_argument("--redis-cpu", type=int, default=0, help="core for redis-server")
    p.add_argument("--loadgen-cpu", type=int, default=1, help="core for this process")
    add_out_argument(p)
    p.add_argument("--quick", action="store_true", help="small counts: a smoke test (< 1 min)")
    args = p.parse_args(argv)
    args.setups = choices(p, args.setups, SETUPS, "setup")
    args.phases = choices(p, args.phases, PHASE_NAMES, "phase")
    if args.quick:
        args.subscribers, args.small_subscribers, args.events = 100, 10, 200
        args.pubsub_messages = 200
        args.latency_duration = 2.0
        args.quiet_wait = 1.0
        args.disturbed_retries = 0
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    raise_nofile(2 * args.subscribers + 1024)
    pin_self(args.loadgen_cpu)
    started = timestamp()
    run = uvloop.run(amain(args))
    servers = [args.cpu_a, args.cpu_b]
    after = {"redis_cpu": args.redis_cpu}
    machine = fanout_machine_info(servers, args.loadgen_cpu, PACKAGES, after)
    machine["versions"]["redis-py"] = package_versions(["redis"])["redis"]
    machine["versions"]["redis-server"] = run["redis"]["version"] or (
        (run.get("redis_cluster") or {}).get("version")
    )
    save_results(
        "redis_fanout",
        started,
        argv,
        config_of(args),
        machine,
        run,
        lambda doc: render_table(run, args),
        args.out,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
