"""The ``sluiceway`` command as a user meets it."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from serverproc import free_port

SLUICEWAY = [sys.executable, "-m", "sluiceway.cli"]


def start_and_read_stderr(args: list[str], until: str, env: dict[str, str] | None = None) -> str:
    """Start ``sluiceway serve``, read its stderr until ``until`` appears, stop it."""
    proc = subprocess.Popen(
        [*SLUICEWAY, "serve", *args],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **(env or {})},
    )
    seen: list[str] = []
    deadline = time.monotonic() + 20
    try:
        assert proc.stderr is not None
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            seen.append(line)
            if until in line:
                break
    finally:
        proc.terminate()
        proc.wait(10)
    return "".join(seen)


def test_anonymous_publishing_beyond_loopback_warns_loudly() -> None:
    output = start_and_read_stderr(
        ["--host", "0.0.0.0", "--anonymous-publish", "--port", str(free_port())],
        until="Uvicorn running",
    )
    assert "anonymous publishing ON" in output
    assert "Anyone who can reach this address can publish" in output


def test_beyond_loopback_without_key_nobody_may_publish_and_it_says_so() -> None:
    output = start_and_read_stderr(
        ["--host", "0.0.0.0", "--port", str(free_port())], until="Uvicorn running"
    )
    assert "nobody can publish" in output
    assert "anonymous publishing ON" not in output


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--host", "127.0.0.1"], {}),
        (["--host", "0.0.0.0", "--publish-key", "s3cret"], {}),
        (["--host", "0.0.0.0"], {"SLUICEWAY_PUBLISH_KEY": "s3cret"}),
    ],
)
def test_no_warning_on_loopback_or_with_a_key(args: list[str], env: dict[str, str]) -> None:
    output = start_and_read_stderr(
        [*args, "--port", str(free_port())], until="Uvicorn running", env=env
    )
    assert "Uvicorn running" in output
    assert "anonymous publishing ON" not in output
    assert "nobody can publish" not in output


def test_invalid_settings_are_reported_clearly() -> None:
    result = subprocess.run(
        [*SLUICEWAY, "serve"],
        capture_output=True,
        text=True,
        env={**os.environ, "SLUICEWAY_PING_INTERVAL": "-1"},
        timeout=30,
    )
    assert result.returncode == 2
    assert "ping_interval" in result.stderr


def test_help_lists_the_options() -> None:
    result = subprocess.run(
        [*SLUICEWAY, "serve", "--help"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0
    for option in ("--host", "--port", "--publish-key", "--ping-interval", "--keep-latest"):
        assert option in result.stdout


def test_the_installed_uvicorn_supports_the_native_stream_path() -> None:
    # `serve` would fall back to pure ASGI (with a warning) and every "native" test would
    # silently test the ASGI path instead.
    from sluiceway.uvicorn_adapter import http

    assert http.AVAILABLE
