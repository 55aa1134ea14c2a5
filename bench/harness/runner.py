"""The fan-out runner (``fanout.py``, ``ws_fanout.py``): each server in turn, each phase on a
fresh server, a phase run again when other work disturbed it; and the parts of those phases
and tables the two share. :func:`timed_phase`, :func:`server_proc` and :func:`wait_delivery`
serve the benchmarks with runners of their own too (``llm_gateway.py``, ``redis_fanout.py``).

A benchmark gives the runner a command line per server (``Command``) and its phases
(``Phase``: an async function of the running server and the options that returns the phase's
JSON). The CPU of a phase's window is ``cpu_window``'s layout: ``server_*`` and ``loadgen_*``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import signal
import tempfile
import time
from array import array
from collections.abc import Awaitable, Callable, Collection, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from harness import DISTURBED_PCT
from harness.cli import add_out_argument
from harness.cpu import CpuWindow, wait_machine_quiet
from harness.http import free_port
from harness.machine import machine_info, socket_limits
from harness.procs import Proc, newest_log_tail
from harness.report import fmt, latency_summary, say
from harness.sse import (
    Delivered,
    PublishStats,
    Sink,
    check_delivery,
    close_subscribers,
    finish_publish,
    publish_report,
)

#: (server name, port, cpu) -> its command line.
Command = Callable[[str, int, int], list[str]]
Phase = Callable[[Proc, argparse.Namespace], Awaitable[dict[str, Any]]]


class Conn(Protocol):
    """A subscriber connection as the runner sees it."""

    error: str | None

    def close(self) -> None: ...


C = TypeVar("C", bound=Conn)
#: Opens the subscribers of a phase into the sink: (ready ones, errors, seconds until the last).
Opener = Callable[[Sink], Awaitable[tuple[list[C], list[str], float]]]


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """The options every fan-out benchmark shares: deadlines, a quiet machine, pinning, output
    (``bench/ws_fanout.py`` uses them too)."""
    p.add_argument(
        "--settle",
        type=float,
        default=0.2,
        help="seconds between the last subscribe and the first publish",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=180.0,
        help="deadline for subscribing, and for delivery counted from the first publish",
    )
    p.add_argument(
        "--phase-budget", type=float, default=300.0, help="hard cap on one phase, seconds"
    )
    p.add_argument(
        "--stall",
        type=float,
        default=3.0,
        help="end a phase early when publishing is over and nothing arrived for this long",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=30.0,
        help="before each measured window, wait up to this long for both cores to be idle",
    )
    p.add_argument(
        "--disturbed-retries",
        type=int,
        default=1,
        help="run a phase again (this many times at most) when other processes took"
        f" >= {DISTURBED_PCT:g}%% of a benchmark core during it",
    )
    p.add_argument("--ready-timeout", type=float, default=30.0, help="seconds to wait for /healthz")
    p.add_argument("--server-cpu", type=int, default=0, help="core the servers are pinned to")
    p.add_argument("--loadgen-cpu", type=int, default=1, help="core this process is pinned to")
    p.add_argument(
        "--reuse-server",
        action="store_true",
        help="one server process for all phases instead of a fresh one per phase",
    )
    add_out_argument(p)
    p.add_argument("--quick", action="store_true", help="small counts for a smoke test")


def fanout_machine_info(
    server_cpu: Any,
    loadgen_cpu: int,
    packages: Sequence[str],
    after: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """:func:`harness.machine.machine_info` with the socket limits and the pinning."""
    before = {**socket_limits(), "server_cpu": server_cpu, "loadgen_cpu": loadgen_cpu}
    return machine_info(packages, before=before, after=after)


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------


def cpu_window(srv: Proc, args: argparse.Namespace) -> Callable[[], dict[str, float]]:
    """Start measuring the CPU of the server, of this process and of both pinned cores; the
    function returned ends the window and gives the phase's ``cpu``."""
    window = CpuWindow({"server": srv})
    cores = {"server": args.server_cpu, "loadgen": args.loadgen_cpu}
    return lambda: window.stop().by_role(cores, loadgen_split=True, core_other=True)


async def quiet_cores(args: argparse.Namespace) -> dict[str, float]:
    """Wait (up to ``--quiet-wait``) for the server's and the load generator's cores."""
    return await wait_machine_quiet((args.server_cpu, args.loadgen_cpu), args.quiet_wait)


