"""Chaos soak: many processes on a Redis Cluster, thousands of resuming clients, random faults.

Several ``sluiceway serve --backend redis+cluster://...`` processes share a private Redis
Cluster (three masters, three replicas; ``tests/redisproc.py``'s ``RedisCluster``, with a 3 s
``cluster-node-timeout``).  SSE clients (``sluiceway.client.EventSource``) and WebSocket
clients (the official ``centrifuge-python`` SDK, subscribed with ``positioned`` and
``recoverable``) each follow one of a few topics (a channel is a topic), through front-end TCP
proxies that spread connections over the live processes (``harness/proxy.py``); the clients
run in worker processes of their own (``--client-procs``).  A publisher posts a steady rate to
the processes, each event's data carrying its topic's sequence number ``{"s": n}``, and
retries a publish that failed (a 503 during a fault, a process that died under it).

For ``--minutes`` faults come at random intervals, every kind once per round in random order:

* ``process_kill``     a Sluiceway process gets SIGKILL, stays down a moment, and restarts;
* ``master_failover``  a Redis master (one serving a followed topic) is killed; once its
                       replica has taken over it restarts and rejoins as a replica;
* ``client_cut``       a share of the proxied connections is cut mid-chunk (FIN or RST);
* ``redis_pause``      a master is frozen (SIGSTOP) for a moment shorter than the cluster's
                       failure detection, then resumed (SIGCONT): Redis unreachable, no
                       failover;
* ``redis_drop``       every Redis connection of one Sluiceway process is killed
                       (``CLIENT KILL``), again and again for a few seconds: Redis
                       unreachable for that process alone;
* ``master_freeze``    a master frozen until its replica has taken over, then resumed: it
                       may run writes queued on its sockets before it learns it was demoted,
                       and the cluster drops them (acknowledged writes can be lost).

Then the faults stop, publishing goes on a few seconds, stops, and every client must reach the
last event of its topic.  The truth is each topic's history as Redis stores it: read back
directly at the end, and watched as it grows (four times a second) so that earlier epochs are
known and any time the store went back on events it had held; every process's history
endpoint is compared with it too.  Each client's sequence is checked against it: every event
exactly once and in order, or an explicit reset (a ``sluiceway.reset`` event; ``recovered:
false``) where history was truly lost.  A publish whose first try landed although it failed
appears twice in the history with the same sequence number: a publisher duplicate, not a
Sluiceway one (the two copies have different ids).

    uv run python bench/chaos.py --minutes 10
    uv run python bench/chaos.py --minutes 1 --sse-clients 100 --ws-clients 20

The table is printed; everything goes to ``bench/results/chaos-<time>.json``; the servers'
logs stay in the directory the JSON names, with ``timeline.log``: the faults and the
processes' warnings, in time.  Exit status 1 when a check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import pickle
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import redis
import uvloop
from centrifuge import (
    Client,
    PublicationContext,
    SubscribedContext,
    SubscriptionEventHandler,
)
from harness import HOST, ROOT, VENV_BIN
from harness.cli import add_out_argument, parser
from harness.http import free_port
from harness.machine import machine_info, raise_nofile
from harness.procs import Proc
from harness.proxy import FrontProxy
from harness.report import fmt, md_table, save_results, say, timestamp
from redis.cluster import ClusterNode
from redis.cluster import RedisCluster as RedisClusterClient

from sluiceway.client import EventSource
from sluiceway.control import RESET_EVENT, parse_reset
from sluiceway.hub.redis_backend import channel_of

# The private cluster of the tests, not a copy of it.
sys.path.append(str(ROOT / "tests"))
from redisproc import REDIS_SERVER, RedisCluster, RedisProcess

KINDS = (
    "process_kill",
    "master_failover",
    "client_cut",
    "redis_pause",
    "redis_drop",
    "master_freeze",
)
#: This file: the client workers run it with ``--worker``.
SCRIPT = Path(__file__).resolve()
PACKAGES = ("sluiceway", "redis", "centrifuge-python", "httpx", "uvloop", "uvicorn")


class SoakCluster(RedisCluster):
    """The tests' cluster with a slower failure detection (3 s instead of 1 s), so that a
    master frozen for up to 2 s is only unreachable, not failed over."""

    NODE_TIMEOUT_MS = 3000


@dataclass
class Config:
    """One soak; the defaults are those of ``bench/chaos.py`` without options."""

    processes: int = 3
    sse_clients: int = 1000
    ws_clients: int = 200
    #: Worker processes the clients run in (thousands of Python clients need more than a core).
    client_procs: int = 2
    topics: int = 5
    rate: float = 50.0
    minutes: float = 10.0
    kinds: tuple[str, ...] = KINDS
    #: Seconds between the end of one fault and the start of the next, drawn uniformly.
    gap_s: tuple[float, float] = (5.0, 20.0)
    #: Share of the proxied connections one ``client_cut`` breaks.
    cut_share: tuple[float, float] = (0.1, 0.4)
    down_s: tuple[float, float] = (0.2, 3.0)
    pause_s: tuple[float, float] = (0.5, 2.0)
    drop_s: tuple[float, float] = (1.0, 3.0)
    #: Publishing goes on this long after the last fault.
    settle_s: float = 5.0
    #: After publishing stops, how long the clients get to reach the last event.
    catch_up_s: float = 60.0
    payload_bytes: int = 64
    history_size: int = 100_000
    seed: int = 0
    log_dir: Path | None = None
    progress_s: float = 10.0


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


def cluster_url(cluster: RedisCluster) -> str:
    """Every node as a seed: a process restarted while the first node is down still starts."""
    return "redis+cluster://" + ",".join(f"{HOST}:{n.port}" for n in cluster.nodes)


class Timeline:
    """When things happened: each fault's start and end, and each warning or error a process
    logged, stamped when it appeared in the log (the processes' lines carry no time)."""

    def __init__(self) -> None:
        self.entries: list[tuple[float, str, str]] = []  # (time.monotonic(), source, line)
        self._read: dict[Path, int] = {}
        self._partial: dict[Path, bytes] = {}

    def add(self, source: str, line: str) -> None:
        self.entries.append((time.monotonic(), source, line))

    def poll(self, procs: Sequence[Proc]) -> None:
        now = time.monotonic()
        for proc in procs:
            path = proc.log_path
            if path is None or not path.exists():
                continue
            with path.open("rb") as log:
                log.seek(self._read.get(path, 0))
                data = self._partial.pop(path, b"") + log.read()
                self._read[path] = log.tell()
            *lines, rest = data.split(b"\n")
            if rest:
                self._partial[path] = rest
            for raw in lines:
                line = raw.decode("utf-8", "replace")
                if _PROBLEM.search(line):
                    self.entries.append((now, proc.name, line))

    def problems_by_fault(
        self, windows: Sequence[tuple[float, float, str]]
    ) -> dict[str, dict[str, int]]:
        """The kinds of warning and error lines logged during (or just after) each kind of
        fault."""
        found: dict[str, Counter[str]] = {}
        for at, source, line in self.entries:
            if source.startswith("sluiceway"):
                found.setdefault(blame(at, windows), Counter())[_problem_kind(line)] += 1
        return {kind: dict(c.most_common(12)) for kind, c in sorted(found.items())}

    def write(self, path: Path, t0: float) -> None:
        with path.open("w") as out:
            for at, source, line in sorted(self.entries, key=lambda e: e[0]):
                out.write(f"{at - t0:9.2f} {source}: {line}\n")


class Servers:
    """The Sluiceway processes, each on its own port, logging to ``log_dir``."""

    def __init__(self, count: int, url: str, log_dir: Path, history_size: int) -> None:
        self.procs: list[Proc] = []
        for index in range(count):
            port = free_port()
            cmd = [
                str(VENV_BIN / "sluiceway"), "serve",
                "--host", HOST, "--port", str(port), "--log-level", "warning",
                "--backend", url, "--history-size", str(history_size),
            ]  # fmt: skip
            log = log_dir / f"sluiceway-{index}-{port}.log"
            # append: one log across restarts; no session: SIGKILL hits the process itself.
            self.procs.append(Proc(f"sluiceway-{index}", cmd, log, port=port, append=True))
        #: Processes this script killed and has not restarted yet.
        self.down: set[int] = set()
        self.restarts = 0
        self.crashes: list[str] = []
        self.timeline = Timeline()
        self.stopping = False

    @property
    def ports(self) -> list[int]:
        return [p.port for p in self.procs]

    def note(self, proc: Proc, line: str) -> None:
        """A line of the script's own in the process's log, to read the log against."""
        if proc.log_path is not None:
            with proc.log_path.open("a") as log:
                log.write(f"---- chaos {time.strftime('%H:%M:%S')}: {line}\n")

    async def start(self) -> None:
        for proc in self.procs:
            proc.start()
        await asyncio.gather(*(p.wait_ready(60) for p in self.procs))

    def kill(self, index: int) -> None:
        proc = self.procs[index]
        assert proc.proc is not None
        self.down.add(index)
        self.note(proc, "SIGKILL")
        proc.proc.kill()
        proc.proc.wait(10)

    async def restart(self, index: int) -> float:
        proc = self.procs[index]
        self.note(proc, "restart")
        proc.start()
        ready = await proc.wait_ready(60)
        self.down.discard(index)
        self.restarts += 1
        return ready

    async def watch(self) -> None:
        """A process that exits without being killed here crashed: say so, start it again."""
        while True:
            await asyncio.sleep(0.25)
            self.timeline.poll(self.procs)
            for index, proc in enumerate(self.procs):
                if index not in self.down and not proc.alive() and not self.stopping:
                    self.crashes.append(f"{proc.name} exited with {proc.returncode}")
                    say(f"!! {proc.name} exited by itself ({proc.returncode}); restarting")
                    self.down.add(index)
                    with contextlib.suppress(Exception):
                        await self.restart(index)

    def stop(self) -> dict[str, Any]:
        """SIGTERM each (SIGKILL after 5 s); how each exited, and how long that took (a clean
        shutdown exits 0)."""
        self.stopping = True  # exits from here on are ours
        exits: dict[str, Any] = {}
        for proc in self.procs:
            started = time.monotonic()
            was_alive = proc.alive()
            proc.stop()
            if was_alive:
                exits[proc.name] = {
                    "code": proc.returncode,
                    "took_s": round(time.monotonic() - started, 2),
                }
        return exits

    def problem_counts(self) -> list[int]:
        return [len(p.log_lines(_PROBLEM)) for p in self.procs]

    def log_problems(self) -> dict[str, Any]:
        """Each process's warning and error lines (they say what the server noticed)."""
        found: dict[str, Any] = {}
        for proc in self.procs:
            lines = proc.log_lines(_PROBLEM)
            kinds = Counter(_problem_kind(line) for line in lines)
            found[proc.name] = {"lines": len(lines), "kinds": dict(kinds), "sample": lines[:40]}
        return found


_PROBLEM = re.compile(r"WARNING|ERROR|CRITICAL|Traceback|Exception")


def _problem_kind(line: str) -> str:
    """A log line without its variable parts, to count lines of one kind together."""
    text = re.sub(r"^\S+\s+\S+\s+", "", line) if line[:4].isdigit() else line
    text = re.sub(r"\d+(\.\d+)?", "N", text)
    return re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", text)[:160]


# --------------------------------------------------------------------------------------------
# Topics and the truth
# --------------------------------------------------------------------------------------------


def pick_topics(cluster: RedisCluster, count: int) -> list[str]:
    """``count`` topic names spread over the masters (each master serves one if it can), so
    that every failover hits followed topics."""
    topics: list[str] = []
    served: Counter[int] = Counter()
    masters = {cluster.master_for(channel_of(f"chaos.{n}")).port for n in range(64)}
    for n in range(1000):
        if len(topics) == count:
            break
        name = f"chaos.{n}"
        port = cluster.master_for(channel_of(name)).port
        if served[port] == min(served[m] for m in masters):
            topics.append(name)
            served[port] += 1
    return topics


def split_id(event_id: str) -> tuple[str, int]:
    epoch, _, offset = event_id.rpartition("-")
    return epoch, int(offset)


@dataclass
class Truth:
    """A topic's history as Redis stores it: its epoch, head, and sequence number by offset;
    earlier epochs as the :class:`StoreWatcher` saw them, and the epochs in which the store
    went back on events it had held (a failover that lost acknowledged writes)."""

    topic: str
    epoch: str
    head: int
    seqs: dict[int, int]
    older: dict[str, dict[int, int]] = field(default_factory=dict)
    went_back: set[str] = field(default_factory=set)

    @property
    def last(self) -> tuple[str, int]:
        return self.epoch, self.head

    def log(self, epoch: str) -> dict[int, int] | None:
        return self.seqs if epoch == self.epoch else self.older.get(epoch)


def log_key(topic: str) -> str:
    return f"sluiceway:{{{topic}}}:log"


def meta_key(topic: str) -> str:
    return f"sluiceway:{{{topic}}}:meta"


def cluster_client(cluster: RedisCluster) -> RedisClusterClient:
    seeds = [ClusterNode(HOST, n.port) for n in cluster.alive()]  # type: ignore[no-untyped-call]
    return RedisClusterClient(startup_nodes=seeds, socket_timeout=2, socket_connect_timeout=2)


def _entries(raw: Any) -> dict[int, int]:
    return {int(entry_id.split(b"-")[0]): seq_of(fields[b"d"]) for entry_id, fields in raw}


def read_truth(
    cluster: RedisCluster, topics: Sequence[str], watcher: StoreWatcher | None = None
) -> dict[str, Truth]:
    """Straight from Redis (not through a process, whose mirror is under test too)."""
    client = cluster_client(cluster)
    truths: dict[str, Truth] = {}
    try:
        for topic in topics:
            meta: Any = client.hgetall(meta_key(topic))
            seqs = _entries(client.xrange(log_key(topic)))
            epoch = meta[b"epoch"].decode()
            truth = Truth(topic, epoch, int(meta[b"seq"]), seqs)
            if watcher is not None:
                truth.older = {e: log for e, log in watcher.logs[topic].items() if e != epoch}
                truth.went_back = set(watcher.went_back[topic])
            truths[topic] = truth
    finally:
        client.close()
    return truths


class StoreWatcher:
    """Reads each topic's log from Redis as it grows, four times a second, in a thread of its
    own: the history of every epoch (a topic given a new epoch loses the old log), and every
    time the store went back on events it had held."""

    def __init__(
        self, cluster: RedisCluster, topics: Sequence[str], timeline: Timeline | None = None
    ) -> None:
        self.cluster = cluster
        self.topics = list(topics)
        self.timeline = timeline
        self.logs: dict[str, dict[str, dict[int, int]]] = {t: {} for t in topics}
        self.last: dict[str, tuple[str, int]] = {}
        self.went_back: dict[str, set[str]] = {t: set() for t in topics}
        self.seen: list[str] = []  # what went back, for the report
        self.stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="store-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self.stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        client: RedisClusterClient | None = None
        while not self.stop.wait(0.25):
            try:
                client = client or cluster_client(self.cluster)
                for topic in self.topics:
                    self._poll(client, topic)
            except (redis.RedisError, OSError, IndexError, KeyError):
                if client is not None:  # a failover under way: a new client, a new topology
                    with contextlib.suppress(Exception):
                        client.close()
                client = None
        if client is not None:
            client.close()

    def _poll(self, client: RedisClusterClient, topic: str) -> None:
        meta: Any = client.hgetall(meta_key(topic))
        if not meta:
            return
        epoch, head = meta[b"epoch"].decode(), int(meta[b"seq"])
        log = self.logs[topic].setdefault(epoch, {})
        last_epoch, last = self.last.get(topic, (epoch, 0))
        if last_epoch != epoch:
            last = max(log, default=0)
        if last:
            held = _entries(client.xrange(log_key(topic), f"{last}-0", f"{last}-0"))
            if head < last or held.get(last) != log.get(last):
                # Events this watcher read are gone, or others hold their offsets: read the
                # epoch's log again.
                self.went_back[topic].add(epoch)
                self.seen.append(f"{topic} {epoch}: held up to {last}, now head {head}")
                if self.timeline is not None:
                    self.timeline.add("store", f"{topic} went back: {self.seen[-1]}")
                log.clear()
                last = 0
        log.update(_entries(client.xrange(log_key(topic), f"({last}-0", "+")))
        self.last[topic] = (epoch, max(log, default=0))


# --------------------------------------------------------------------------------------------
# The publisher
# --------------------------------------------------------------------------------------------


@dataclass
class PublishLog:
    """What the publisher did for one topic."""

    topic: str
    acked: dict[int, str] = field(default_factory=dict)  # seq -> id the server answered
    #: seq -> (time.monotonic() of the answer, the process's port): to trace a lost write.
    answered: dict[int, tuple[float, int]] = field(default_factory=dict)
    tries: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    #: Failed tries that may still have landed (anything but a refused connection).
    uncertain: int = 0
    retried: int = 0
    gave_up: list[int] = field(default_factory=list)


class Publisher:
    """A steady ``rate`` over the topics, each topic's events one after another (so their
    stored order is known), each to the next live process; a failed publish is retried,
    with the same sequence number, on the next process."""

    def __init__(self, servers: Servers, topics: Sequence[str], rate: float, pad: int) -> None:
        self.servers = servers
        self.topics = list(topics)
        self.interval = len(topics) / rate
        self.pad = "x" * pad
        self.logs = {t: PublishLog(t) for t in topics}
        self.next_seq = dict.fromkeys(topics, 0)
        #: (time.monotonic(), what) of every failed try, to tell which fault caused it.
        self.failed: list[tuple[float, str]] = []
        self.t0 = time.monotonic()  # set again when publishing starts
        self._turn = 0
        self.http = httpx.AsyncClient(timeout=10.0, limits=httpx.Limits(max_connections=64))

    def _target(self) -> str:
        self._turn += 1
        ports = self.servers.ports
        return f"http://{HOST}:{ports[self._turn % len(ports)]}"

    async def publish_one(self, topic: str, deadline: float) -> None:
        log = self.logs[topic]
        seq = self.next_seq[topic]
        self.next_seq[topic] += 1
        body = orjson.dumps({"data": {"s": seq, "p": self.pad}})
        first = True
        while True:
            if not first:
                log.retried += 1
            first = False
            log.tries += 1
            target = self._target()
            said = f"{topic} s={seq} via :{target.rsplit(':', 1)[1]}"
            try:
                answer = await self.http.post(
                    f"{target}/topics/{topic}",
                    content=body,
                    headers={"content-type": "application/json"},
                )
            except httpx.ConnectError:
                self._failed(log, "refused", said)  # never reached a process: cannot have landed
                await asyncio.sleep(0.02)
            except httpx.HTTPError as exc:
                self._failed(log, type(exc).__name__, said)
                log.uncertain += 1
                await asyncio.sleep(0.05)
            else:
                if answer.status_code == 200:
                    log.acked[seq] = str(answer.json()["id"])
                    log.answered[seq] = (time.monotonic(), int(target.rsplit(":", 1)[1]))
                    self.servers.timeline.add("publisher", f"ok: {said} -> {log.acked[seq]}")
                    return
                self._failed(log, f"HTTP {answer.status_code}", f"{said}: {answer.text[:200]}")
                log.uncertain += 1
                await asyncio.sleep(0.1)
            if time.monotonic() > deadline:
                log.gave_up.append(seq)
                return

    def _failed(self, log: PublishLog, what: str, detail: str) -> None:
        log.failures[what] += 1
        self.failed.append((time.monotonic(), what))
        self.servers.timeline.add("publisher", f"{what}: {detail}")

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(self._lane(t, stop) for t in self.topics))

    async def _lane(self, topic: str, stop: asyncio.Event) -> None:
        due = time.monotonic()
        while not stop.is_set():
            await self.publish_one(topic, deadline=time.monotonic() + 60)
            due += self.interval
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -1.0:
                due = time.monotonic()  # after a long fault: no burst to catch up

    async def aclose(self) -> None:
        await self.http.aclose()


