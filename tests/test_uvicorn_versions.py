"""uvicorn is used in one package (``sluiceway.uvicorn_adapter``), some of it private; so its
version is bounded in ``pyproject.toml``, and the native paths are run here against the oldest
and the newest uvicorn of that range: each is installed on its own (``uv pip install
--target``, from uv's cache once fetched) and put first on ``PYTHONPATH`` of a pytest run of
the checks in :data:`NATIVE_CHECKS`, whose servers inherit it. The locked version is what the
rest of the suite runs on.

Skipped, saying so, only when uv is missing or the package index cannot be reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from packaging.requirements import Requirement
from packaging.version import Version
from serverproc import HOST, open_stream
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from sluiceway.asgi import EventStreamResponse, end_streams_on_uvicorn_exit, open_stream_count

ROOT = Path(__file__).resolve().parent.parent

#: The oldest and the newest uvicorn that ``pyproject.toml`` admits, both tested here.
OLDEST = "0.45.0"
NEWEST = "0.55.0"

#: What must work on every supported uvicorn: the native SSE path (served, flow control,
#: the server's headers), the native WebSocket path (connect, subscribe, flow control), a
#: clean shutdown with open streams (``serve``'s server, and the exit hook of users' apps).
NATIVE_CHECKS = [
    "tests/test_cli.py::test_the_installed_uvicorn_supports_the_native_stream_path",
    "tests/test_server_api.py::test_retry_headers_and_reset_in_both_stream_writers[native]",
    "tests/test_streaming.py::test_slow_client_is_cut_off_without_hurting_others[native]",
    "tests/test_streaming.py::test_sigterm_flushes_and_ends_every_stream_cleanly[native]",
    "tests/test_streaming.py::test_sigterm_exit_status_is_zero",
    "tests/test_centrifugo_protocol.py::test_connect_result",
    "tests/test_centrifugo_protocol.py::test_http_publications_reach_websockets_with_the_same_positions",
    "tests/test_centrifugo_protocol.py::test_a_client_that_stops_reading_gets_3008_and_others_are_unaffected",
    "tests/test_centrifugo_protocol.py::test_shutdown_closes_with_3001",
    "tests/test_uvicorn_versions.py::test_end_streams_on_uvicorn_exit_ends_open_streams",
]

#: What uv says when it cannot reach the index (as opposed to a version that does not exist).
UNREACHABLE = re.compile(
    r"failed to fetch|error sending request|dns error|connect(ion)? (refused|error|timed out)"
    r"|network is unreachable|temporary failure in name resolution|offline",
    re.IGNORECASE,
)


def test_uvicorn_is_imported_only_by_its_adapter() -> None:
    """And the adapter imports nothing else of sluiceway: it sits below the packages that use
    it (the exit hook is imported by ``sluiceway.asgi``, which ``sluiceway.server`` uses)."""
    uses_uvicorn = re.compile(r"^\s*(import uvicorn\b|from uvicorn\b)", re.MULTILINE)
    uses_sluiceway = re.compile(r"^\s*(import|from) sluiceway\.(?!uvicorn_adapter\b)", re.MULTILINE)
    package = ROOT / "src" / "sluiceway"
    adapter = package / "uvicorn_adapter"
    outside = [
        str(path.relative_to(ROOT))
        for path in package.rglob("*.py")
        if adapter not in path.parents and uses_uvicorn.search(path.read_text())
    ]
    assert outside == []
    upward = [
        str(path.relative_to(ROOT))
        for path in adapter.rglob("*.py")
        if uses_sluiceway.search(path.read_text())
    ]
    assert upward == []


def test_the_pinned_range_is_the_tested_one() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        lines += extra
    (uvicorn_req,) = {str(r): r for r in map(Requirement, lines) if r.name == "uvicorn"}.values()
    lower = [Version(s.version) for s in uvicorn_req.specifier if s.operator == ">="]
    upper = [Version(s.version) for s in uvicorn_req.specifier if s.operator == "<"]
    newest = Version(NEWEST)
    # From the oldest tested, up to the next minor after the newest tested: any release
    # beyond may change the internals we use.
    assert lower == [Version(OLDEST)], uvicorn_req
    assert upper == [Version(f"{newest.major}.{newest.minor + 1}")], uvicorn_req
    assert uvicorn_req.specifier.contains(uvicorn.__version__)  # the locked one


def uvicorn_under(version: str, target: Path) -> Path:
    """``uvicorn==version`` alone in ``target`` (its dependencies are the environment's)."""
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        pytest.skip(f"uv is not installed: uvicorn {version} is NOT tested")
    command = [uv, "pip", "install", "--quiet", "--no-deps", "--python", sys.executable]
    command += ["--target", str(target), f"uvicorn=={version}"]
    # From uv's cache when it is there; from the index otherwise.
    cached = subprocess.run([*command, "--offline"], capture_output=True, text=True, timeout=60)
    if cached.returncode != 0:
        fetched = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if fetched.returncode != 0:
            if UNREACHABLE.search(fetched.stderr):
                pytest.skip(
                    f"the package index cannot be reached: uvicorn {version} is NOT tested\n"
                    + fetched.stderr
                )
            raise AssertionError(f"uv could not install uvicorn {version}:\n{fetched.stderr}")
    return target


@pytest.mark.parametrize("version", [OLDEST, NEWEST])
def test_native_paths_on_each_supported_uvicorn(
    version: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    target = uvicorn_under(version, tmp_path_factory.mktemp(f"uvicorn-{version}"))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")]),
    }
    imported = subprocess.run(
        [sys.executable, "-c", "import uvicorn; print(uvicorn.__version__)"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert imported.stdout.strip() == version, imported.stderr
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *NATIVE_CHECKS],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, f"uvicorn {version}:\n{run.stdout[-6000:]}\n{run.stderr[-2000:]}"
    assert f"{len(NATIVE_CHECKS)} passed" in run.stdout, run.stdout[-2000:]


# -- the exit hook of users' own apps (one of the NATIVE_CHECKS) -----------------------------


@contextlib.asynccontextmanager
async def uvicorn_serving(
    app: Starlette,
) -> AsyncIterator[tuple[str, uvicorn.Server, asyncio.Task[None]]]:
    """``app`` under a plain ``uvicorn.Server`` in this loop, with no bound on how long its
    shutdown waits for open responses (uvicorn's default)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((HOST, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        yield f"http://{HOST}:{port}", server, task
    finally:
        server.should_exit = True
        server.force_exit = True  # the test failed: don't wait for the stream
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
        sock.close()


async def test_end_streams_on_uvicorn_exit_ends_open_streams() -> None:
    """Without the hook, uvicorn waits for the never-ending stream forever; with it, the
    stream ends cleanly (a complete chunked body) and the server stops."""
    end_streams_on_uvicorn_exit(timeout=2.0)
    end_streams_on_uvicorn_exit(timeout=2.0)  # idempotent

    async def forever() -> AsyncIterator[str]:
        yield "ready"
        await asyncio.Event().wait()

    async def endpoint(request: Request) -> EventStreamResponse:
        return EventStreamResponse(forever(), ping_interval=None)

    app = Starlette(routes=[Route("/stream", endpoint)])  # type: ignore[arg-type]
    async with (
        uvicorn_serving(app) as (url, server, task),
        httpx.AsyncClient(base_url=url, timeout=5) as client,
        open_stream(client, "/stream") as stream,
    ):
        assert (await stream.next_event()).data == "ready"
        server.should_exit = True
        assert await stream.until_end(timeout=5.0) == []
        assert stream.ended
        await asyncio.wait_for(task, 5)  # the server stops by itself
    assert open_stream_count() == 0
