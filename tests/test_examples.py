"""The apps of ``examples/``, each run as its own process (``python examples/<name>.py``, as the
README says), driven over real HTTP as their users' clients would drive them. The official
``openai`` and ``anthropic`` SDKs inside them talk to the fake upstream over real HTTP, so that
"the upstream connection is closed" is measured on the fake's socket, not assumed.

For every example: a client that leaves mid-stream and resumes with ``Last-Event-ID`` gets
every item exactly once; a cancel, from another request or from a second process sharing
Redis, stops the run and closes the upstream within a second; a shutdown mid-run ends every
stream with its format's explicit last event.
"""

# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from anthropic.types import RawMessageStreamEvent
from fake_llm import FAKE_API_KEY, FakeLLM, Script
from openai.types.chat import ChatCompletionChunk
from redisproc import RedisProcess
from serverproc import ServerProcess, SSEStream
from tokens import bearer, mint

from sluiceway.sse import Event, Parser

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SECRET = "examples-test-secret-0123456789abcdef"
#: How soon a cancel must close the upstream connection (the issue's bound).
CANCEL_BOUND = 1.0


@dataclass(frozen=True)
class Example:
    """One example app: where it starts runs, where its run endpoints are, what it asks."""

    name: str
    start: str
    runs: str
    #: The upstream it calls (None: no model at all).
    face: str | None
    #: The format of its ``POST`` response.
    format: str = "sse"
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def script(self) -> str:
        return str(EXAMPLES / f"{self.name}.py")

    def prepare(self, fake: FakeLLM, *, tokens: int, interval: float, stall: bool = False) -> None:
        """Script the fake for one run of ``tokens`` items ``interval`` s apart (``stall``:
        then hold the connection open, sending nothing)."""
        fake.reset()
        words = [f"w{n} " for n in range(tokens)]
        if self.name == "structured":
            text = json.dumps({"title": "Pancakes", "ingredients": words, "steps": ["mix"]})
            words = [text[i : i + 6] for i in range(0, len(text), 6)]
        script = Script(
            tokens=words, token_interval=interval, stall_after=len(words) if stall else None
        )
        if self.name == "agent":
            fake.enqueue(Script(tokens=[], tool_call=("get_weather", '{"city": "Paris"}')))
        fake.script = script

    def request_body(self, rows: int = 60) -> dict[str, Any]:
        if self.name == "progress":
            return {"rows": rows}
        return dict(self.body)


CHAT = {"messages": [{"role": "user", "content": "Say hello"}]}
AI_SDK_CHAT = {
    "id": "chat-1",
    "messages": [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": "Weather?"}]}],
    "trigger": "submit-message",
}
ALL = [
    Example("openai_chat", "/chat", "/answers", "openai", body=CHAT),
    Example("anthropic_chat", "/chat", "/answers", "anthropic", body=CHAT),
    Example("agent", "/api/chat", "/runs", "openai", format="ai-sdk", body=AI_SDK_CHAT),
    Example("structured", "/recipes", "/recipes", "openai", body={"dish": "pancakes"}),
    Example("progress", "/imports", "/imports", None),
]
BY_NAME = {example.name: example for example in ALL}


def example_env(fake: FakeLLM, **extra: str) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": fake.url + "/v1",
        "OPENAI_API_KEY": FAKE_API_KEY,
        "OPENAI_MODEL": "fake-model",
        "ANTHROPIC_BASE_URL": fake.url,
        "ANTHROPIC_API_KEY": FAKE_API_KEY,
        "ANTHROPIC_MODEL": "fake-model",
        "TOKEN_SECRET": SECRET,
        "SECONDS_PER_ROW": "0.02",
        **extra,
    }


def start_example(example: Example, fake: FakeLLM, **env: str) -> ServerProcess:
    return ServerProcess(
        script=example.script, env=example_env(fake, **env), health="/openapi.json"
    ).start()


@pytest.fixture(scope="module")
def apps(fake: FakeLLM) -> Iterator[dict[str, ServerProcess]]:
    """Each example, started on first use and shared by the module's tests."""
    started: dict[str, ServerProcess] = {}
    yield started
    for process in started.values():
        process.stop()