# --------------------------------------------------------------------------------------------
# The clients and what they received
# --------------------------------------------------------------------------------------------


@dataclass
class Mark:
    """Where a client was told that events were lost: before its ``index``-th event."""

    index: int
    reason: str
    requested: tuple[str, int] | None
    resumed: tuple[str, int] | None


class Track:
    """Everything one client received, compactly (offsets and sequence numbers in arrays)."""

    __slots__ = (
        "connects",
        "epochs",
        "errors",
        "index",
        "kind",
        "marks",
        "offsets",
        "pos",
        "recovered",
        "seqs",
        "start",
        "topic",
    )

    def __init__(self, kind: str, index: int, topic: str) -> None:
        self.kind = kind
        self.index = index
        self.topic = topic
        self.offsets = array("q")
        self.seqs = array("q")
        self.epochs: list[tuple[int, str]] = []  # (index of the first event, epoch)
        self.marks: list[Mark] = []
        self.start: tuple[str, int] | None = None
        self.pos: tuple[str, int] | None = None
        self.connects = 0
        self.recovered = 0
        self.errors: list[str] = []

    def event(self, epoch: str, offset: int, seq: int) -> None:
        if not self.epochs or self.epochs[-1][1] != epoch:
            self.epochs.append((len(self.offsets), epoch))
        self.offsets.append(offset)
        self.seqs.append(seq)
        if self.pos is None or self.pos[0] != epoch or offset > self.pos[1]:
            self.pos = (epoch, offset)

    def lost(
        self, reason: str, requested: tuple[str, int] | None, resumed: tuple[str, int]
    ) -> None:
        self.marks.append(Mark(len(self.offsets), reason, requested, resumed))
        self.pos = resumed

    # Plain data across processes: the worker runs this file as __main__, a test imports it as
    # ``chaos``, so pickled instances would not load on the other side.
    def dump(self) -> tuple[Any, ...]:
        marks = [(m.index, m.reason, m.requested, m.resumed) for m in self.marks]
        return (
            self.kind, self.index, self.topic, self.offsets, self.seqs, self.epochs, marks,
            self.start, self.pos, self.connects, self.recovered, self.errors,
        )  # fmt: skip

    @classmethod
    def load(cls, data: tuple[Any, ...]) -> Track:
        kind, index, topic, offsets, seqs, epochs, marks, start, pos, connects, rec, errs = data
        track = cls(kind, index, topic)
        track.offsets, track.seqs, track.epochs = offsets, seqs, epochs
        track.marks = [Mark(*m) for m in marks]
        track.start, track.pos = start, pos
        track.connects, track.recovered, track.errors = connects, rec, errs
        return track


