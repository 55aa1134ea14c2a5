"""Fan-out benchmark: sluiceway vs sse-starlette vs the tutorial StreamingResponse pattern.

One run starts each server in turn (pinned to one CPU), drives it from this process (pinned to
another CPU) and prints a markdown table; the full results go to ``bench/results/*.json``.

Phases (each against a freshly started server unless ``--reuse-server``):

* ``idle``       open many subscribers with bounded concurrency; accept time until every
                 subscriber has its response headers, and server RSS per idle subscriber.
* ``throughput`` N subscribers on one topic, publish E events as fast as the server takes them;
                 deliveries/s until the last subscriber has the last event; loss/dup/order check.
* ``latency``    N subscribers, publish at a fixed rate; publish-to-receive latency percentiles.

The load generator is asyncio + uvloop with raw ``asyncio.Protocol`` connections: a hand-written
GET, a minimal status/header parser, chunked decoding, then SSE blocks split on blank lines.
While measuring, a subscriber only stores each read with its arrival time and counts
``data:`` lines; the parsing and checks run after the measured window, so the load generator
costs less per event than any of the servers (its CPU use is reported next to theirs).

    uv run python bench/fanout.py --help
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

import uvloop
from harness.cli import choices, parser
from harness.machine import pin_self, raise_nofile
from harness.procs import UVLOOP_HTTPTOOLS, Proc, sluiceway_command, uvicorn_command
from harness.report import (
    Metric,
    config_of,
    key_of,
    md_table,
    met,
    ratio_table,
    save_results,
    timestamp,
)
from harness.runner import (
    Phase,
    add_run_arguments,
    delivery_status,
    fanout_machine_info,
    fanout_rows,
    idle_window,
    latency_result,
    load_notes,
    rss_cell,
    run_fanout,
    run_servers,
    throughput_result,
    value_cell,
)
from harness.sse import (
    PublishStats,
    Sink,
    Subscriber,
    close_subscribers,
    open_subscribers,
    publish,
)

SERVER_NAMES = ("sluiceway", "sse-starlette", "tutorial")
#: Versions the JSON records.
PACKAGES = ("sluiceway", "uvicorn", "starlette", "sse-starlette", "uvloop", "httptools")


def server_command(name: str, port: int, cpu: int) -> list[str]:
    if name == "sluiceway":
        return sluiceway_command(cpu, port)
    module = {"sse-starlette": "sse_starlette_app", "tutorial": "tutorial_app"}[name]
    return uvicorn_command(
        cpu,
        f"{module}:app",
        port,
        *UVLOOP_HTTPTOOLS,
        "--workers",
        "1",
        "--log-level",
        "warning",
        "--backlog",
        "4096",
    )


# --------------------------------------------------------------------------------------------
# Phases
# --------------------------------------------------------------------------------------------


def opener(srv: Proc, args: argparse.Namespace, topic: str, count: int) -> Callable[[Sink], Any]:
    """Opens `count` subscribers of `topic` into a sink (for the runner)."""
    return lambda sink: open_subscribers(
        srv.port, topic, count, args.connect_concurrency, sink, args.timeout
    )


async def phase_idle(srv: Proc, args: argparse.Namespace) -> dict[str, Any]:
    w = await idle_window(srv, args, opener(srv, args, "idle", args.idle_subscribers))
    n = len(w.conns)
    return {
        "ok": not w.errors and n == args.idle_subscribers and w.still_open == n,
        "subscribers_requested": args.idle_subscribers,
        "subscribers_open": n,
        "still_open_at_rss_sample": w.still_open,
        "connect_concurrency": args.connect_concurrency,
        "connect_errors": len(w.errors),
        "connect_error_samples": sorted(set(w.errors))[:5],
        "accept_s": round(w.accept_s, 3),
        "rss_before_kib": w.rss_before // 1024,
        "rss_after_kib": w.rss_after // 1024,
        "kib_per_subscriber": round((w.rss_after - w.rss_before) / 1024 / n, 2) if n else None,
        "settle_after_connect_s": round(w.quiet_s, 2),
        "machine_before": w.machine,
        "cpu": w.cpu,
    }


async def fanout(
    srv: Proc, args: argparse.Namespace, topic: str, events: int, rate: float | None
) -> tuple[Sink, list[Subscriber], PublishStats, dict[str, Any]]:
    """Subscribe, publish over ``--window`` lanes, wait for delivery."""

    def publisher(stats: PublishStats, stop: Any) -> Any:
        return publish([srv.port], topic, events, args.window, rate, stats, stop)

    return await run_fanout(
        srv, args, events, rate, opener(srv, args, topic, args.subscribers), publisher
    )


async def phase_throughput(srv: Proc, args: argparse.Namespace) -> dict[str, Any]:
    sink, subs, stats, info = await fanout(srv, args, "throughput", args.events, None)
    try:
        # Publisher lane k sends seqs k, k + window, ...: the order the server must keep.
        return throughput_result(sink, subs, stats, info, args, args.window)
    finally:
        await close_subscribers(subs)


async def phase_latency(srv: Proc, args: argparse.Namespace) -> dict[str, Any]:
    events = round(args.latency_rate * args.latency_duration)
    _, subs, stats, info = await fanout(srv, args, "latency", events, args.latency_rate)
    try:
        return latency_result(subs, stats, info, args, events, args.window)
    finally:
        await close_subscribers(subs)


PHASES: dict[str, Phase] = {
    "idle": phase_idle,
    "throughput": phase_throughput,
    "latency": phase_latency,
}


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def cpu_cell(r: dict[str, Any]) -> str:
    """Process CPU: server / load generator."""
    c = r.get("cpu")
    if not c:
        return "-"
    return f"{c['server_cpu_pct']:.0f}% / {c['loadgen_cpu_pct']:.0f}%"


def render_table(results: dict[str, Any], args: argparse.Namespace) -> str:
    names = list(results)

    def get(name: str, phase: str) -> dict[str, Any]:
        return results[name]["phases"].get(phase, {})

    idle_title = (
        f"Idle, {args.idle_subscribers:,} subs ({args.connect_concurrency} connects in flight)"
    )
    idle = [
        ("accept time s", value_cell("accept_s")),
        ("KiB per idle subscriber", value_cell("kib_per_subscriber")),
        ("server RSS before → after, MiB", rss_cell),
        ("status", delivery_status),
    ]
    cpu = ("process CPU server / loadgen", cpu_cell)
    lines = md_table(["metric", *names], fanout_rows(results, args, cpu, idle_title, idle))

    if "sluiceway" in results and len(names) > 1:
        peers = [n for n in names if n != "sluiceway"]
        columns = [("sluiceway", p, p) for p in peers]
        vs = ratio_table("sluiceway vs peer (one run)", columns, RATIOS, get, phases=args.phases)
        lines += ["", *vs]
        ours = results["sluiceway"]["phases"]
        targets = []
        for phase, k, limit, unit in (
            ("latency", "p99_ms", 30, "ms p99"),
            ("idle", "kib_per_subscriber", 10, "KiB per idle subscriber"),
            ("idle", "accept_s", 3, "s accept time"),
        ):
            v = ours.get(phase, {}).get(k)
            if v is not None:
                targets.append(f"{v} {unit} (≤ {limit}: {met(v <= limit)})")
        if targets:
            lines += ["", "sluiceway targets: " + "; ".join(targets)]

    if notes := load_notes(results, names):
        lines += ["", "Warnings: " + "; ".join(notes)]
    lines += [
        "",
        "Process CPU: user+system time of the server process / the load generator, as % of the"
        " measured window. Core busy: the pinned cores (server / load generator) from"
        " /proc/stat, including softirq time, where loopback TCP delivery is accounted.",
    ]
    return "\n".join(lines)


#: The "sluiceway vs peer" table's rows.
RATIOS: list[Metric] = [
    ("throughput (deliveries/s)", "throughput", key_of("deliveries_per_s"), True, "higher"),
    ("latency p99", "latency", key_of("p99_ms"), False, "lower"),
    ("memory per idle subscriber", "idle", key_of("kib_per_subscriber"), False, "smaller"),
    ("accept time", "idle", key_of("accept_s"), False, "faster"),
]


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = parser(__doc__)
    p.add_argument(
        "--servers",
        default=",".join(SERVER_NAMES),
        help="comma-separated subset of: " + ", ".join(SERVER_NAMES),
    )
    p.add_argument(
        "--phases",
        default="idle,throughput,latency",
        help="comma-separated subset of: idle, throughput, latency",
    )
    p.add_argument(
        "--subscribers",
        type=int,
        default=1000,
        help="subscribers in the throughput and latency phases",
    )
    p.add_argument(
        "--events", type=int, default=2000, help="events published in the throughput phase"
    )
    p.add_argument(
        "--window",
        type=int,
        default=8,
        help="publisher keep-alive connections, one request in flight each",
    )
    p.add_argument("--latency-rate", type=float, default=20.0, help="events/s in the latency phase")
    p.add_argument(
        "--latency-duration",
        type=float,
        default=10.0,
        help="seconds of publishing in the latency phase",
    )
    p.add_argument(
        "--idle-subscribers", type=int, default=10_000, help="subscribers in the idle/accept phase"
    )
    p.add_argument(
        "--connect-concurrency", type=int, default=1000, help="connects waiting for headers at once"
    )
    add_run_arguments(p)
    args = p.parse_args(argv)
    args.servers = choices(p, args.servers, SERVER_NAMES, "server")
    args.phases = choices(p, args.phases, PHASES, "phase")
    if args.quick:
        args.subscribers, args.events, args.idle_subscribers = 100, 200, 1000
        args.latency_duration = 3.0
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Many sockets: subscribers here plus, for the servers (inherited), their accepted ends.
    raise_nofile(max(args.idle_subscribers, args.subscribers) + 1024, warn=True)
    pin_self(args.loadgen_cpu)
    started = timestamp()
    run = uvloop.run(run_servers(args, server_command, PHASES, "fanout-logs-"))
    save_results(
        "fanout",
        started,
        argv,
        config_of(args),
        fanout_machine_info(args.server_cpu, args.loadgen_cpu, PACKAGES),
        run,
        lambda doc: render_table(run["results"], args),
        args.out,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