@pytest.fixture(params=ALL, ids=lambda example: example.name)
def example(request: pytest.FixtureRequest) -> Example:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def app(example: Example, apps: dict[str, ServerProcess], fake: FakeLLM) -> ServerProcess:
    return running(apps, example, fake)


def running(apps: dict[str, ServerProcess], example: Example, fake: FakeLLM) -> ServerProcess:
    """The shared process of ``example``, started once (not ``setdefault``: its default is
    evaluated, so a process would be started, and leaked, on every call)."""
    if example.name not in apps:
        apps[example.name] = start_example(example, fake)
    return apps[example.name]


def client_of(process: ServerProcess) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=process.url, timeout=10.0)


@contextlib.asynccontextmanager
async def started(
    client: httpx.AsyncClient,
    example: Example,
    headers: dict[str, str] | None = None,
    rows: int = 60,
) -> AsyncIterator[tuple[str, httpx.Response]]:
    """``POST`` the example's start endpoint; the run's id and the streaming response."""
    payload = example.request_body(rows)
    async with client.stream("POST", example.start, json=payload, headers=headers) as response:
        if response.status_code != 200:
            await response.aread()
        assert response.status_code == 200, response.text
        yield response.headers["x-run-id"], response


@contextlib.asynccontextmanager
async def follow(
    client: httpx.AsyncClient,
    example: Example,
    run_id: str,
    last_event_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> AsyncIterator[SSEStream]:
    all_headers = dict(headers or {})
    if last_event_id is not None:
        all_headers["last-event-id"] = last_event_id
    path = f"{example.runs}/{run_id}/events"
    async with client.stream("GET", path, headers=all_headers) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield SSEStream(response)


async def items_until(stream: SSEStream, count: int, timeout: float = 10.0) -> list[Event]:
    """The events until ``count`` items (events that are not ``start``/``step``) were seen."""
    events: list[Event] = []
    async with asyncio.timeout(timeout):
        while sum(1 for e in events if e.event not in ("start", "step")) < count:
            events.append(await stream.next_event(timeout))
    return events


def payload(event: Event) -> Any:
    return json.loads(event.data)


# -- resume ------------------------------------------------------------------------------


async def test_a_client_that_leaves_resumes_every_item_exactly_once(
    example: Example, app: ServerProcess, fake: FakeLLM
) -> None:
    example.prepare(fake, tokens=30, interval=0.02)
    async with client_of(app) as client:
        async with started(client, example) as (run_id, response):
            assert response.headers["content-type"].startswith("text/event-stream")
        # The client that started it left at once; another one follows, leaves, comes back.
        async with follow(client, example, run_id) as stream:
            seen = await items_until(stream, 5)
        assert seen[0].event == "start" and payload(seen[0])["id"] == run_id
        async with follow(client, example, run_id, last_event_id=seen[-1].id) as stream:
            rest = await stream.until_end(timeout=20)
        async with follow(client, example, run_id) as stream:
            whole = await stream.until_end(timeout=5)
    resumed = seen + rest
    assert [e.id for e in resumed] == [e.id for e in whole]
    assert [(e.event, e.data) for e in resumed] == [(e.event, e.data) for e in whole]
    assert len({e.id for e in whole}) == len(whole)
    assert whole[-1].event == "done" and payload(whole[-1])["state"] == "completed"
    if example.name in ("openai_chat", "anthropic_chat", "agent"):
        text = "".join(payload(e)["text"] for e in whole if e.event == "token")
        assert text == "".join(f"w{n} " for n in range(30))
    if example.name == "agent":
        kinds = [e.event for e in whole]
        assert kinds.index("tool_call") < kinds.index("tool_result") < kinds.index("step")
        result = payload(whole[kinds.index("tool_result")])
        assert result["output"] == {"city": "Paris", "temperature_c": 18, "sky": "clear"}
        second = fake.requests[-1].json["messages"]
        assert second[-1]["role"] == "tool" and json.loads(second[-1]["content"])["city"] == "Paris"
    if example.name == "structured":
        values = [payload(e)["value"] for e in whole if e.event == "partial"]
        assert len(values) >= 2 and values[-1]["ingredients"] == [f"w{n} " for n in range(30)]
    if example.name == "progress":
        progress = [payload(e) for e in whole if e.event == "progress"]
        assert progress[-1] == {"done": 60, "total": 60} and len(progress) == 6
        assert payload(whole[-2]) == {"imported": 60}


# -- cancel ------------------------------------------------------------------------------


async def _cancel_and_measure(
    example: Example,
    fake: FakeLLM,
    starter: ServerProcess,
    canceller: ServerProcess,
) -> None:
    """Start a run on ``starter``, follow it there, cancel it through ``canceller``: the
    upstream socket closes within the bound and the follower's stream ends ``cancelled``."""
    example.prepare(fake, tokens=3, interval=0.01, stall=True)
    closed_before = fake.closed
    async with client_of(starter) as client, client_of(canceller) as other:
        async with started(client, example, rows=100_000) as (run_id, _response):
            pass
        async with follow(client, example, run_id) as stream:
            await items_until(stream, 2)
            if example.face is not None:
                assert fake.wait_open(1, timeout=5)
            began = time.monotonic()
            answer = await other.post(f"{example.runs}/{run_id}/cancel")
            assert answer.status_code == 200, answer.text
            assert answer.json() == {"id": run_id, "state": "cancelled"}
            rest = await stream.until_end(timeout=5)
        assert rest[-1].event == "done" and payload(rest[-1])["state"] == "cancelled"
        if example.face is not None:
            assert await asyncio.to_thread(fake.wait_closed, closed_before + 1, 5)
            assert fake.closed_at[-1] - began < CANCEL_BOUND
        again = await other.post(f"{example.runs}/{run_id}/cancel")  # idempotent
        assert again.json() == {"id": run_id, "state": "cancelled"}
        described = (await other.get(f"{example.runs}/{run_id}")).json()
        assert described["state"] == "cancelled" and described["finish_reason"] == "cancelled"
    if example.name == "progress":
        assert "rolled back" in starter.output()


async def test_a_cancel_from_another_request_closes_the_upstream_within_a_second(
    example: Example, app: ServerProcess, fake: FakeLLM
) -> None:
    await _cancel_and_measure(example, fake, app, app)


@pytest.fixture
def private_redis() -> Iterator[RedisProcess]:
    server = RedisProcess().start()
    yield server
    server.close()


async def test_a_cancel_from_a_second_process_closes_the_upstream_within_a_second(
    example: Example, fake: FakeLLM, private_redis: RedisProcess
) -> None:
    first = start_example(example, fake, REDIS_URL=private_redis.url)
    second = start_example(example, fake, REDIS_URL=private_redis.url)
    try:
        await _cancel_and_measure(example, fake, first, second)
    finally:
        first.stop()
        second.stop()


# -- shutdown ----------------------------------------------------------------------------


async def test_a_shutdown_mid_run_ends_every_stream_with_an_explicit_event(
    example: Example, fake: FakeLLM
) -> None:
    process = start_example(example, fake)
    example.prepare(fake, tokens=3, interval=0.01, stall=True)
    try:
        async with (
            client_of(process) as client,
            started(client, example, rows=100_000) as (run_id, response),
        ):
            head = response.aiter_bytes()
            received = bytearray(await anext(head))
            async with follow(client, example, run_id) as stream:
                await items_until(stream, 2)
                process.signal(signal.SIGTERM)
                rest = await stream.until_end(timeout=10)
            async with asyncio.timeout(10):
                async for chunk in head:
                    received += chunk
        assert rest[-1].event == "done" and payload(rest[-1])["state"] == "shutdown"
        if example.format == "ai-sdk":
            assert b'"type":"abort"' in received and received.endswith(b"data: [DONE]\n\n")
        else:
            assert received.endswith(b"\n\n")
            assert b'event: done\ndata: {"state":"shutdown"' in received
        # uvicorn re-raises the signal once it has shut down cleanly.
        assert process.wait(10) in (0, -signal.SIGTERM)
        assert "Traceback" not in process.output()
        if example.name == "progress":
            assert "rolled back" in process.output()
    finally:
        process.stop()


# -- who may see a run -------------------------------------------------------------------


async def test_only_the_token_subject_that_started_a_run_follows_describes_and_cancels_it(
    apps: dict[str, ServerProcess], fake: FakeLLM
) -> None:
    example = BY_NAME["openai_chat"]
    app = running(apps, example, fake)
    example.prepare(fake, tokens=3, interval=0.01, stall=True)
    alice = bearer(mint(SECRET, sub="alice"))
    bob = bearer(mint(SECRET, sub="bob"))
    async with client_of(app) as client:
        async with started(client, example, headers=alice) as (run_id, _response):
            pass
        for who in [{}, bob]:
            for method, path in [
                ("GET", f"/answers/{run_id}"),
                ("GET", f"/answers/{run_id}/events"),
                ("POST", f"/answers/{run_id}/cancel"),
            ]:
                answer = await client.request(method, path, headers=who)
                assert answer.status_code == 404, (who, path, answer.text)
                assert answer.json()["error"] == "unknown_run"
        assert (await client.get(f"/answers/{run_id}", headers=alice)).json()["state"] == "running"
        for bad in [
            {"authorization": "Bearer not.a.token"},
            bearer(mint("another-secret-0123456789abcdef0123", sub="alice")),
            bearer(mint(SECRET, sub="alice", exp=int(time.time()) - 10)),
            bearer(mint(SECRET)),  # no sub
            {"authorization": "Basic YWxpY2U6eA=="},
        ]:
            refused = await client.get(f"/answers/{run_id}", headers=bad)
            assert refused.status_code == 401, (bad, refused.text)
            assert refused.headers["www-authenticate"].startswith("Bearer")
        cancelled = await client.post(f"/answers/{run_id}/cancel", headers=alice)
        assert cancelled.json()["state"] == "cancelled"


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "shown"),
    [(404, "not_found", "The model does not exist."), (401, "unauthorized", None)],
)
async def test_an_upstream_refusal_before_the_first_token_is_the_endpoints_status(
    apps: dict[str, ServerProcess], fake: FakeLLM, status: int, code: str, shown: str | None
) -> None:
    example = BY_NAME["openai_chat"]
    app = running(apps, example, fake)
    fake.reset()
    fake.script = Script(status=status)
    async with client_of(app) as client:
        answer = await client.post("/chat", json=CHAT)
        in_openai_shape = await client.post("/chat", json={**CHAT, "format": "openai"})
    assert answer.status_code == status, answer.text
    assert answer.json()["error"] == code and answer.headers["x-run-id"].startswith("answer_")
    if shown is not None:
        assert shown in answer.json()["detail"]
    assert FAKE_API_KEY not in answer.text and "Traceback" not in answer.text
    assert in_openai_shape.status_code == status
    assert in_openai_shape.json()["error"]["code"] == code