def seq_of(data: str | bytes) -> int:
    return int(orjson.loads(data)["s"])


async def follow_sse(track: Track, url: str, start: str, http: httpx.AsyncClient) -> None:
    """One ``sluiceway.client.EventSource`` from ``start``: it reconnects and resumes by itself."""

    def opened(_: httpx.Response) -> None:
        track.connects += 1

    source = EventSource(
        url,
        last_event_id=start,
        retry_delay=0.2,
        max_backoff=2.0,
        idle_timeout=20.0,
        client=http,
        on_open=opened,
    )
    try:
        async with source:
            async for event in source:
                if event.event == RESET_EVENT:
                    reset = parse_reset(event)
                    assert reset is not None
                    for item in reset.topics:
                        requested = split_id(item.requested) if item.requested else None
                        resumed = split_id(item.resumed_at or reset.event_id)
                        track.lost(item.reason, requested, resumed)
                elif event.id:
                    epoch, offset = split_id(event.id)
                    track.event(epoch, offset, seq_of(event.data or ""))
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # the client gave up: the report says so
        track.errors.append(repr(exc))


class WSFollower(SubscriptionEventHandler):  # type: ignore[misc]  # an untyped SDK
    """The SDK's handler for one subscription: publications, and each (re)subscribe's verdict."""

    def __init__(self, track: Track) -> None:
        self.track = track
        self.epoch = ""

    async def on_subscribed(self, ctx: SubscribedContext) -> None:
        track = self.track
        track.connects += 1
        position = ctx.stream_position
        assert position is not None  # positioned
        here = (position.epoch, position.offset)
        if track.start is None:
            track.start = track.pos = here
        elif ctx.was_recovering and ctx.recovered:
            track.recovered += 1
        else:  # the server could not (or was not asked to) replay what was missed
            reason = "recovered: false" if ctx.was_recovering else "not recovering"
            track.lost(reason, track.pos, here)
        self.epoch = position.epoch

    async def on_publication(self, ctx: PublicationContext) -> None:
        self.track.event(self.epoch, ctx.pub.offset, int(ctx.pub.data["s"]))