def disturbance(res: dict[str, Any]) -> float:
    """Largest share of a benchmark core that went to other processes in a phase's window."""
    c = res.get("cpu") or {}
    other: float = max(c.get("server_core_other_pct", 0.0), c.get("loadgen_core_other_pct", 0.0))
    return other


@dataclass
class IdleWindow(Generic[C]):
    """What the idle phase measured (the connections are closed again)."""

    conns: list[C]
    errors: list[str]
    accept_s: float
    rss_before: int
    rss_after: int
    quiet_s: float
    still_open: int
    machine: dict[str, float]
    cpu: dict[str, float]


async def idle_window(srv: Proc, args: argparse.Namespace, open_conns: Opener[C]) -> IdleWindow[C]:
    """Open the idle phase's connections in a measured window; server RSS before and once it
    is quiet again with all of them open."""
    await srv.wait_quiet()
    machine = await quiet_cores(args)
    rss_before = srv.rss_bytes()
    stop_cpu = cpu_window(srv, args)
    conns, errors, accept_s = await open_conns(Sink("idle"))
    cpu = stop_cpu()
    try:
        quiet_s = await srv.wait_quiet()
        await asyncio.sleep(0.5)
        rss_after = srv.rss_bytes()
        still_open = sum(1 for c in conns if not c.error)
    finally:
        await close_subscribers(conns)
    return IdleWindow(
        conns, errors, accept_s, rss_before, rss_after, quiet_s, still_open, machine, cpu
    )


async def wait_delivery(
    sinks: Sequence[Sink], pub: asyncio.Task[None], deadline: float, stall: float
) -> str:
    """Until every subscriber of every sink has every event ("done"); "stalled" when publishing
    is over and nothing arrived for ``stall`` s (a lost event would otherwise cost the whole
    deadline); "timeout" past ``deadline`` s."""
    idle_for, last_reads = 0.0, -1
    try:
        async with asyncio.timeout(deadline):
            while not all(s.all_done.is_set() for s in sinks):
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.25):
                        await asyncio.gather(*(s.all_done.wait() for s in sinks))
                reads = sum(s.reads for s in sinks)
                if pub.done() and reads == last_reads:
                    idle_for += 0.25
                    if idle_for >= stall:
                        return "stalled"
                else:
                    idle_for, last_reads = 0.0, reads
    except TimeoutError:
        return "timeout"
    return "done"


async def run_fanout(
    srv: Proc,
    args: argparse.Namespace,
    events: int,
    rate: float | None,
    open_subs: Opener[C],
    publisher: Callable[[PublishStats, asyncio.Event], Coroutine[Any, Any, None]],
) -> tuple[Sink, list[C], PublishStats, dict[str, Any]]:
    """Subscribe, publish, wait for delivery; returns raw material for the phase report."""
    sink = Sink("lazy", expected=events)
    subs, errors, accept_s = await open_subs(sink)
    info: dict[str, Any] = {
        "subscribers": len(subs),
        "subscribe_errors": len(errors),
        "subscribe_error_samples": sorted(set(errors))[:5],
        "subscribe_s": round(accept_s, 3),
    }
    stats = PublishStats()
    if not subs:
        return sink, subs, stats, info
    # Let the server settle (and finish registering: a registration race shows up as loss).
    await asyncio.sleep(args.settle)
    await srv.wait_quiet(max_s=5)
    info["machine_before"] = await quiet_cores(args)
    stop = asyncio.Event()
    stop_cpu = cpu_window(srv, args)
    pub = asyncio.create_task(publisher(stats, stop))
    deadline = args.timeout + (events / rate if rate else 0)
    outcome = await wait_delivery([sink], pub, deadline, args.stall)
    info["cpu"] = stop_cpu()
    await finish_publish(pub, stats, stop)
    info["timed_out"] = outcome != "done"
    info["outcome"] = outcome
    info["deadline_s"] = deadline
    # Give stragglers (duplicates, late blocks) a moment to show up before checking.
    await asyncio.sleep(0.3)
    return sink, subs, stats, info


class Replayed(Delivered, Protocol):
    """A subscriber that stored its reads during the window and parses them afterwards."""

    def replay(self, latencies: array[int] | None = None) -> None: ...


