"""What the results record about the machine, and this process's own setup (file limit,
pinning)."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import resource
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil

from harness import ROOT, GiB


def cpu_model() -> str:
    """The first ``model name`` of /proc/cpuinfo ("" if there is none)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return ""


def package_versions(packages: Sequence[str]) -> dict[str, str | None]:
    """Installed version of each distribution (None: not installed)."""
    versions: dict[str, str | None] = {}
    for pkg in packages:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    return versions


def git_commit() -> str | None:
    """The short hash of HEAD, or None outside a git checkout."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return commit or None


def src_changes() -> list[str]:
    """``git status --porcelain -- src``: the commit alone does not say what ran when src/
    had uncommitted changes."""
    return subprocess.run(
        ["git", "status", "--porcelain", "--", "src"], cwd=ROOT, capture_output=True, text=True
    ).stdout.splitlines()


def socket_limits() -> dict[str, Any]:
    """The listen backlog cap and this process's file limit (soft, hard)."""
    return {
        "somaxconn": Path("/proc/sys/net/core/somaxconn").read_text().strip(),
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
    }


def machine_info(
    packages: Sequence[str],
    *,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """CPU model and count, memory, kernel, Python, ``before``, the versions of ``packages``,
    the git commit, ``after`` (in that order)."""
    return {
        "cpu_model": cpu_model(),
        "cpus": os.cpu_count(),
        "mem_gib": round(psutil.virtual_memory().total / GiB, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        **(before or {}),
        "versions": package_versions(packages),
        "git_commit": git_commit(),
        **(after or {}),
    }


def raise_nofile(want: int, *, warn: bool = False) -> None:
    """Raise this process's soft RLIMIT_NOFILE to ``want`` (at most the hard limit; processes
    started later inherit it); with ``warn``, say so on stderr when that is not enough."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, want), hard))
    if warn and resource.getrlimit(resource.RLIMIT_NOFILE)[0] < want:
        print(f"warning: RLIMIT_NOFILE {soft}/{hard} below the {want} needed", file=sys.stderr)


def pin_self(cpu: int) -> None:
    """Pin this process (the load generator) to one core, where the machine allows it."""
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {cpu})