# --------------------------------------------------------------------------------------------
# The check
# --------------------------------------------------------------------------------------------


@dataclass
class Verdict:
    delivered: int = 0
    duplicates: int = 0
    gaps: int = 0  # events skipped without a word
    substituted: int = 0  # an event at an offset that the store holds with other data
    resets: int = 0
    reset_skipped: int = 0  # events a reset said were lost
    unjustified_resets: int = 0  # the store still held what the reset said was lost
    unverifiable: int = 0  # events of an epoch the store no longer holds
    phantoms: int = 0  # events delivered, then lost by the store (a failover lost them)
    not_at_end: int = 0
    behind: int = 0
    recovered: int = 0
    connects: int = 0
    dead: int = 0  # clients that gave up
    samples: list[str] = field(default_factory=list)

    def add(self, other: Verdict) -> None:
        for name, value in asdict(other).items():
            if name == "samples":
                self.samples.extend(other.samples[: max(0, 20 - len(self.samples))])
            else:
                setattr(self, name, getattr(self, name) + value)


def mark_phantoms(tracks: Sequence[Track], truths: dict[str, Truth]) -> None:
    """A client that got an event the store no longer holds saw the store go back on it
    (lost by a failover before the watcher read it): its epoch went back."""
    for track in tracks:
        truth = truths[track.topic]
        epochs = dict(track.epochs)
        epoch = ""
        for i, offset in enumerate(track.offsets):
            epoch = epochs.get(i, epoch)
            held = truth.log(epoch)
            if held is not None and offset not in held and epoch not in truth.went_back:
                truth.went_back.add(epoch)


def check(track: Track, truth: Truth) -> Verdict:
    """``track`` against the stored history: every stored event after the client's start
    exactly once, in order, with the stored data; or a reset where the store lost events."""
    v = Verdict(connects=track.connects, recovered=track.recovered, dead=len(track.errors))
    name = f"{track.kind}#{track.index} {track.topic}"
    if track.start is None:
        v.not_at_end = 1
        v.samples.append(f"{name}: never started")
        return v
    pos = track.start
    epochs = dict(track.epochs)
    marks = list(track.marks)
    epoch = ""
    m = 0

    def apply_marks(upto: int) -> None:
        nonlocal pos, m
        while m < len(marks) and marks[m].index <= upto:
            mark = marks[m]
            m += 1
            v.resets += 1
            resumed = mark.resumed or pos
            after = pos[1] if pos[0] == resumed[0] else 0
            v.reset_skipped += max(0, resumed[1] - after)
            held = truth.log(pos[0])
            if pos[0] in truth.went_back or held is None:
                pass  # the store lost events of that epoch (or the whole epoch): explicit
            elif pos[0] == resumed[0]:
                if all(o in held for o in range(pos[1] + 1, resumed[1] + 1)):
                    v.unjustified_resets += 1
                    v.samples.append(
                        f"{name}: reset ({mark.reason}) skipped {pos[1] + 1}..{resumed[1]},"
                        " which the store still holds"
                    )
            else:  # a new epoch, though the store never went back on the old one
                v.unjustified_resets += 1
                v.samples.append(
                    f"{name}: reset ({mark.reason}) from {pos} to {resumed}: a new epoch,"
                    " though the store lost nothing of the old"
                )
            pos = resumed

    for i in range(len(track.offsets)):
        apply_marks(i)
        epoch = epochs.get(i, epoch)
        offset, seq = track.offsets[i], track.seqs[i]
        if epoch == pos[0]:
            if offset <= pos[1]:
                v.duplicates += 1
                if v.duplicates <= 3:
                    v.samples.append(f"{name}: duplicate offset {offset} (at {pos[1]})")
                continue
            if offset > pos[1] + 1:
                v.gaps += offset - pos[1] - 1
                v.samples.append(f"{name}: silent gap {pos[1] + 1}..{offset - 1} ({epoch})")
        else:
            v.gaps += 1  # another epoch without a reset: what was left of the old is unknown
            v.samples.append(f"{name}: epoch {pos[0]} -> {epoch} without a reset")
        held = truth.log(epoch)
        if held is None:
            v.unverifiable += 1
        elif offset not in held:
            v.phantoms += 1
        elif held[offset] != seq:
            v.substituted += 1
            v.samples.append(
                f"{name}: {epoch}-{offset} carried s={seq}, the store holds s={held[offset]}"
            )
        v.delivered += 1
        pos = (epoch, offset)
    apply_marks(len(track.offsets))
    if pos != truth.last:
        v.not_at_end = 1
        v.behind = truth.head - pos[1] if pos[0] == truth.epoch else truth.head
        v.samples.append(f"{name}: ended at {pos}, the topic's last event is {truth.last}")
    return v


# --------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------


#: About how long each kind of fault takes (a failover waits for the cluster's detection).
TAKES_S = {
    "process_kill": 5.0,
    "master_failover": 12.0,
    "client_cut": 1.5,
    "redis_pause": 2.5,
    "redis_drop": 3.5,
    "master_freeze": 12.0,
}


@dataclass
class Fault:
    kind: str
    at_s: float
    took_s: float
    detail: dict[str, Any]