def throughput_result(
    sink: Sink,
    subs: Sequence[Replayed],
    stats: PublishStats,
    info: dict[str, Any],
    args: argparse.Namespace,
    lanes: int,
    more: Callable[[], Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The throughput phase's JSON from what :func:`run_fanout` returned: every stream parsed
    and checked (``lanes``: see :func:`harness.sse.check_delivery`); deliveries/s from the
    first publish until the last subscriber had the last event, when every one had them all.
    What ``more`` returns, once the streams are parsed, goes before the check."""
    for sub in subs:
        sub.replay()
    delivered = sum(len(s.seqs) for s in subs)
    # Only meaningful when every subscriber got every event.
    complete = not info["timed_out"] and sink.done_count == len(subs) == args.subscribers
    elapsed = (sink.last_done_ns - stats.first_ns) / 1e9 if complete else None
    check = check_delivery(subs, args.events, lanes)
    ok = (
        not info["timed_out"] and check["ok"] and not stats.errors and len(subs) == args.subscribers
    )
    return {
        "ok": ok,
        **info,
        "events": args.events,
        "window": args.window,
        "publish": publish_report(stats, args.events),
        "deliveries_expected": len(subs) * args.events,
        "deliveries_received": delivered,
        "elapsed_s": round(elapsed, 3) if elapsed else None,
        "deliveries_per_s": round(len(subs) * args.events / elapsed) if elapsed else None,
        "subscribers_complete": sink.done_count,
        **(more() if more else {}),
        "check": check,
    }


def latency_result(
    subs: Sequence[Replayed],
    stats: PublishStats,
    info: dict[str, Any],
    args: argparse.Namespace,
    events: int,
    lanes: int,
    *,
    window: bool = False,
) -> dict[str, Any]:
    """The latency phase's JSON from what :func:`run_fanout` returned: every stream parsed
    (a latency sample per event and subscriber) and checked; with ``window`` the publish
    window recorded too."""
    samples: array[int] = array("q")
    for sub in subs:
        sub.replay(samples)
    check = check_delivery(subs, events, lanes)
    return {
        "ok": not info["timed_out"] and check["ok"] and not stats.errors,
        **info,
        "events": events,
        "rate": args.latency_rate,
        **({"window": args.window} if window else {}),
        "publish": publish_report(stats, events),
        **latency_summary(samples),
        "check": check,
    }


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------


def summary_line(phase: str, r: dict[str, Any]) -> str:
    """A phase's result in one line, for the progress on stderr."""
    if "error" in r:
        return f"ERROR {r['error']}"
    if phase == "idle":
        s = f"accept {r['accept_s']} s, {r['kib_per_subscriber']} KiB/sub"
    elif phase == "throughput":
        s = f"{r['deliveries_per_s']} deliveries/s, publish {r['publish']['rate_per_s']}/s"
    else:
        s = f"p50 {r['p50_ms']} ms p99 {r['p99_ms']} ms max {r['max_ms']} ms"
    return s + (", ok" if r.get("ok") else ", NOT OK") + f" cpu {r.get('cpu')}"


async def timed_phase(
    phase: Awaitable[dict[str, Any]], budget_s: float, *, no_gc: bool = True
) -> dict[str, Any]:
    """Await one phase, cut off after ``budget_s``: its result, or ``{"ok": False, "error": ...}``
    when it raised; ``phase_wall_s`` added. With ``no_gc`` the collector is off throughout (no
    collector pauses inside the measured windows)."""
    if no_gc:
        gc.collect()
        gc.disable()
    t0 = time.monotonic()
    try:
        async with asyncio.timeout(budget_s):
            res = await phase
    except Exception as exc:
        res = {"ok": False, "error": repr(exc) or type(exc).__name__}
    finally:
        if no_gc:
            gc.enable()
    res["phase_wall_s"] = round(time.monotonic() - t0, 1)
    return res


def server_proc(name: str, command: Command, cpu: int, log_dir: Path) -> Proc:
    """Server ``name`` (not started yet) on a free port, pinned to ``cpu``, its output in
    ``<log_dir>/<name>-<port>.log``."""
    port = free_port()
    return Proc(
        name, command(name, port, cpu), log_dir / f"{name}-{port}.log", port=port, stop_timeout=3
    )


async def start_server(
    name: str, command: Command, args: argparse.Namespace, log_dir: Path
) -> Proc:
    """Start server ``name`` on a free port pinned to ``--server-cpu``; wait for /healthz."""
    srv = server_proc(name, command, args.server_cpu, log_dir)
    srv.start()
    try:
        srv.ready_s = await srv.wait_ready(args.ready_timeout)
    except BaseException:
        srv.stop()
        raise
    return srv


async def bench_server(
    name: str,
    args: argparse.Namespace,
    log_dir: Path,
    command: Command,
    phases: Mapping[str, Phase],
) -> dict[str, Any]:
    """Every phase of ``args.phases`` against server ``name``."""
    out: dict[str, Any] = {"cmd": command(name, 0, args.server_cpu), "phases": {}}
    srv: Proc | None = None
    logs: list[str] = []

    def stop() -> None:
        nonlocal srv
        if srv is not None:
            srv.stop()
            logs.append(srv.log_tail())
            srv = None

    try:
        attempts: dict[str, int] = {}
        queue = list(args.phases)
        while queue:
            phase = queue.pop(0)
            attempts[phase] = attempts.get(phase, 0) + 1
            if srv is None or not args.reuse_server:
                stop()
                try:
                    srv = await start_server(name, command, args, log_dir)
                except Exception as exc:
                    # A server that will not start will not start for the next phase either.
                    err = f"server start: {exc!r}"
                    for ph in [phase, *queue]:
                        out["phases"][ph] = {"ok": False, "error": err}
                    say(f"  [{name}] {err}")
                    logs.append(newest_log_tail(log_dir, name))
                    break
                out["cmd"] = srv.cmd
            say(f"  [{name}] {phase} ...")
            res = await timed_phase(phases[phase](srv, args), args.phase_budget)
            if not srv.alive():
                res["ok"] = False
                res["error"] = f"server exited with code {srv.returncode}"
            say(f"  [{name}] {phase}: {summary_line(phase, res)}")
            other = disturbance(res)
            if other >= DISTURBED_PCT and attempts[phase] <= args.disturbed_retries:
                # Someone else used a benchmark core during the window: measure again.
                say(f"  [{name}] {phase}: {other}% of a core went to other work, running it again")
                disturbed = out.setdefault("disturbed_attempts", {}).setdefault(phase, [])
                disturbed.append(res)
                queue.insert(0, phase)
                if not args.reuse_server:
                    stop()
                continue
            res["attempt"] = attempts[phase]
            out["phases"][phase] = res
            if not res.get("ok"):
                stop()  # start clean for the next phase
    finally:
        stop()
        out["log_tails"] = [t for t in logs if t]
    return out


async def run_servers(
    args: argparse.Namespace,
    command: Command,
    phases: Mapping[str, Phase],
    log_prefix: str,
    *,
    sigterm: bool = False,
) -> dict[str, Any]:
    """:func:`bench_server` for each of ``args.servers``, one after another. With ``sigterm``,
    SIGTERM cancels the run, so that the server started last is stopped too (each has a
    session of its own and would outlive this process)."""
    if sigterm:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    log_dir = Path(tempfile.mkdtemp(prefix=log_prefix))
    results: dict[str, Any] = {}
    t0 = time.monotonic()
    for name in args.servers:
        say(f"== {name}")
        results[name] = await bench_server(name, args, log_dir, command, phases)
    say(f"server logs in {log_dir}")
    return {"results": results, "total_wall_s": round(time.monotonic() - t0, 1)}


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------


#: A cell of a table: what it shows of one phase's result.
Cell = Callable[[dict[str, Any]], str]


def value_cell(key: str, spec: str = "") -> Cell:
    """A cell: one key of a phase's result (:func:`harness.report.fmt` with ``spec``)."""
    return lambda r: fmt(r.get(key), spec)


def publish_rate_cell(r: dict[str, Any]) -> str:
    """The publish rate reached, events/s."""
    return fmt(r.get("publish", {}).get("rate_per_s"), ",.0f")


def fanout_rows(
    results: dict[str, Any],
    args: argparse.Namespace,
    cpu: tuple[str, Cell],
    idle_title: str,
    idle: Sequence[tuple[str, Cell]],
    per_event: Sequence[tuple[str, Cell]] = (),
) -> list[list[str]]:
    """The main table's rows, a column per server: a block per phase that ran (throughput,
    latency, idle), each row ``"<title>: <label>"``. After the throughput phase's publish rate
    come the ``per_event`` rows; the idle phase's rows are ``idle``; every block ends with the
    ``cpu`` row and the busy share of both cores."""

    def block(phase: str, title: str, cells: Sequence[tuple[str, Cell]]) -> list[list[str]]:
        cells = [*cells, cpu, ("core busy server / loadgen", core_cell)]
        return [
            [f"{title}: {label}", *(cell(results[n]["phases"].get(phase, {})) for n in results)]
            for label, cell in cells
        ]

    rows = []
    if "throughput" in args.phases:
        title = f"Throughput, {args.subscribers:,} subs x {args.events:,} events"
        cells = [
            ("deliveries/s", value_cell("deliveries_per_s", ",")),
            ("elapsed s", value_cell("elapsed_s")),
            ("publish rate, events/s", publish_rate_cell),
            *per_event,
            ("loss / dup / order", delivery_status),
        ]
        rows += block("throughput", title, cells)
    if "latency" in args.phases:
        title = (
            f"Latency, {args.subscribers:,} subs, "
            f"{args.latency_rate:g} ev/s x {args.latency_duration:g} s"
        )
        cells = [
            ("p50 ms", value_cell("p50_ms")),
            ("p99 ms", value_cell("p99_ms")),
            ("max ms", value_cell("max_ms")),
            ("loss / dup / order", delivery_status),
        ]
        rows += block("latency", title, cells)
    if "idle" in args.phases:
        rows += block("idle", idle_title, idle)
    return rows


def delivery_status(r: dict[str, Any]) -> str:
    """A phase's outcome as a cell: ok, FAILED (why) or NOT OK (the check's counts)."""
    if not r:
        return "not run"
    if "error" in r:
        return f"**FAILED**: {r['error'][:100]}"
    if r.get("ok"):
        return "ok"
    c = r.get("check", {})
    keys = ("missing", "duplicates", "unexpected", "order_violations", "malformed_blocks")
    bits = [f"{k}={c[k]}" for k in keys if c.get(k)]
    if r.get("timed_out"):
        bits.insert(0, r.get("outcome", "timeout"))
    if errs := r.get("connect_errors") or r.get("subscribe_errors"):
        bits.append(f"connect errors={errs}")
    if c.get("unexpected_closes"):
        bits.append(f"closed by server={c['unexpected_closes']}")
    if r.get("publish", {}).get("errors"):
        bits.append(f"publish errors={r['publish']['errors']}")
    if samples := r.get("error_samples"):
        bits.append(f"e.g. {samples[0][:80]}")
    return "**NOT OK**: " + (", ".join(bits) or "see JSON")


def core_cell(r: dict[str, Any]) -> str:
    """Busy share of the server's / the load generator's core."""
    c = r.get("cpu")
    if not c or "server_core_busy_pct" not in c:
        return "-"
    return f"{c['server_core_busy_pct']:.0f}% / {c['loadgen_core_busy_pct']:.0f}%"


def rss_cell(r: dict[str, Any]) -> str:
    """The idle phase's server RSS before → after, MiB."""
    if "rss_after_kib" not in r:
        return "-"
    return f"{r['rss_before_kib'] / 1024:.0f} → {r['rss_after_kib'] / 1024:.0f}"


def load_notes(results: dict[str, Any], names: Collection[str]) -> list[str]:
    """Warnings: a load-generator-bound phase, one disturbed by other work, hypervisor steal."""
    notes = []
    for n in names:
        for phase, r in results[n]["phases"].items():
            c = r.get("cpu")
            if not c:
                continue
            lg = c.get("loadgen_core_busy_pct", c["loadgen_cpu_pct"])
            sv = c.get("server_core_busy_pct", c["server_cpu_pct"])
            if lg >= 90 and lg >= sv:
                notes.append(
                    f"{n}/{phase}: load generator core {lg}% busy (server core {sv}%),"
                    " result may be load-generator-bound"
                )
            other = disturbance(r)
            if other >= DISTURBED_PCT:
                notes.append(
                    f"{n}/{phase}: up to {other}% of a benchmark core went to other work"
                    " (see *_core_other_pct in the JSON), numbers are disturbed"
                )
            if c.get("server_core_steal_pct", 0) + c.get("loadgen_core_steal_pct", 0) >= 5:
                notes.append(f"{n}/{phase}: hypervisor steal >= 5%, numbers are noisy")
    return notes