async def test_an_upstream_failure_after_the_first_token_is_an_error_event(
    apps: dict[str, ServerProcess], fake: FakeLLM
) -> None:
    example = BY_NAME["anthropic_chat"]
    app = running(apps, example, fake)
    fake.reset()
    fake.script = Script(tokens=["a", "b", "c"], error_after=2)
    async with client_of(app) as client:
        answer = await client.post("/chat", json=CHAT)
    position, *events = Parser().feed(answer.content)
    assert position.event == "sluiceway.position"  # where the stream starts, then the run
    assert [e.event for e in events] == ["start", "token", "token", "error"]
    error = payload(events[-1])
    assert error["error"] == "upstream_error" and "Traceback" not in answer.text


async def test_a_producers_refusal_before_its_first_item_is_its_status(
    apps: dict[str, ServerProcess], fake: FakeLLM
) -> None:
    example = BY_NAME["progress"]
    app = running(apps, example, fake)
    async with client_of(app) as client:
        too_large = await client.post("/imports", json={"rows": 200_000})
        bad = await client.post("/imports", json={"rows": "many"})
        not_json = await client.post(
            "/imports", content=b"{", headers={"content-type": "application/json"}
        )
    assert too_large.status_code == 413
    assert too_large.json() == {
        "error": "too_large",
        "detail": "imports of more than 100000 rows need a ticket",
    }
    assert bad.status_code == 422 and not_json.status_code == 422