class Chaos:
    """Draws the faults: every kind once per round, in random order, random gaps between."""

    def __init__(
        self,
        cfg: Config,
        cluster: RedisCluster,
        servers: Servers,
        workers: Sequence[ClientProcess],
        topics: Sequence[str],
        t0: float,
    ) -> None:
        self.cfg = cfg
        self.cluster = cluster
        self.servers = servers
        self.workers = list(workers)
        self.topics = list(topics)
        self.random = random.Random(cfg.seed + 1)
        self.t0 = t0
        self.done: list[Fault] = []
        #: (start, end, kind) of each fault, in time.monotonic().
        self.windows: list[tuple[float, float, str]] = []

    async def run(self, until: float) -> None:
        deck: list[str] = []
        while True:
            await asyncio.sleep(self.random.uniform(*self.cfg.gap_s))
            if not deck:
                deck = list(self.cfg.kinds)
                self.random.shuffle(deck)
            # Only a fault that ends in time (the soak's length is the one asked for).
            left = until - time.monotonic()
            fitting = [k for k in deck if TAKES_S[k] <= left]
            if not fitting:
                return
            kind = fitting[-1]
            deck.remove(kind)
            started = time.monotonic()
            say(f"[{started - self.t0:6.1f} s] fault: {kind}")
            self.servers.timeline.add("chaos", f"{kind} starts")
            logged = self.servers.problem_counts()
            detail = await getattr(self, kind)()
            took = time.monotonic() - started
            self.windows.append((started, time.monotonic(), kind))
            self.servers.timeline.add("chaos", f"{kind} done: {detail}")
            # What the processes logged meanwhile (warnings, errors), per process.
            detail["log_lines"] = [
                b - a for a, b in zip(logged, self.servers.problem_counts(), strict=True)
            ]
            self.done.append(Fault(kind, round(started - self.t0, 1), round(took, 2), detail))
            say(f"[{time.monotonic() - self.t0:6.1f} s]   done in {took:.1f} s: {detail}")

    def _owners(self) -> dict[str, int]:
        """Which node serves each followed topic now (its port)."""
        return {t: self.cluster.master_for(channel_of(t)).port for t in self.topics}

    def _masters(self) -> list[RedisProcess]:
        """The masters serving the followed topics' slots."""
        found = {self.cluster.master_for(channel_of(t)).port: t for t in self.topics}
        return [n for n in self.cluster.nodes if n.port in found]

    async def process_kill(self) -> dict[str, Any]:
        index = self.random.randrange(len(self.servers.procs))
        down = self.random.uniform(*self.cfg.down_s)
        self.servers.kill(index)
        await asyncio.sleep(down)
        ready = await self.servers.restart(index)
        return {"process": index, "down_s": round(down, 2), "ready_s": round(ready, 2)}

    async def master_failover(self) -> dict[str, Any]:
        victim = self.random.choice(await asyncio.to_thread(self._masters))
        before = await asyncio.to_thread(self._owners)
        started = time.monotonic()
        await asyncio.to_thread(self.cluster.fail_master, victim)
        after = await asyncio.to_thread(self._owners)
        failed_over = time.monotonic() - started
        # Back as a replica, in sync, so that a later failover of this shard is possible.
        await asyncio.to_thread(self.cluster.restart, victim)
        await asyncio.to_thread(wait_replica_synced, victim)
        return {
            "node": victim.port,
            "failover_s": round(failed_over, 2),
            "owners": {t: [before[t], after[t]] for t in before if before[t] != after[t]},
        }

    async def client_cut(self) -> dict[str, Any]:
        share = self.random.uniform(*self.cfg.cut_share)
        said = await asyncio.gather(*(w.ask({"cmd": "cut", "share": share}) for w in self.workers))
        await asyncio.sleep(1.0)  # the cuts happen on the next bytes (or within 1 s)
        return {"connections": sum(int(r["cut"]) for r in said), "share": round(share, 2)}

    async def master_freeze(self) -> dict[str, Any]:
        """A master frozen (SIGSTOP) until its replica has taken over, then resumed: it may
        run the writes queued on its sockets, as a master, before it hears that it is one no
        longer; the cluster then drops them (acknowledged writes lost, the case a store that
        "goes back on events" is about)."""
        victim = self.random.choice(await asyncio.to_thread(self._masters))
        topic = next(t for t in self.topics if self.cluster.master_for(channel_of(t)) is victim)
        assert victim.proc is not None
        before = await asyncio.to_thread(self._owners)
        started = time.monotonic()
        victim.proc.send_signal(signal.SIGSTOP)
        self.servers.timeline.add("chaos", f"froze {victim.port}")
        try:
            await asyncio.to_thread(self._wait_promoted, victim, topic)
            self.servers.timeline.add("chaos", f"{topic}'s slot moved off {victim.port}")
        finally:
            frozen = time.monotonic() - started
            victim.proc.send_signal(signal.SIGCONT)
            self.servers.timeline.add("chaos", f"resumed {victim.port}")
        await asyncio.to_thread(wait_replica_synced, victim)
        await asyncio.to_thread(self.cluster.wait_ok)
        after = await asyncio.to_thread(self._owners)
        return {
            "node": victim.port,
            "frozen_s": round(frozen, 2),
            "owners": {t: [before[t], after[t]] for t in before if before[t] != after[t]},
        }

    def _wait_promoted(self, victim: RedisProcess, topic: str, timeout: float = 30.0) -> None:
        """Until a live node serves ``topic``'s slot instead of ``victim``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError, StopIteration):
                live = next(n for n in self.cluster.alive() if n is not victim)
                client: Any = live.client()
                slot = int(client.execute_command("CLUSTER", "KEYSLOT", channel_of(topic)))
                for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
                    if start <= slot <= end and int(master[1]) != victim.port:
                        return
            time.sleep(0.1)
        raise RuntimeError(f"no replica took over from {victim.port}")

    async def redis_pause(self) -> dict[str, Any]:
        victim = self.random.choice(await asyncio.to_thread(self._masters))
        pause = self.random.uniform(*self.cfg.pause_s)
        assert victim.proc is not None
        victim.proc.send_signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(pause)
        finally:
            victim.proc.send_signal(signal.SIGCONT)
        await asyncio.to_thread(self.cluster.wait_ok)
        still_master = victim in await asyncio.to_thread(self._masters)
        return {"node": victim.port, "paused_s": round(pause, 2), "failed_over": not still_master}

    async def redis_drop(self) -> dict[str, Any]:
        index = self.random.randrange(len(self.servers.procs))
        duration = self.random.uniform(*self.cfg.drop_s)
        proc = self.servers.procs[index]
        self.servers.note(proc, f"its Redis connections killed for {duration:.1f} s")
        killed = 0
        until = time.monotonic() + duration
        while time.monotonic() < until:
            killed += await asyncio.to_thread(kill_connections, self.cluster, proc.pid)
            await asyncio.sleep(0.1)
        return {"process": index, "for_s": round(duration, 2), "connections_killed": killed}


def wait_replica_synced(node: RedisProcess, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError):
            info = node.client().info("replication")
            if info.get("role") == "slave" and info.get("master_link_status") == "up":
                return
        time.sleep(0.1)
    raise RuntimeError(f"node {node.port} did not sync as a replica")


def kill_connections(cluster: RedisCluster, pid: int) -> int:
    """``CLIENT KILL`` every connection process ``pid`` holds to a cluster node."""
    nodes = {n.port: n for n in cluster.alive()}
    killed = 0
    try:
        connections = psutil.Process(pid).net_connections("tcp")
    except psutil.Error:
        return 0
    for conn in connections:
        if conn.raddr and conn.raddr.port in nodes and conn.laddr:
            with contextlib.suppress(redis.RedisError):
                node = nodes[conn.raddr.port].client()
                node.client_kill(f"{conn.laddr.ip}:{conn.laddr.port}")
                node.close()
                killed += 1
    return killed


# --------------------------------------------------------------------------------------------
# Client processes
# --------------------------------------------------------------------------------------------
#
# Thousands of Python clients take more than one core, so they run in worker processes
# (``chaos.py --worker``), each with its share of the clients behind its own front proxy; the
# main process (publisher, faults, checks) stays light, and the publishing rate steady.  The
# worker is driven over its stdin/stdout, one JSON document a line; at the end it writes what
# its clients received to a pickle file.


class ClientGroup:
    """A worker's clients: SSE and WebSocket, all through one :class:`FrontProxy`."""

    def __init__(self, setup: dict[str, Any]) -> None:
        self.setup = setup
        self.proxy = FrontProxy(setup["ports"], seed=setup["seed"])
        self.tracks: list[Track] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.ws_clients: list[Client] = []
        self.http = httpx.AsyncClient(
            timeout=20.0, limits=httpx.Limits(max_connections=None, max_keepalive_connections=0)
        )

    async def start(self) -> None:
        setup, proxy = self.setup, await self.proxy.start()
        starts: dict[str, str] = setup["starts"]
        for i, topic in setup["sse"]:
            track = Track("sse", i, topic)
            track.start = track.pos = split_id(starts[topic])
            self.tracks.append(track)
            url = f"{proxy.url}/topics/{topic}"
            self.tasks.append(asyncio.create_task(follow_sse(track, url, starts[topic], self.http)))
        gate = asyncio.Semaphore(50)
        await asyncio.gather(*(self._connect_ws(i, topic, gate) for i, topic in setup["ws"]))
        for track in self.tracks:
            if track.kind == "ws" and track.start != split_id(starts[track.topic]):
                raise RuntimeError(f"ws#{track.index} started at {track.start}")
        async with asyncio.timeout(60):  # every SSE stream open before publishing goes on
            while True:
                if all(t.connects for t in self.tracks):
                    break
                await asyncio.sleep(0.1)

    async def _connect_ws(self, i: int, topic: str, gate: asyncio.Semaphore) -> None:
        track = Track("ws", i, topic)
        self.tracks.append(track)
        url = f"ws://{HOST}:{self.proxy.port}/connection/websocket"
        client = Client(url, proxy=None, min_reconnect_delay=0.1, max_reconnect_delay=2.0)
        self.ws_clients.append(client)
        sub = client.new_subscription(
            topic,
            WSFollower(track),
            positioned=True,
            recoverable=True,
            min_resubscribe_delay=0.1,
            max_resubscribe_delay=2.0,
        )
        async with gate:
            await client.connect()
            await sub.subscribe()
            await sub.ready(30)

    def status(self, targets: dict[str, list[Any]] | None) -> dict[str, Any]:
        at_end = 0
        if targets:
            at_end = sum(1 for t in self.tracks if list(t.pos or ()) == targets[t.topic])
        return {
            "clients": len(self.tracks),
            "at_end": at_end,
            "connections": self.proxy.open_connections,
            "cuts": self.proxy.cuts,
        }

    async def finish(self, path: Path) -> dict[str, Any]:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for client in self.ws_clients:
            with contextlib.suppress(Exception):
                await client.disconnect()
        await self.http.aclose()
        await self.proxy.aclose()
        await asyncio.to_thread(path.write_bytes, pickle.dumps([t.dump() for t in self.tracks]))
        proxy = self.proxy
        return {
            "connections": proxy.connections,
            "per_backend": {str(k): v for k, v in proxy.per_backend.items()},
            "refused": proxy.refused,
            "unplaced": proxy.unplaced,
            "cuts": proxy.cuts,
        }


