"""Shared fixtures: real ``sluiceway serve`` processes on free loopback ports."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping

import httpx
import pytest
from serverproc import ServerProcess

StartServer = Callable[..., ServerProcess]


@pytest.fixture
def start_server() -> Iterator[StartServer]:
    """Factory: ``start_server("--keep-latest", "t.*", env={"SLUICEWAY_PING_INTERVAL": "0.3"})``
    starts a server and returns it once ``/healthz`` answers; every server is stopped (SIGTERM,
    then SIGKILL) at teardown."""
    servers: list[ServerProcess] = []

    def start(*args: str, env: Mapping[str, str] | None = None) -> ServerProcess:
        server = ServerProcess(args=list(args), env=dict(env or {}))
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def default_server() -> Iterator[ServerProcess]:
    """One server with default settings for a module's tests that use unique topics."""
    server = ServerProcess().start()
    yield server
    server.stop()


@pytest.fixture
async def client(default_server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=default_server.url, timeout=10.0) as http:
        yield http


@pytest.fixture
def topic(request: pytest.FixtureRequest) -> str:
    """A topic name no other test uses."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)[:60]
    return f"{name}.{uuid.uuid4().hex[:8]}"
