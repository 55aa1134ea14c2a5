"""CPU accounting: this process, the processes under test, each core from /proc/stat, and
every other process; quiet-waits before a measured window, and the window itself.

Process CPU (user+system) leaves out softirq time, and on loopback the TCP work of a send
(delivering into the receiver's socket) runs as softirq on the sender's core; so the busy share
of each pinned core, from /proc/stat, is what says who is saturated. Steal (time the hypervisor
gave to someone else) is kept apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import psutil

from harness import DISTURBED_PCT

Ticks = dict[int, list[int]]


class HasCpu(Protocol):
    def cpu_seconds(self) -> float: ...


class HasPidCpu(HasCpu, Protocol):
    @property
    def pid(self) -> int: ...


def loadgen_cpu() -> tuple[float, float]:
    """(user, system) CPU seconds of this process, every thread."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime, ru.ru_stime


def core_ticks() -> Ticks:
    """Per-CPU /proc/stat counters: user nice system idle iowait irq softirq steal ..."""
    out: Ticks = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/stat").read_text().splitlines():
            name, _, rest = line.partition(" ")
            if name.startswith("cpu") and name[3:].isdigit():
                out[int(name[3:])] = [int(x) for x in rest.split()]
    return out


@dataclass
class CoreShare:
    """How one core spent a window, in percent (unrounded)."""

    busy_pct: float  # neither idle, iowait nor steal
    active_pct: float  # neither idle nor iowait (steal counts)
    softirq_pct: float
    steal_pct: float


def core_share(k0: Ticks, k1: Ticks, core: int) -> CoreShare | None:
    """The window between two :func:`core_ticks` readings on ``core`` (None: no such core).

    >>> core_share({0: [0] * 8}, {0: [50, 0, 10, 30, 0, 0, 5, 5]}, 0)
    CoreShare(busy_pct=65.0, active_pct=70.0, softirq_pct=5.0, steal_pct=5.0)
    """
    if core not in k0 or core not in k1:
        return None
    d = [b - a for a, b in zip(k0[core], k1[core], strict=False)]
    total = sum(d[:8]) or 1
    return CoreShare(
        busy_pct=100 * (total - d[3] - d[4] - d[7]) / total,
        active_pct=100 * (total - d[3] - d[4]) / total,
        softirq_pct=100 * d[6] / total,
        steal_pct=100 * d[7] / total,
    )


async def wait_machine_quiet(
    cores: Iterable[int],
    max_s: float,
    limit_pct: float = DISTURBED_PCT,
    *,
    interval: float = 0.5,
    count_steal: bool = True,
) -> dict[str, float]:
    """Wait (bounded) until the benchmark's cores are nearly idle before a measured window.

    The processes under test and this one are idle at that point, so anything busy is someone
    else (on a shared machine: a test run, a build). Each reading spans ``interval`` s; with
    ``count_steal`` steal counts as busy. Returns the wait and the busiest core's last reading.
    """
    cores = list(cores)
    t0 = time.monotonic()
    busy = 100.0
    while True:
        k0 = core_ticks()
        await asyncio.sleep(interval)
        k1 = core_ticks()
        readings = []
        for core in cores:
            if (s := core_share(k0, k1, core)) is not None:
                readings.append(s.active_pct if count_steal else s.busy_pct)
        busy = max(readings, default=0.0)
        if busy < limit_pct or time.monotonic() - t0 >= max_s:
            break
    return {"waited_s": round(time.monotonic() - t0, 1), "busy_pct": round(busy, 1)}


def others_cpu(exclude: Collection[int]) -> dict[int, float]:
    """CPU seconds of every user-space process except ``exclude`` (kernel threads left out:
    on loopback they do our own packet and writeback work)."""
    out: dict[int, float] = {}
    for p in psutil.process_iter(["ppid", "cpu_times"]):
        info = p.info
        if p.pid in exclude or p.pid == 2 or info["ppid"] == 2 or info["cpu_times"] is None:
            continue
        out[p.pid] = info["cpu_times"].user + info["cpu_times"].system
    return out