def _reply(document: dict[str, Any]) -> None:
    sys.stdout.buffer.write(orjson.dumps(document) + b"\n")
    sys.stdout.buffer.flush()


async def serve_worker() -> None:
    """``chaos.py --worker``: a setup line, then commands (cut, status, finish)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    group = ClientGroup(orjson.loads(await reader.readline()))
    await group.start()
    _reply({"ready": True})
    while line := await reader.readline():
        command = orjson.loads(line)
        if command["cmd"] == "cut":
            _reply({"cut": group.proxy.cut(command["share"])})
        elif command["cmd"] == "status":
            _reply(group.status(command.get("targets")))
        elif command["cmd"] == "finish":
            _reply(await group.finish(Path(command["path"])))
            return


class ClientProcess:
    """The main process's handle on one worker."""

    def __init__(self, index: int, setup: dict[str, Any], out: Path) -> None:
        self.index = index
        self.setup = setup
        self.out = out / f"clients-{index}.pickle"
        self.proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(SCRIPT),
            "--worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 24,
        )
        said = await self.ask(self.setup, limit_s=180.0)
        if not said.get("ready"):
            raise RuntimeError(f"client worker {self.index} did not start: {said}")

    async def ask(self, document: dict[str, Any], limit_s: float = 60.0) -> dict[str, Any]:
        proc = self.proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        async with self._lock, asyncio.timeout(limit_s):
            proc.stdin.write(orjson.dumps(document) + b"\n")
            await proc.stdin.drain()
            line = await proc.stdout.readline()
        if not line:
            raise RuntimeError(f"client worker {self.index} exited ({await proc.wait()})")
        answer: dict[str, Any] = orjson.loads(line)
        return answer

    async def finish(self) -> tuple[list[Track], dict[str, Any]]:
        proxy = await self.ask({"cmd": "finish", "path": str(self.out)}, limit_s=120.0)
        assert self.proc is not None
        await self.proc.wait()
        dumped = pickle.loads(await asyncio.to_thread(self.out.read_bytes))
        tracks = [Track.load(data) for data in dumped]
        self.out.unlink()
        return tracks, proxy

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


# --------------------------------------------------------------------------------------------
# The soak
# --------------------------------------------------------------------------------------------


async def mirror_divergence(ports: Sequence[int], truths: dict[str, Truth]) -> dict[str, int]:
    """Entries of each process's history endpoint that differ from what Redis stores."""
    found: dict[str, int] = {}
    async with httpx.AsyncClient(timeout=30.0) as http:
        for port in ports:
            wrong = 0
            for topic, truth in truths.items():
                seen: dict[int, int] = {}
                after: str | None = None
                while True:
                    params = {"limit": "1000", **({"after": after} if after else {})}
                    page = (
                        await http.get(
                            f"http://{HOST}:{port}/topics/{topic}/history", params=params
                        )
                    ).json()
                    for e in page.get("events", []):
                        epoch, offset = split_id(e["id"])
                        seen[offset] = seq_of(e["data"]) if epoch == truth.epoch else -1
                    if len(page.get("events", [])) < 1000:
                        break
                    after = page["events"][-1]["id"]
                wrong += sum(1 for o, s in truth.seqs.items() if seen.get(o) != s)
                wrong += sum(1 for o in seen if o not in truth.seqs)
            found[str(port)] = wrong
    return found


#: A failure this long after a fault ended is still put down to it (clients are reconnecting).
AFTERMATH_S = 5.0


def blame(at: float, windows: Sequence[tuple[float, float, str]]) -> str:
    """The fault under way at ``at`` (or just over), else "no fault"."""
    for start, end, kind in reversed(windows):
        if start <= at <= end + AFTERMATH_S:
            return kind
    return "no fault"