@pytest.mark.parametrize(
    ("path", "params", "headers", "status"),
    [
        ("/answers/{id}/events", {"format": "xml"}, {}, 422),
        ("/answers/{id}/events", {}, {"last-event-id": "nonsense"}, 400),
        ("/answers/{id}/events", {"format": "responses", "starting_after": "-1"}, {}, 422),
        ("/answers/answer_000000000000000000000000/events", {}, {}, 404),
        ("/answers/../../etc/passwd", {}, {}, 404),
    ],
)
async def test_bad_requests_to_an_apps_run_endpoints_are_clear_4xx(
    apps: dict[str, ServerProcess],
    fake: FakeLLM,
    path: str,
    params: dict[str, str],
    headers: dict[str, str],
    status: int,
) -> None:
    example = BY_NAME["openai_chat"]
    app = running(apps, example, fake)
    example.prepare(fake, tokens=3, interval=0)
    async with client_of(app) as client:
        run_id = (await client.post("/chat", json=CHAT)).headers["x-run-id"]
        answer = await client.get(path.format(id=run_id), params=params, headers=headers)
        assert answer.status_code == status, answer.text
        assert answer.headers["content-type"].startswith("application/json")
        whole = await client.get(f"/answers/{run_id}/events")
    assert Parser().feed(whole.content)[-1].event == "done"  # nothing lost


