"""``sluiceway.js``, the browser client, under Node's own test runner: its SSE parser against
the WHATWG rules (every chunking, CR/LF/CRLF, BOM, multi-line data, ids, ``retry:``), and its
reconnecting stream and generations against small HTTP servers (``tests/js/``)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
NODE = shutil.which("node")


@pytest.mark.skipif(NODE is None, reason="node is missing: sluiceway.js is NOT tested")
def test_the_browser_client_passes_its_node_tests() -> None:
    assert NODE is not None
    result = subprocess.run(
        [NODE, "--test", "--test-reporter=tap", "tests/js/"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    passed = re.search(r"^# pass (\d+)", output, re.M)
    failed = re.search(r"^# fail (\d+)", output, re.M)
    skipped = re.search(r"^# skipped (\d+)", output, re.M)
    assert passed and int(passed[1]) >= 20, output[-3000:]  # the suite really ran
    assert failed and int(failed[1]) == 0
    assert skipped is None or int(skipped[1]) == 0, "a skipped Node test is not a passing one"