def publisher_report(
    publisher: Publisher, truths: dict[str, Truth], windows: Sequence[tuple[float, float, str]]
) -> dict[str, Any]:
    acked = tries = uncertain = retried = dups = lost = 0
    gave_up: list[str] = []
    failures: Counter[str] = Counter()
    lost_samples: list[str] = []
    for topic, log in publisher.logs.items():
        truth = truths[topic]
        acked += len(log.acked)
        tries += log.tries
        uncertain += log.uncertain
        retried += log.retried
        failures.update(log.failures)
        gave_up += [f"{topic}:{s}" for s in log.gave_up]
        for stored in (truth.seqs, *truth.older.values()):
            counts = Counter(stored.values())
            dups += sum(n - 1 for n in counts.values() if n > 1)
        for seq, event_id in log.acked.items():
            epoch, offset = split_id(event_id)
            held = truth.log(epoch)
            if held is None or held.get(offset) != seq:
                # The store does not hold what it acknowledged: it went back on that epoch.
                lost += 1
                at, port = log.answered.get(seq, (0.0, 0))
                lost_samples.append(
                    f"{topic} s={seq} acked as {event_id} by :{port} at"
                    f" {at - publisher.t0:.2f} s ({blame(at, windows)})"
                )
                truth.went_back.add(epoch)
    return {
        "acked": acked,
        "tries": tries,
        "retried": retried,
        "failures": dict(failures),
        "uncertain_failures": uncertain,
        "publisher_duplicates": dups,
        "acked_but_not_stored": lost,
        "acked_but_not_stored_samples": lost_samples[:20],
        "gave_up": gave_up,
        "failures_by_fault": {
            kind: dict(Counter(what for at, what in publisher.failed if blame(at, windows) == kind))
            for kind in sorted({blame(at, windows) for at, _ in publisher.failed})
        },
    }