async def test_the_run_endpoints_are_in_the_apps_openapi_document(
    apps: dict[str, ServerProcess], fake: FakeLLM
) -> None:
    example = BY_NAME["agent"]
    app = running(apps, example, fake)
    async with client_of(app) as client:
        document = (await client.get("/openapi.json")).json()
    paths = document["paths"]
    events = paths["/runs/{run_id}/events"]["get"]
    assert "text/event-stream" in events["responses"]["200"]["content"]
    assert {p["name"] for p in events["parameters"]} >= {"run_id", "format", "Last-Event-ID"}
    assert "post" in paths["/runs/{run_id}/cancel"] and "get" in paths["/runs/{run_id}"]
    assert "get" in paths["/api/chat/{chat_id}/stream"]


# -- real clients ------------------------------------------------------------------------


async def test_the_openai_sdk_reads_a_run_served_in_its_format(
    apps: dict[str, ServerProcess], fake: FakeLLM
) -> None:
    example = BY_NAME["openai_chat"]
    app = running(apps, example, fake)
    example.prepare(fake, tokens=5, interval=0)
    # The app's users send their JWT where the SDK puts its key (Authorization: Bearer).
    client = openai.AsyncOpenAI(base_url=app.url, api_key=mint(SECRET, sub="alice"))
    stream = await client.post(
        "/chat",
        body={**CHAT, "format": "openai"},
        cast_to=ChatCompletionChunk,
        stream=True,
        stream_cls=openai.AsyncStream[ChatCompletionChunk],
    )
    chunks = [chunk async for chunk in stream]
    await client.close()
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(f"w{n} " for n in range(5))
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_the_anthropic_sdk_reads_a_run_served_in_its_format(
    apps: dict[str, ServerProcess], fake: FakeLLM
) -> None:
    example = BY_NAME["anthropic_chat"]
    app = running(apps, example, fake)
    example.prepare(fake, tokens=5, interval=0)
    client = anthropic.AsyncAnthropic(base_url=app.url, auth_token=mint(SECRET, sub="alice"))
    stream = await client.post(
        "/chat",
        body={**CHAT, "format": "anthropic"},
        cast_to=RawMessageStreamEvent,  # type: ignore[arg-type]
        stream=True,
        stream_cls=anthropic.AsyncStream[RawMessageStreamEvent],
    )
    events = [event async for event in stream]
    await client.close()
    text = "".join(
        e.delta.text
        for e in events
        if e.type == "content_block_delta" and e.delta.type == "text_delta"
    )
    assert text == "".join(f"w{n} " for n in range(5))
    assert events[-1].type == "message_stop"