def others_delta(before: Mapping[int, float], after: Mapping[int, float]) -> float:
    return sum(v - before.get(pid, 0.0) for pid, v in after.items())


def wait_others_quiet(
    procs: Sequence[HasPidCpu], max_s: float, limit_pct: float = DISTURBED_PCT
) -> dict[str, float]:
    """Wait (bounded) until, for a whole second, all other processes together used less than
    ``limit_pct`` of a core and ``procs`` were idle: on a shared 2-core machine a busy
    neighbour moves every number. (Blocking; for callers without an event loop.)"""
    exclude = {os.getpid(), *(p.pid for p in procs)}
    t0 = time.monotonic()
    quiet_samples = 0
    while True:
        o0, s0 = others_cpu(exclude), [p.cpu_seconds() for p in procs]
        time.sleep(0.5)
        others = 100 * others_delta(o0, others_cpu(exclude)) / 0.5
        busy = max((p.cpu_seconds() - c) / 0.5 * 100 for p, c in zip(procs, s0, strict=True))
        quiet_samples = quiet_samples + 1 if others < limit_pct and busy < 5 else 0
        if quiet_samples >= 2 or time.monotonic() - t0 >= max_s:
            return {"waited_s": round(time.monotonic() - t0, 1), "others_pct": round(others, 1)}


@dataclass
class CpuReading:
    """What a :class:`CpuWindow` saw; the ``by_*`` methods lay it out as each JSON has it."""

    wall: float
    procs: dict[str, float]  # CPU seconds of each watched process in the window
    loadgen_user: float
    loadgen_sys: float
    k0: Ticks
    k1: Ticks
    others: float | None  # CPU seconds of every other process, when asked for

    @property
    def loadgen(self) -> float:
        return self.loadgen_user + self.loadgen_sys

    def pct(self, seconds: float) -> float:
        """Seconds of CPU as % of the window (unrounded)."""
        return 100 * seconds / self.wall if self.wall > 0 else float("nan")

    def core(self, core: int) -> CoreShare | None:
        return core_share(self.k0, self.k1, core)

    def by_role(
        self,
        cores: Mapping[str, int],
        *,
        loadgen_split: bool = False,
        core_other: bool = False,
        wall_digits: int = 3,
    ) -> dict[str, float]:
        """``<proc>_cpu_s/_pct``, ``loadgen_*``, then per role (a watched process or
        "loadgen") its pinned core's ``<role>_core_busy/softirq/steal_pct``; with
        ``core_other`` also ``<role>_core_other_pct``, the core's busy share beyond the role's
        own process (another process on the core, or softirq not charged to ours)."""
        res: dict[str, float] = {"wall_s": round(self.wall, wall_digits)}
        for name, s in self.procs.items():
            res[f"{name}_cpu_s"] = round(s, 3)
        res["loadgen_cpu_s"] = round(self.loadgen, 3)
        if loadgen_split:
            res["loadgen_user_s"] = round(self.loadgen_user, 3)
            res["loadgen_sys_s"] = round(self.loadgen_sys, 3)
        for name, s in self.procs.items():
            res[f"{name}_cpu_pct"] = round(self.pct(s), 1)
        res["loadgen_cpu_pct"] = round(self.pct(self.loadgen), 1)
        if self.others is not None:
            res["others_cpu_pct"] = round(self.pct(self.others), 1)
        for role, core in cores.items():
            if (share := self.core(core)) is None:
                continue
            busy = round(share.busy_pct, 1)
            res[f"{role}_core_busy_pct"] = busy
            if core_other:
                res[f"{role}_core_other_pct"] = round(max(0.0, busy - res[f"{role}_cpu_pct"]), 1)
            res[f"{role}_core_softirq_pct"] = round(share.softirq_pct, 1)
            res[f"{role}_core_steal_pct"] = round(share.steal_pct, 1)
        return res

    def by_core(self, cores: Mapping[str, int]) -> dict[str, Any]:
        """``<proc>_cpu_s/_pct`` per process, ``loadgen_*``, then ``core<N>_busy/softirq/
        steal_pct`` per pinned core and ``core<N>_other_pct``: its busy share that none of the
        roles pinned there account for."""
        res: dict[str, Any] = {"wall_s": round(self.wall, 3)}
        for name, s in self.procs.items():
            res[f"{name}_cpu_s"] = round(s, 3)
            res[f"{name}_cpu_pct"] = round(self.pct(s), 1)
        res["loadgen_cpu_s"] = round(self.loadgen, 3)
        res["loadgen_cpu_pct"] = round(self.pct(self.loadgen), 1)
        pinned = sorted(set(cores.values()))
        for core in pinned:
            if (share := self.core(core)) is not None:
                res[f"core{core}_busy_pct"] = round(share.busy_pct, 1)
                res[f"core{core}_softirq_pct"] = round(share.softirq_pct, 1)
                res[f"core{core}_steal_pct"] = round(share.steal_pct, 1)
        for core in pinned:
            ours = sum(res.get(f"{role}_cpu_pct", 0.0) for role, c in cores.items() if c == core)
            if f"core{core}_busy_pct" in res:
                res[f"core{core}_other_pct"] = round(
                    max(0.0, res[f"core{core}_busy_pct"] - ours), 1
                )
        return res

    def by_process(self, pinned: Mapping[str, int], loadgen_core: int) -> dict[str, Any]:
        """``process_pct`` of each process and the load generator, and for every core
        ``cores[N]``: busy, ours (our processes pinned there), other (busy minus ours), other
        minus softirq, softirq, steal."""
        pct: dict[str, float] = {}
        on_core: dict[int, float] = {}
        for name, s in self.procs.items():
            v = self.pct(s)
            pct[name] = round(v, 1)
            on_core[pinned[name]] = on_core.get(pinned[name], 0.0) + v
        lg = self.pct(self.loadgen)
        pct["loadgen"] = round(lg, 1)
        on_core[loadgen_core] = on_core.get(loadgen_core, 0.0) + lg
        cores: dict[str, dict[str, float]] = {}
        for core in sorted(set(on_core) | set(self.k1)):
            if (share := self.core(core)) is None:
                continue
            busy, softirq = share.busy_pct, share.softirq_pct
            ours = on_core.get(core, 0.0)
            cores[str(core)] = {
                "busy_pct": round(busy, 1),
                "ours_pct": round(ours, 1),
                "other_pct": round(max(0.0, busy - ours), 1),
                # Softirq (loopback TCP delivery) is only partly charged to the process in
                # whose context it ran; what is left looks like "other" work but is ours.
                "other_minus_softirq_pct": round(max(0.0, busy - ours - softirq), 1),
                "softirq_pct": round(softirq, 1),
                "steal_pct": round(share.steal_pct, 1),
            }
        return {"wall_s": round(self.wall, 3), "process_pct": pct, "cores": cores}


