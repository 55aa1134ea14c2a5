"""Numbers into words: percentiles, table cells, ratios, markdown tables, the results file."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

from harness import ROOT


def percentile(sorted_vals: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` quantile of sorted values (NaN when there are none).

    >>> percentile([1, 2, 3, 4, 5], 0.5), percentile([1, 2, 3, 4], 0.99), percentile([], 0.5)
    (3.0, 4.0, nan)
    """
    if not sorted_vals:
        return float("nan")
    i = min(len(sorted_vals) - 1, max(0, round(q * (len(sorted_vals) - 1))))
    return float(sorted_vals[i])


def latency_summary(samples: Sequence[int]) -> dict[str, Any]:
    """Sample count and p50/p90/p99/max/mean in ms of nanosecond samples.

    >>> latency_summary([3_000_000, 1_000_000, 2_000_000])
    {'samples': 3, 'p50_ms': 2.0, 'p90_ms': 3.0, 'p99_ms': 3.0, 'max_ms': 3.0, 'mean_ms': 2.0}
    """
    lat = sorted(samples)
    ms = 1e6
    return {
        "samples": len(lat),
        "p50_ms": round(percentile(lat, 0.50) / ms, 2),
        "p90_ms": round(percentile(lat, 0.90) / ms, 2),
        "p99_ms": round(percentile(lat, 0.99) / ms, 2),
        "max_ms": round(lat[-1] / ms, 2) if lat else None,
        "mean_ms": round(sum(lat) / len(lat) / ms, 2) if lat else None,
    }


def fmt(v: Any, spec: str = "") -> str:
    """A table cell: "-" for None and NaN.

    >>> fmt(None), fmt(float("nan")), fmt(1234567, ","), fmt(0.5)
    ('-', '-', '1,234,567', '0.5')
    """
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    return format(v, spec) if spec else str(v)


def met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def ratio(ours: Any, theirs: Any, higher_better: bool = True) -> float | None:
    """ours/theirs for a rate, theirs/ours for a cost (above 1: ours is better); None when
    either is missing, zero or negative.

    >>> ratio(300, 100), ratio(2.0, 8.0, higher_better=False), ratio(5, None), ratio(0, 3)
    (3.0, 4.0, None, None)
    """
    if not ours or not theirs or ours <= 0 or theirs <= 0:
        return None
    return float(ours / theirs if higher_better else theirs / ours)


def ratio_cell(
    ours: Any,
    theirs: Any,
    higher_better: bool = True,
    *,
    digits: int = 1,
    word: str = "",
    whole_from: float | None = None,
    missing: str = "-",
) -> str:
    """:func:`ratio` as a cell: ``1.5x``, ``word`` after it; ``missing`` without a ratio.
    From ``whole_from`` on, no decimals.

    >>> ratio_cell(300, 100, word="higher"), ratio_cell(1, 3, digits=2), ratio_cell(None, 1)
    ('3.0x higher', '0.33x', '-')
    >>> ratio_cell(150, 1, whole_from=100)
    '150x'
    """
    r = ratio(ours, theirs, higher_better)
    if r is None:
        return missing
    d = 0 if whole_from is not None and r >= whole_from else digits
    return f"{r:.{d}f}x" + (f" {word}" if word else "")


def md_row(cells: Sequence[str]) -> str:
    """One markdown table row (an empty cell is one space wide).

    >>> md_row(["a", "b"]), md_row(["", "b", ""])
    ('| a | b |', '| | b | |')
    """
    return "|" + "|".join(f" {c} " if c else " " for c in cells) + "|"


def md_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], *, right: bool = False
) -> list[str]:
    """A markdown table's lines: the header, the separator (the first column left-aligned,
    with ``right`` the others right-aligned), the rows.

    >>> md_table(["metric", "x", "y"], [["rate", "1", "2"]], right=True)
    ['| metric | x | y |', '|---|---:|---:|', '| rate | 1 | 2 |']
    """
    sep = "|---|" + ("---:|" if right else "---|") * (len(header) - 1)
    return [md_row(header), sep, *(md_row(r) for r in rows)]


def say(*parts: object) -> None:
    """A line of progress on stderr, at once."""
    print(*parts, file=sys.stderr, flush=True)


def timestamp() -> str:
    """Local time as the results files name it: ``20261124-020838``."""
    return time.strftime("%Y%m%d-%H%M%S")


def config_of(args: argparse.Namespace, skip: Collection[str] = ()) -> dict[str, Any]:
    """The options as the JSON records them (paths as strings)."""
    return {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in skip
    }


def save_results(
    benchmark: str,
    started: str,
    argv: Sequence[str] | None,
    config: dict[str, Any],
    machine: dict[str, Any],
    run: dict[str, Any],
    render: Callable[[dict[str, Any]], str],
    out: Path,
) -> Path:
    """Write ``<out>/<benchmark>-<started>.json`` and print the table, where it went and the
    total time.

    The document is benchmark, started, argv, config, machine, then ``run`` (which holds
    ``total_wall_s``), then ``table_markdown``: ``render`` of the document so far."""
    doc = {
        "benchmark": benchmark,
        "started": started,
        "argv": sys.argv[1:] if argv is None else list(argv),
        "config": config,
        "machine": machine,
        **run,
    }
    table = render(doc)
    doc["table_markdown"] = table
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{benchmark}-{started}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(table)
    print(f"\nresults: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    print(f"total {run['total_wall_s']} s")
    return path


#: A :func:`ratio_table` row: (label, phase, value of the phase's result, higher is better, word).
Metric = tuple[str, str, Callable[[dict[str, Any]], Any], bool, str]


def key_of(key: str) -> Callable[[dict[str, Any]], Any]:
    """A :data:`Metric`'s value: one key of a phase's result."""
    return lambda r: r.get(key)


def ratio_table(
    title: str,
    pairs: Sequence[tuple[str, str, str]],
    metrics: Sequence[Metric],
    get: Callable[[str, str], dict[str, Any]],
    *,
    phases: Collection[str],
    digits: int = 1,
    right: bool = False,
) -> list[str]:
    """A "vs" table: a column per pair ``(ours, theirs, column title)``, a row per metric
    ``(label, phase, value of a phase's result, higher is better, word)`` whose phase ran;
    each cell :func:`ratio_cell` of ``get(ours, phase)`` and ``get(theirs, phase)``.

    >>> res = {"a": {"t": {"rate": 30}}, "b": {"t": {"rate": 10}}}
    >>> rate = ("rate", "t", lambda r: r.get("rate"), True, "higher")
    >>> ratio_table("a vs", [("a", "b", "b")], [rate], lambda n, ph: res[n][ph], phases=["t"])
    ['| a vs | b |', '|---|---|', '| rate | 3.0x higher |']
    """
    rows = [
        [
            label,
            *(
                ratio_cell(value(get(a, phase)), value(get(b, phase)), hb, digits=digits, word=word)
                for a, b, _ in pairs
            ),
        ]
        for label, phase, value, hb, word in metrics
        if phase in phases
    ]
    return md_table([title, *(c for _, _, c in pairs)], rows, right=right)
