"""The core installs without the server's dependencies (``pip install sluiceway``), and the
extras say what needs them.

The check runs in a fresh interpreter that refuses to import every distribution the core does
not depend on, as if they were not installed, then uses the core for real: a Starlette app
streaming a run and a hub subscription through ``EventStreamResponse``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Import names of what only the extras bring.
NOT_IN_CORE = [
    "redis",
    "sqlalchemy",
    "aiosqlite",
    "jwt",
    "prometheus_client",
    "urlpattern",
    "multipart",
    "python_multipart",
    "uvicorn",
    "uvloop",
    "pydantic_settings",
    "click",
    "fastapi",
]

BLOCK = f"""
import importlib.abc, sys
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {NOT_IN_CORE!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Absent())
"""


def run_without_extras(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def requirement_names(requirements: list[str]) -> set[str]:
    return {r.split(";")[0].split("[")[0].split(">")[0].split("=")[0].strip() for r in requirements}


def test_the_core_depends_on_none_of_the_servers_libraries() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = requirement_names(project["dependencies"])
    server = requirement_names(project["optional-dependencies"]["server"])
    assert core == {"starlette", "pydantic", "orjson", "httpx", "sniffio", "httptools", "jiter"}
    assert {"uvicorn", "redis", "sqlalchemy", "pyjwt", "prometheus-client"} <= server
    assert "redis" in requirement_names(project["optional-dependencies"]["redis"])


def test_the_core_streams_without_the_extras() -> None:
    done = run_without_extras(
        """
        import asyncio, httpx
        from starlette.applications import Starlette
        from starlette.routing import Route
        from sluiceway.asgi import EventStreamResponse
        from sluiceway.hub import Hub
        from sluiceway.runs import Runs, TextDelta, openai_chunks
        from sluiceway.client import EventSource
        import sluiceway.llm.openai_format, sluiceway.runs.sdk

        async def main():
            hub = Hub()
            runs = Runs(hub, family="answer")

            async def answer():
                yield TextDelta("Hello")
                yield TextDelta(" there")

            async def start(request):
                return await runs.respond(answer())

            async def topic(request):
                sub = await hub.subscribe(["news"], from_start=True)
                sub.close(flush=True)  # what is there, then the end
                return EventStreamResponse(sub)

            app = Starlette(routes=[Route("/answers", start, methods=["POST"]),
                                    Route("/news", topic)])
            await hub.publish("news", {"title": "hi"})
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                answer_body = (await client.post("/answers")).text
                news_body = (await client.get("/news")).text
            await runs.aclose()
            await hub.aclose()
            print(repr(answer_body))
            print(repr(news_body))

        asyncio.run(main())
        import sys
        leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("uvicorn", "redis", "jwt"))
        print("leaked", leaked)
        """
    )
    assert done.returncode == 0, done.stderr
    answer, news, leaked = done.stdout.splitlines()
    assert "Hello" in answer and " there" in answer
    assert '{"title":"hi"}' in news
    assert leaked == "leaked []"


def test_the_command_names_the_missing_extra() -> None:
    done = run_without_extras("from sluiceway.cli import main; main()")
    assert done.returncode == 1
    assert 'pip install "sluiceway[server]"' in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("module", ["sluiceway.server", "sluiceway.runs.redis_directory"])
def test_the_extras_modules_say_what_they_need(module: str) -> None:
    done = run_without_extras(f"import {module}")
    assert done.returncode != 0
    assert "ModuleNotFoundError" in done.stderr