class CpuWindow:
    """CPU use over a wall-clock window: the watched processes, this process (the load
    generator), every core, and with ``others_exclude`` every user process not in it.

    What is slow to read (the other processes) is read outside the timed span."""

    def __init__(
        self, procs: Mapping[str, HasCpu], *, others_exclude: Collection[int] | None = None
    ) -> None:
        self.procs = dict(procs)
        self.exclude = others_exclude
        self.o0 = others_cpu(others_exclude) if others_exclude is not None else {}
        self.k0 = core_ticks()
        self.c0 = {name: p.cpu_seconds() for name, p in self.procs.items()}
        self.l0 = loadgen_cpu()
        self.t0 = time.monotonic()

    def stop(self) -> CpuReading:
        wall = time.monotonic() - self.t0
        procs = {name: p.cpu_seconds() - self.c0[name] for name, p in self.procs.items()}
        lu, ls = loadgen_cpu()
        k1 = core_ticks()
        others = None
        if self.exclude is not None:
            others = others_delta(self.o0, others_cpu(self.exclude))
        return CpuReading(
            wall=wall,
            procs=procs,
            loadgen_user=lu - self.l0[0],
            loadgen_sys=ls - self.l0[1],
            k0=self.k0,
            k1=k1,
            others=others,
        )