NODE_RUNS = Path(__file__).parent / "node_runs" / "generation_of_an_app.mjs"


def run_node(
    node: str, script: Path, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> dict[str, Any]:
    result = subprocess.run(
        [node, str(script), *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"{result.stderr}\n{result.stdout}"
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    return json.loads(lines[0])  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.skip(
            "node is NOT installed: sluiceway.js and useChat against the examples are NOT tested"
        )
    return found


async def test_sluiceway_js_follows_an_apps_run_across_a_reload_and_stops_it(
    node: str, apps: dict[str, ServerProcess], fake: FakeLLM
) -> None:
    example = BY_NAME["openai_chat"]
    app = running(apps, example, fake)
    options = {
        "body": CHAT,
        "urls": {
            "start": "/chat",
            "events": "/answers/{id}/events",
            "cancel": "/answers/{id}/cancel",
        },
    }
    example.prepare(fake, tokens=20, interval=0.02)
    reloaded = await asyncio.to_thread(
        run_node, node, NODE_RUNS, app.url, "reload", json.dumps(options)
    )
    full = "".join(f"w{n} " for n in range(20))
    assert reloaded["id"].startswith("answer_") and reloaded["resumedId"] == reloaded["id"]
    assert 0 < len(reloaded["textBefore"]) < len(full) and reloaded["text"] == full
    assert reloaded["state"] == "done" and reloaded["end"]["summary"]["state"] == "completed"
    assert reloaded["stored"] is None  # forgotten once done

    example.prepare(fake, tokens=3, interval=0.01, stall=True)
    closed_before = fake.closed
    stopped = await asyncio.to_thread(
        run_node, node, NODE_RUNS, app.url, "stop", json.dumps(options)
    )
    assert stopped["state"] == "cancelled"
    assert await asyncio.to_thread(fake.wait_closed, closed_before + 1, 5)
    async with client_of(app) as client:
        described = (await client.get(f"/answers/{stopped['id']}")).json()
    assert described["state"] == "cancelled"


async def test_use_chat_of_the_ai_sdk_resumes_the_agent_loop(
    apps: dict[str, ServerProcess], fake: FakeLLM
) -> None:
    """``useChat``'s core (npm ``ai``), against examples/agent.py: an answer interrupted mid-way
    and resumed through ``GET /api/chat/{id}/stream`` is the whole agent loop — text, the tool
    call with its arguments whole, the tool's output, the next step's text."""
    from nodeproc import node_with_packages
    from test_ai_sdk_node import NODE_DIR, PACKAGES, SCRIPT

    node_path = node_with_packages(NODE_DIR, PACKAGES, "useChat against examples/agent.py")
    example = BY_NAME["agent"]
    app = running(apps, example, fake)
    for package in PACKAGES:
        example.prepare(fake, tokens=20, interval=0.03)
        chat_id = f"agent-{package}-{time.monotonic_ns()}"
        result = await asyncio.to_thread(
            run_node,
            node_path,
            SCRIPT,
            app.url,
            "interrupt",
            chat_id,
            json.dumps({"stopAfterChars": 6, "prompt": "Weather in Paris?"}),
            cwd=NODE_DIR,
            env={"AI_PACKAGE": package},
        )
        partial, resumed = result["partial"], result["resumed"]
        assert partial["error"] is None and resumed["error"] is None, result
        full = "".join(f"w{n} " for n in range(20))
        assert resumed["text"] == full and len(partial["text"]) < len(full)
        parts = resumed["message"]["parts"]
        tool = next(p for p in parts if p["type"] == "tool-get_weather")
        assert tool["state"] == "output-available" and tool["input"] == {"city": "Paris"}
        assert tool["output"] == {"city": "Paris", "temperature_c": 18, "sky": "clear"}
        assert [p["type"] for p in parts].count("step-start") == 2
        assert resumed["types"][-1] == "finish"
