"""Shared fixtures: real ``sluiceway serve`` processes on free loopback ports."""

from __future__ import annotations

import compileall
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path

import httpx
import pytest
from fake_llm import FAKE_API_KEY, FakeLLM
from redisproc import REDIS_SERVER, RedisCluster, RedisProcess
from serverproc import ServerProcess

from sluiceway.hub import Hub, HubConfig
from sluiceway.hub.redis_backend import RedisBackend

StartServer = Callable[..., ServerProcess]


def pytest_sessionstart(session: pytest.Session) -> None:
    """Compile the package to bytecode once: the suite starts hundreds of processes (servers,
    CLI commands), and where bytecode is not written (PYTHONDONTWRITEBYTECODE) each would
    compile every module it imports again (the dependencies are compiled when uv installs
    them: ``compile-bytecode`` in pyproject.toml)."""
    compileall.compile_dir(Path(__file__).parent.parent / "src" / "sluiceway", quiet=1)


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


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeLLM]:
    """A fake LLM upstream (OpenAI and Anthropic wire formats) for a module's tests."""
    with FakeLLM(api_key=FAKE_API_KEY) as upstream:
        yield upstream


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisProcess]:
    """One private redis-server for the session (tests use unique topic names)."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed: the Redis backend is NOT tested")
    server = RedisProcess().start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """One private Redis Cluster for the session: three masters, each with a replica."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed: the Redis Cluster backend is NOT tested")
    cluster = RedisCluster().start()
    yield cluster
    cluster.close()


@pytest.fixture(params=["redis", "cluster"])
def shared_redis(request: pytest.FixtureRequest) -> RedisProcess | RedisCluster:
    """Each shared backend in turn: one Redis, then a Redis Cluster (``.url`` for
    ``--backend``; tests use unique names, as the two stay up for the session)."""
    name = "redis_server" if request.param == "redis" else "redis_cluster"
    server: RedisProcess | RedisCluster = request.getfixturevalue(name)
    return server


MakeHub = Callable[..., Awaitable[Hub]]


@pytest.fixture(params=["memory", "redis", "cluster"])
async def make_hub(request: pytest.FixtureRequest) -> AsyncIterator[MakeHub]:
    """``hub = await make_hub(HubConfig(...))``: the same contract, on each backend."""
    hubs: list[Hub] = []
    if request.param == "redis":
        request.getfixturevalue("redis_server").client().flushdb()  # topic names repeat
    elif request.param == "cluster":
        request.getfixturevalue("redis_cluster").flush()

    async def make(config: HubConfig | None = None) -> Hub:
        config = config or HubConfig()
        if request.param == "memory":
            hub = Hub(config)
        else:
            server: RedisProcess | RedisCluster = request.getfixturevalue(
                "redis_server" if request.param == "redis" else "redis_cluster"
            )
            backend = RedisBackend(
                server.url,
                history_size=config.history_size,
                history_ttl=config.history_ttl,
            )
            hub = Hub(config, backend)
            await hub.start()
        hubs.append(hub)
        return hub

    yield make
    for hub in hubs:
        await hub.aclose(0.5)