async def soak(cfg: Config) -> dict[str, Any]:
    """The whole soak; returns what the JSON records (``verdict`` says whether it passed)."""
    if REDIS_SERVER is None:
        raise RuntimeError("redis-server is not installed")
    wall0 = time.monotonic()
    log_dir = cfg.log_dir or Path(tempfile.mkdtemp(prefix="sluiceway-chaos-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    # Each client: its socket, the proxy's two; the workers inherit the limit.
    raise_nofile(4 * (cfg.sse_clients + cfg.ws_clients) + 1024)
    cluster = SoakCluster()
    servers: Servers | None = None
    publisher: Publisher | None = None
    workers: list[ClientProcess] = []
    watching: asyncio.Task[None] | None = None
    watcher: StoreWatcher | None = None
    try:
        say("starting a Redis Cluster (3 masters, 3 replicas)")
        await asyncio.to_thread(cluster.start)
        topics = await asyncio.to_thread(pick_topics, cluster, cfg.topics)
        servers = Servers(cfg.processes, cluster_url(cluster), log_dir, cfg.history_size)
        say(f"starting {cfg.processes} sluiceway processes; logs in {log_dir}")
        await servers.start()
        publisher = Publisher(servers, topics, cfg.rate, cfg.payload_bytes)
        # A first event per topic: every client starts right after it.
        for topic in topics:
            await publisher.publish_one(topic, deadline=time.monotonic() + 30)
        starts = {t: publisher.logs[t].acked[0] for t in topics}

        say(
            f"connecting {cfg.sse_clients} SSE and {cfg.ws_clients} WebSocket clients"
            f" ({cfg.client_procs} client processes)"
        )
        count = max(1, cfg.client_procs)
        for w in range(count):
            setup = {
                "ports": servers.ports,
                "seed": cfg.seed + 100 + w,
                "starts": starts,
                "sse": [(i, topics[i % len(topics)]) for i in range(w, cfg.sse_clients, count)],
                "ws": [(i, topics[i % len(topics)]) for i in range(w, cfg.ws_clients, count)],
            }
            workers.append(ClientProcess(w, setup, log_dir))
        await asyncio.gather(*(w.start() for w in workers))

        say(
            f"publishing {cfg.rate:g} events/s over {len(topics)} topics;"
            f" faults for {cfg.minutes:g} min"
        )
        t0 = time.monotonic()
        phases = {"setup_s": t0 - wall0}
        # From the first event the clients follow.
        watcher = StoreWatcher(cluster, topics, servers.timeline)
        watcher.start()
        stop_publishing = asyncio.Event()
        publisher.t0 = t0
        publishing = asyncio.create_task(publisher.run(stop_publishing))
        watching = asyncio.create_task(servers.watch())
        chaos = Chaos(cfg, cluster, servers, workers, topics, t0)
        faults = asyncio.create_task(chaos.run(t0 + cfg.minutes * 60))
        while not faults.done():
            await asyncio.wait({faults}, timeout=cfg.progress_s)
            acked = sum(len(log.acked) for log in publisher.logs.values())
            said = await asyncio.gather(*(w.ask({"cmd": "status"}) for w in workers))
            say(
                f"[{time.monotonic() - t0:6.1f} s] published {acked}, faults {len(chaos.done)},"
                f" connections {sum(r['connections'] for r in said)},"
                f" cuts {sum(r['cuts'] for r in said)}"
            )
        await faults  # raises what a fault raised
        say(f"faults over; publishing {cfg.settle_s:g} s more")
        await asyncio.sleep(cfg.settle_s)
        stop_publishing.set()
        await publishing
        publish_s = time.monotonic() - t0
        phases["publishing_s"] = publish_s

        await asyncio.to_thread(watcher.close)
        truths = await asyncio.to_thread(read_truth, cluster, topics, watcher)
        targets = {t: list(truth.last) for t, truth in truths.items()}
        say("waiting for every client to reach the last event of its topic")
        caught_up = time.monotonic()
        deadline = caught_up + cfg.catch_up_s
        while time.monotonic() < deadline:
            said = await asyncio.gather(
                *(w.ask({"cmd": "status", "targets": targets}) for w in workers)
            )
            if all(r["at_end"] == r["clients"] for r in said):
                break
            await asyncio.sleep(0.5)
        caught_up = time.monotonic() - caught_up
        await asyncio.sleep(0.5)  # a late duplicate would arrive now
        tracks: list[Track] = []
        proxies: list[dict[str, Any]] = []
        for worker in workers:
            got, proxy = await worker.finish()
            tracks += got
            proxies.append(proxy)
        divergence = await mirror_divergence(servers.ports, truths)
        checked = time.monotonic()
        exits = servers.stop()
        phases["catch_up_and_checks_s"] = checked - t0 - publish_s
        phases["stop_s"] = time.monotonic() - checked

        # First: acknowledged events the store lost tell which epochs it went back on.
        pub = publisher_report(publisher, truths, chaos.windows)
        mark_phantoms(tracks, truths)
        by_kind = {"sse": Verdict(), "ws": Verdict()}
        for track in sorted(tracks, key=lambda t: (t.kind, t.index)):
            by_kind[track.kind].add(check(track, truths[track.topic]))
        fault_counts = Counter(f.kind for f in chaos.done)
        problems = servers.log_problems()
        servers.timeline.poll(servers.procs)
        servers.timeline.write(log_dir / "timeline.log", t0)
        lost = sum(v.gaps + v.substituted for v in by_kind.values())
        duplicated = sum(v.duplicates for v in by_kind.values())
        not_at_end = sum(v.not_at_end for v in by_kind.values())
        failed = {
            "silent_losses": lost,
            "duplicates": duplicated,
            "clients_not_at_final_event": not_at_end,
            "clients_that_gave_up": sum(v.dead for v in by_kind.values()),
            "unjustified_resets": sum(v.unjustified_resets for v in by_kind.values()),
            "mirror_divergence": sum(divergence.values()),
            "crashes": len(servers.crashes),
            "missing_fault_kinds": [k for k in cfg.kinds if not fault_counts[k]],
        }
        ok = not any(failed.values())
        # Server trouble that lost nothing: reported, not failed on.
        findings = {
            "http_5xx_but_503": sum(
                n
                for what, n in pub["failures"].items()
                if what.startswith("HTTP 5") and what != "HTTP 503"
            ),
            # Publishes refused while no fault was under way (nor had just ended).
            "publish_failures_without_fault": sum(
                pub["failures_by_fault"].get("no fault", {}).values()
            ),
            # A publish with no answer in 10 s: the server hung it (Redis times out in 5 s).
            "publishes_unanswered_10s": pub["failures"].get("ReadTimeout", 0),
            "unclean_exits": [n for n, e in exits.items() if e["code"] != 0],
            "tracebacks": sum(
                p["kinds"].get("Traceback (most recent call last):", 0) for p in problems.values()
            ),
        }
        return {
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
            "topics": topics,
            "log_dir": str(log_dir),
            "verdict": {"ok": ok, **failed},
            "findings": findings,
            "clients": {kind: asdict(v) for kind, v in by_kind.items()},
            "totals": {
                "delivered": sum(v.delivered for v in by_kind.values()),
                "lost": lost,
                "duplicated": duplicated,
                "resets": sum(v.resets for v in by_kind.values()),
                "not_at_end": not_at_end,
            },
            "faults": {
                "counts": dict(fault_counts),
                "list": [asdict(f) for f in chaos.done],
            },
            "publisher": {**pub, "publish_s": round(publish_s, 1)},
            "truth": {
                t: {
                    "epoch": tr.epoch,
                    "head": tr.head,
                    "stored": len(tr.seqs),
                    "earlier_epochs": {e: len(log) for e, log in tr.older.items()},
                    "store_went_back_on": sorted(tr.went_back),
                }
                for t, tr in truths.items()
            },
            "store_went_back": watcher.seen,
            "proxy": {
                **{
                    key: sum(p[key] for p in proxies)
                    for key in ("connections", "refused", "unplaced", "cuts")
                },
                "per_backend": dict(sum((Counter(p["per_backend"]) for p in proxies), Counter())),
            },
            "processes": {
                "restarts": servers.restarts,
                "crashes": servers.crashes,
                "mirror_divergence": divergence,
                "exits": exits,
                "log_problems": problems,
                "log_problems_by_fault": servers.timeline.problems_by_fault(chaos.windows),
            },
            "catch_up_s": round(caught_up, 1),
            "phases": {k: round(v, 1) for k, v in phases.items()},
            "total_wall_s": round(time.monotonic() - wall0, 1),
        }
    finally:
        if watcher is not None:
            await asyncio.to_thread(watcher.close)
        if watching is not None:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
        for worker in workers:
            await worker.kill()
        if publisher is not None:
            await publisher.aclose()
        if servers is not None:
            servers.stop()
        await asyncio.to_thread(cluster.close)


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

CLIENT_TITLES = {"sse": "SSE (sluiceway.client)", "ws": "WebSocket (centrifuge-python)"}


def render(run: dict[str, Any]) -> str:
    rows = []
    for kind, v in run["clients"].items():
        rows.append(
            [
                CLIENT_TITLES[kind],
                fmt(v["delivered"], ","),
                fmt(v["duplicates"]),
                fmt(v["gaps"] + v["substituted"]),
                fmt(v["resets"]),
                fmt(v["reset_skipped"]),
                fmt(v["unjustified_resets"]),
                fmt(v["not_at_end"]),
                fmt(v["connects"], ","),
            ]
        )
    header = [
        "clients",
        "delivered",
        "duplicates",
        "silent gaps",
        "resets",
        "events reset",
        "needless resets",
        "not at last event",
        "(re)connects",
    ]
    lines = md_table(header, rows, right=True)
    faults = run["faults"]["list"]
    fault_rows = []
    for kind in KINDS:
        took = [f["took_s"] for f in faults if f["kind"] == kind]
        if took:
            fault_rows.append(
                [kind, str(len(took)), f"{sum(took) / len(took):.1f}", f"{max(took):.1f}"]
            )
    lines += ["", *md_table(["fault", "survived", "mean s", "max s"], fault_rows, right=True)]
    pub, proc, verdict = run["publisher"], run["processes"], run["verdict"]
    warnings = sum(p["lines"] for p in proc["log_problems"].values())
    lines += [
        "",
        f"publisher: {pub['acked']:,} events acknowledged in {pub['publish_s']} s, "
        f"{pub['retried']} retries ({', '.join(f'{k} {n}' for k, n in pub['failures'].items())}"
        f"), {pub['publisher_duplicates']} publisher duplicates, "
        f"{pub['acked_but_not_stored']} acknowledged but not stored",
        f"store: went back on {sum(len(t['store_went_back_on']) for t in run['truth'].values())}"
        f" epoch(s); clients got {sum(v['phantoms'] for v in run['clients'].values())} events"
        " the store lost afterwards",
        f"processes: {proc['restarts']} restarts, {len(proc['crashes'])} crashes, "
        f"{warnings} warning/error log lines; mirrors diverging from Redis: "
        f"{sum(proc['mirror_divergence'].values())}; proxy cuts {run['proxy']['cuts']}",
        "server trouble (nothing lost): "
        + ", ".join(f"{k} {v}" for k, v in run["findings"].items()),
        "verdict: "
        + (
            "OK"
            if verdict["ok"]
            else "NOT OK " + ", ".join(f"{k} {v}" for k, v in verdict.items() if k != "ok" and v)
        ),
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> tuple[Config, argparse.Namespace]:
    d = Config()
    p = parser(__doc__)
    p.add_argument("--processes", type=int, default=d.processes)
    p.add_argument("--sse-clients", type=int, default=d.sse_clients)
    p.add_argument("--ws-clients", type=int, default=d.ws_clients)
    p.add_argument("--client-procs", type=int, default=d.client_procs, help="client workers")
    p.add_argument("--topics", type=int, default=d.topics)
    p.add_argument("--rate", type=float, default=d.rate, help="events/s over all topics")
    p.add_argument("--minutes", type=float, default=d.minutes, help="how long faults come")
    p.add_argument("--gap", type=float, nargs=2, default=d.gap_s, metavar=("MIN", "MAX"))
    p.add_argument("--faults", default=",".join(d.kinds), help="kinds, comma-separated")
    p.add_argument("--settle", type=float, default=d.settle_s)
    p.add_argument("--catch-up", type=float, default=d.catch_up_s)
    p.add_argument("--seed", type=int, default=None, help="random by default (the JSON says)")
    p.add_argument("--log-dir", type=Path, default=None)
    add_out_argument(p)
    args = p.parse_args(argv)
    kinds = tuple(k.strip() for k in args.faults.split(",") if k.strip())
    for kind in kinds:
        if kind not in KINDS:
            p.error(f"unknown fault {kind!r}")
    cfg = Config(
        processes=args.processes,
        sse_clients=args.sse_clients,
        ws_clients=args.ws_clients,
        client_procs=args.client_procs,
        topics=args.topics,
        rate=args.rate,
        minutes=args.minutes,
        kinds=kinds,
        gap_s=tuple(args.gap),
        settle_s=args.settle,
        catch_up_s=args.catch_up,
        seed=args.seed if args.seed is not None else random.randrange(1 << 30),
        log_dir=args.log_dir,
    )
    return cfg, args


def main(argv: Sequence[str] | None = None) -> int:
    if (argv if argv is not None else sys.argv[1:]) == ["--worker"]:
        uvloop.run(serve_worker())
        return 0
    cfg, args = parse_args(argv)
    started = timestamp()
    run = uvloop.run(soak(cfg))
    machine = machine_info(PACKAGES, after={"redis_server": redis_version()})
    save_results("chaos", started, argv, run.pop("config"), machine, run, render, args.out)
    return 0 if run["verdict"]["ok"] else 1


def redis_version() -> str:
    out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    return out.split("v=", 1)[1].split()[0] if "v=" in out else out.strip()


if __name__ == "__main__":
    raise SystemExit(main())
