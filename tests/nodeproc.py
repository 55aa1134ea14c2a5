"""Node for the tests that drive npm clients (centrifuge-js, the Vercel AI SDK): found, recent
enough, and with the packages of a test directory installed from its lock file."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def node_with_packages(package_dir: Path, packages: list[str], what: str) -> str:
    """The ``node`` executable, once ``packages`` are installed in ``package_dir`` (``npm ci``
    from its lock file when missing). Skips loudly, naming ``what`` is then not tested, when
    Node or npm is missing or older than 18 (``fetch`` and web streams)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip(
            f"node/npm are NOT installed: {what} is NOT tested "
            "(apt-get install nodejs npm, as .ci/run does)"
        )
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, timeout=30, check=True
    ).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < 18:
        pytest.skip(f"node {version} is too old (18+ needed): {what} is NOT tested")
    if not all((package_dir / "node_modules" / name).is_dir() for name in packages):
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=package_dir,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert result.returncode == 0, f"npm ci failed:\n{result.stdout}\n{result.stderr}"
    return node
