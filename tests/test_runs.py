"""``sluiceway.runs``: any async iterator as a detached run — its events, bounds and ends, and
the HTTP endpoints that serve it (Starlette's ``run_routes`` on a real uvicorn on a loopback
port, in the test's own loop, so that a test can hold a producer at a chosen point).

The examples' apps (``test_examples``) cover the same endpoints through FastAPI and the official
SDKs; the gateway's generations (``test_generations``) are runs too."""

# ruff: noqa: ASYNC109, ASYNC110 - bounded polling of state that has no event to wait on

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import uvicorn
from anthropic.types import RawMessageStreamEvent
from openai.types.chat import ChatCompletionChunk
from openai.types.responses import ResponseStreamEvent
from pydantic import BaseModel, TypeAdapter
from serverproc import HOST, SSEStream, free_port
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sluiceway.hub import Hub
from sluiceway.runs import (
    Finish,
    RunError,
    RunLimits,
    RunRefused,
    Runs,
    RunState,
    TextDelta,
    ToolCallDelta,
    ToolResult,
    Usage,
    run_events,
    run_routes,
)
from sluiceway.sse import Event, Parser


def test_doctests() -> None:
    import doctest

    from sluiceway.hub import core
    from sluiceway.runs import chats, formats, items, limits, run, tools

    for module in (chats, formats, items, limits, run, tools, core):
        assert doctest.testmod(module, raise_on_error=False).failed == 0, module.__name__


def runs_of(**limits: Any) -> Runs:
    return Runs(Hub(), family="task", limits=RunLimits(**limits))


async def events_of(runs: Runs, run_id: str) -> list[tuple[str, Any]]:
    run = await runs.find(run_id)
    assert run is not None
    found = []
    async with asyncio.timeout(10):
        async for kind, data in run_events(runs.hub, run):
            found.append((kind, data))
    return found


class Point(BaseModel):
    x: int
    y: int


@dataclasses.dataclass
class Step:
    name: str


# -- items and ends --------------------------------------------------------------------------


async def test_every_kind_of_item_becomes_an_event_between_start_and_done() -> None:
    runs = runs_of()

    async def produce() -> AsyncIterator[Any]:
        yield Event(data='{"done": 1}', event="progress", id="ignored")
        yield "plain text"
        yield b"bytes \xe2\x98\x83"
        yield {"n": 1}
        yield [1, 2]
        yield Point(x=1, y=2)
        yield Step("fetch")

    run = runs.start(produce(), meta={"job": "demo"})
    events = await events_of(runs, run.id)
    assert events[0] == ("start", {"id": run.id, "created": int(run.created), "job": "demo"})
    assert events[1:-1] == [
        ("progress", {"done": 1}),
        ("message", "plain text"),  # run_events parses JSON data; plain text stays text
        ("message", "bytes ☃"),
        ("message", {"n": 1}),
        ("message", [1, 2]),
        ("message", {"x": 1, "y": 2}),
        ("message", {"name": "fetch"}),
    ]
    kind, done = events[-1]
    assert kind == "done" and done["state"] == "completed" and done["items"] == 7
    assert run.describe()["state"] == "completed"
    await runs.aclose()


async def test_llm_chunks_make_an_answer_with_steps_usage_and_whole_tool_calls() -> None:
    runs = runs_of()

    async def agent() -> AsyncIterator[Any]:
        yield TextDelta("Let me look. ")
        yield ToolCallDelta(0, "call_1", "lookup")
        yield ToolCallDelta(0, arguments='{"q": ')
        yield ToolCallDelta(0, arguments='"x"}')
        yield Usage(10, 5)
        yield Finish("tool_calls")
        yield ToolResult("call_1", {"found": True})
        yield TextDelta("Found it.")
        yield Usage(20, 3)
        yield Finish("stop")

    run = runs.start(agent())
    events = await events_of(runs, run.id)
    kinds = [kind for kind, _ in events]
    assert kinds == [
        "start", "token", "tool_call", "tool_call", "tool_call", "tool_result", "step", "token",
        "done",
    ]  # fmt: skip
    done = events[-1][1]
    assert done["finish_reason"] == "stop" and done["steps"] == 2
    assert done["usage"] == {"prompt_tokens": 30, "completion_tokens": 8, "total_tokens": 38}
    assert done["tool_calls"] == [{"id": "call_1", "name": "lookup", "arguments": '{"q": "x"}'}]
    assert run.describe()["text"] == "Let me look. Found it."
    await runs.aclose()


@pytest.mark.parametrize(
    ("item", "why"),
    [
        (Event(data="x", event="done"), "the run's own"),
        (Event(data="x", event="sluiceway.reset"), "the run's own"),
        (object(), "JSON"),
    ],
)
async def test_an_item_that_cannot_be_an_event_fails_the_run_without_a_traceback(
    item: Any, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    runs = runs_of()

    async def produce() -> AsyncIterator[Any]:
        yield "fine"
        yield item

    run = runs.start(produce())
    events = await events_of(runs, run.id)
    assert events[-1] == (
        "error",
        {"error": "producer_failed", "message": "the run's producer failed"},
    )
    assert run.state is RunState.FAILED
    assert why in caplog.text  # the reason is in the server's log, not on the wire
    await runs.aclose()


async def test_a_run_error_is_shown_and_any_other_exception_is_not() -> None:
    runs = runs_of()

    async def refuses() -> AsyncIterator[str]:
        raise RunError("quota_exceeded", "no tokens left today", status=429)
        yield "never"

    async def crashes() -> AsyncIterator[str]:
        yield "one"
        raise RuntimeError("secret database password in this message")

    refused = runs.start(refuses())
    await refused.opened
    assert isinstance(refused.failure, RunError)
    assert (await events_of(runs, refused.id))[-1] == (
        "error",
        {"error": "quota_exceeded", "message": "no tokens left today"},
    )
    crashed = runs.start(crashes())
    events = await events_of(runs, crashed.id)
    assert crashed.failure is None  # after its first item: in-band only
    assert "secret" not in json.dumps(events)
    await runs.aclose()


# -- bounds ----------------------------------------------------------------------------------


class Producer:
    """A producer that yields every ``interval`` s until stopped, and records its end."""

    def __init__(self, interval: float = 0.01, count: int = 1_000_000) -> None:
        self.interval = interval
        self.count = count
        self.closed = asyncio.Event()
        self.items = 0

    async def __call__(self) -> AsyncIterator[str]:
        try:
            for n in range(self.count):
                await asyncio.sleep(self.interval)
                self.items += 1
                yield f"item {n}"
        finally:
            self.closed.set()


async def ended(run: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        await run.done.wait()


async def test_item_byte_and_time_limits_end_the_run_and_close_the_producer() -> None:
    for limits, state in [
        ({"max_items": 5}, "limit"),
        ({"max_bytes": 30}, "limit"),
        ({"max_duration": 0.2}, "time_limit"),
    ]:
        runs = runs_of(**limits)
        producer = Producer()
        run = runs.start(producer(), background=True)
        await ended(run)
        assert run.state.value == state, limits
        assert producer.closed.is_set()
        events = await events_of(runs, run.id)
        assert events[-1][0] == "done" and events[-1][1]["state"] == state
        if "max_items" in limits:
            assert events[-1][1]["items"] == 5
        await runs.aclose()


async def test_a_producer_silent_past_first_item_timeout_fails_with_timeout() -> None:
    runs = runs_of(first_item_timeout=0.2)
    producer = Producer(interval=5)
    run = runs.start(producer())
    await ended(run)
    assert run.error == ("timeout", "nothing came in 0.2 s") and producer.closed.is_set()
    await runs.aclose()


async def test_concurrency_is_bounded_per_owner_and_in_total() -> None:
    runs = runs_of(max_concurrent=3, max_per_owner=2)
    producers = [Producer(interval=1) for _ in range(4)]
    runs.start(producers[0](), owner="alice", background=True)
    runs.start(producers[1](), owner="alice", background=True)
    with pytest.raises(RunRefused) as refused:
        runs.start(producers[2](), owner="alice")
    assert (refused.value.status, refused.value.code) == (429, "too_many_runs")
    runs.start(producers[2](), owner="bob", background=True)
    with pytest.raises(RunRefused):
        runs.start(producers[3](), owner="carol")  # 3 going in total
    await runs.aclose()
    with pytest.raises(RunRefused) as closing:
        runs.start(Producer()())
    assert closing.value.status == 503


async def test_a_run_nobody_follows_is_abandoned_or_finished_as_told() -> None:
    runs = runs_of(abandon_after=0.3)
    producer = Producer(interval=0.05, count=200)
    run = runs.start(producer())
    await ended(run)
    assert run.state is RunState.ABANDONED and producer.closed.is_set()
    finishing = runs_of(abandon_after=0.1, on_abandon="finish")
    short = Producer(interval=0.05, count=10)
    kept = finishing.start(short())
    await ended(kept)
    assert kept.state is RunState.COMPLETED and short.items == 10
    await runs.aclose()
    await finishing.aclose()


async def test_an_ended_run_is_forgotten_after_its_retention() -> None:
    runs = runs_of(retention=0.3)
    run = runs.start(Producer(count=2)())
    await ended(run)
    assert await runs.find(run.id) is run
    async with asyncio.timeout(5):
        while await runs.find(run.id) is not None:
            await asyncio.sleep(0.05)
    await runs.aclose()


async def test_cancel_is_idempotent_and_shutdown_ends_runs_with_their_last_event() -> None:
    runs = runs_of()
    never = runs.start(Producer()(), background=True)
    assert runs.cancel(never.id) is never  # before its task even began
    await ended(never)
    assert never.state is RunState.CANCELLED
    assert (await events_of(runs, never.id))[-1][1]["state"] == "cancelled"
    producer = Producer()
    run = runs.start(producer(), background=True)
    async with asyncio.timeout(5):
        while not producer.items:
            await asyncio.sleep(0.01)
    assert (await runs.cancel_and_wait(run)).state is RunState.CANCELLED
    assert producer.closed.is_set()  # its finally ran
    assert runs.cancel(run.id) is run and run.state is RunState.CANCELLED
    assert runs.cancel("task_unknown") is None
    other = runs.start(Producer()(), background=True)
    await runs.aclose()
    assert other.state is RunState.SHUTDOWN
    assert (await events_of(runs, other.id))[-1][1]["state"] == "shutdown"


# -- over HTTP: respond and run_routes -------------------------------------------------------


@contextlib.asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """``app`` on a real uvicorn on a loopback port, in this loop."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host=HOST, port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.get_running_loop().create_task(server.serve())
    async with asyncio.timeout(10):
        while not server.started:
            await asyncio.sleep(0.01)
    try:
        yield f"http://{HOST}:{port}"
    finally:
        server.should_exit = True
        await task


def who_is(request: Request) -> str | None:
    return request.headers.get("x-user")  # the test's stand-in for an app's authentication


Producers = dict[str, Callable[[Request], AsyncIterator[Any]]]


def app_of(runs: Runs, producers: Producers) -> Starlette:
    async def start(request: Request) -> Response:
        name = request.path_params["name"]
        format = request.query_params.get("format", "sse")
        chat_id = request.query_params.get("chat")
        return await runs.respond(
            producers[name](request),
            owner=who_is(request),
            format=format,  # type: ignore[arg-type]
            chat_id=chat_id,
            meta={"model": "m1"},
        )

    routes = [Route("/start/{name}", start, methods=["POST"])]
    routes += run_routes(runs, "/tasks", identify=who_is, chats="/api/chat")
    return Starlette(routes=routes, lifespan=runs.lifespan)


async def answer(request: Request) -> AsyncIterator[Any]:
    delay = float(request.query_params.get("delay", "0"))
    for word in ["Hel", "lo", " there"]:
        await asyncio.sleep(delay)
        yield TextDelta(word)
    yield ToolCallDelta(0, "call_9", "search", '{"q":')
    yield ToolCallDelta(0, arguments=' "tea"}')
    yield Usage(7, 4)
    yield Finish("tool_calls")


async def before_first(request: Request) -> AsyncIterator[Any]:
    kind = request.query_params.get("kind")
    if kind == "run_error":
        raise RunError("quota_exceeded", "no tokens left", status=429)
    raise RuntimeError("a secret the client must not see")
    yield "never"


async def slow(request: Request) -> AsyncIterator[Any]:
    for n in range(1000):
        yield {"n": n}
        await asyncio.sleep(0.02)


PRODUCERS: Producers = {"answer": answer, "fail": before_first, "slow": slow}


@pytest.fixture
async def served() -> AsyncIterator[tuple[httpx.AsyncClient, Runs]]:
    runs = Runs(Hub(), family="task", limits=RunLimits(abandon_after=5))
    async with (
        serving(app_of(runs, PRODUCERS)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        yield client, runs


def parse_sse(body: bytes) -> list[Event]:
    return Parser().feed(body)


async def test_an_error_before_the_first_item_is_the_status_in_the_formats_shape(
    served: tuple[httpx.AsyncClient, Runs],
) -> None:
    client, _ = served
    refused = await client.post("/start/fail?kind=run_error")
    assert refused.status_code == 429 and refused.headers["x-run-id"].startswith("task_")
    assert refused.json() == {"error": "quota_exceeded", "detail": "no tokens left"}
    openai = await client.post("/start/fail?kind=run_error&format=openai")
    assert openai.json()["error"]["code"] == "quota_exceeded"
    assert openai.json()["error"]["type"] == "requests" or openai.json()["error"]["type"]
    anthropic = await client.post("/start/fail?kind=run_error&format=anthropic")
    assert anthropic.json() == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "no tokens left"},
    }
    ai_sdk = await client.post("/start/fail?kind=run_error&format=ai-sdk")
    assert ai_sdk.json() == {"error": "quota_exceeded", "detail": "no tokens left"}
    crashed = await client.post("/start/fail")
    assert crashed.status_code == 500
    assert crashed.json() == {"error": "producer_failed", "detail": "the run's producer failed"}
    assert "secret" not in crashed.text


async def test_follow_resumes_after_last_event_id_and_says_204_when_all_was_seen(
    served: tuple[httpx.AsyncClient, Runs],
) -> None:
    client, _ = served
    started = await client.post("/start/answer")
    run_id = started.headers["x-run-id"]
    # Where the stream starts (before the run's first event), then the run's events.
    position, *whole = parse_sse(started.content)
    epoch = whole[0].id.rsplit("-", 1)[0]
    assert (position.event, position.id) == ("sluiceway.position", f"{epoch}-0")
    assert [e.event for e in whole] == ["start", "token", "token", "token", "tool_call",
                                        "tool_call", "done"]  # fmt: skip
    again = await client.get(f"/tasks/{run_id}/events", headers={"last-event-id": whole[2].id})
    assert [e.id for e in parse_sse(again.content)] == [e.id for e in whole[3:]]
    by_query = await client.get(f"/tasks/{run_id}/events", params={"last_event_id": whole[2].id})
    assert parse_sse(by_query.content) == parse_sse(again.content)
    finished = await client.get(f"/tasks/{run_id}/events", headers={"last-event-id": whole[-1].id})
    assert finished.status_code == 204
    described = (await client.get(f"/tasks/{run_id}")).json()
    assert described["state"] == "completed" and described["model"] == "m1"
    assert described["text"] == "Hello there" and described["finish_reason"] == "tool_calls"


@pytest.mark.parametrize(
    ("path", "headers", "status", "code"),
    [
        ("/tasks/{id}/events", {"last-event-id": "not-an-id"}, 400, "invalid_last_event_id"),
        ("/tasks/{id}/events", {"last-event-id": "ffffffff-999"}, 400, "invalid_last_event_id"),
        ("/tasks/{id}/events?format=xml", {}, 400, "invalid_format"),
        (
            "/tasks/{id}/events?format=responses&starting_after=-1",
            {},
            400,
            "invalid_starting_after",
        ),
        (
            "/tasks/{id}/events?format=responses",
            {"last-event-id": "x1"},
            400,
            "invalid_last_event_id",
        ),
        ("/tasks/task_000000000000000000000000/events", {}, 404, "unknown_run"),
        ("/tasks/gen_000000000000000000000000", {}, 404, "unknown_run"),
        ("/tasks/{id}", {"x-user": "mallory"}, 404, "unknown_run"),
    ],
)
async def test_bad_requests_to_the_run_endpoints_are_clear_4xx(
    served: tuple[httpx.AsyncClient, Runs],
    path: str,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    client, _ = served
    started = await client.post("/start/answer", headers={"x-user": "alice"})
    run_id = started.headers["x-run-id"]
    answer = await client.get(path.format(id=run_id), headers={"x-user": "alice", **headers})
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert (error["code"] if isinstance(error, dict) else error) == code  # OpenAI's shape or ours
    # Nothing was lost: the owner still reads the whole run.
    whole = await client.get(f"/tasks/{run_id}/events", headers={"x-user": "alice"})
    assert parse_sse(whole.content)[-1].event == "done"


async def test_only_the_owner_follows_describes_and_cancels_a_run(
    served: tuple[httpx.AsyncClient, Runs],
) -> None:
    client, runs = served
    async with client.stream("POST", "/start/slow", headers={"x-user": "alice"}) as response:
        run_id = response.headers["x-run-id"]
    for user in [{}, {"x-user": "bob"}]:
        assert (await client.get(f"/tasks/{run_id}", headers=user)).status_code == 404
        assert (await client.get(f"/tasks/{run_id}/events", headers=user)).status_code == 404
        assert (await client.post(f"/tasks/{run_id}/cancel", headers=user)).status_code == 404
    run = runs.get(run_id)
    assert run is not None and run.running
    cancelled = await client.post(f"/tasks/{run_id}/cancel", headers={"x-user": "alice"})
    assert cancelled.json() == {"id": run_id, "state": "cancelled"}


async def test_a_follower_sees_the_cancel_from_another_request_as_the_last_event(
    served: tuple[httpx.AsyncClient, Runs],
) -> None:
    client, _ = served
    async with client.stream("POST", "/start/slow") as response:
        run_id = response.headers["x-run-id"]
        stream = SSEStream(response)
        assert (await stream.next_event()).event == "start"
        await stream.next_event()
        assert (await client.post(f"/tasks/{run_id}/cancel")).json()["state"] == "cancelled"
        rest = await stream.until_end()
    assert rest[-1].event == "done" and json.loads(rest[-1].data)["state"] == "cancelled"


async def test_one_run_is_served_in_every_clients_format(
    served: tuple[httpx.AsyncClient, Runs],
) -> None:
    """The same run, as the official SDKs' own types parse it: every chunk validates, the tool
    call's arguments arrive whole, and every block that starts also stops."""
    client, _ = served
    run_id = (await client.post("/start/answer")).headers["x-run-id"]

    async def body(format: str, **params: Any) -> list[Event]:
        answer = await client.get(f"/tasks/{run_id}/events", params={"format": format, **params})
        assert answer.status_code == 200, answer.text
        return parse_sse(answer.content)

    chunks = [e.data for e in await body("openai")]
    assert chunks[-1] == "[DONE]"
    parsed = [ChatCompletionChunk.model_validate_json(data) for data in chunks[:-1]]
    text = "".join(c.choices[0].delta.content or "" for c in parsed if c.choices)
    arguments = "".join(
        call.function.arguments or ""
        for c in parsed
        if c.choices
        for call in c.choices[0].delta.tool_calls or ()
        if call.function is not None
    )
    assert (text, json.loads(arguments)) == ("Hello there", {"q": "tea"})
    assert parsed[-1].choices[0].finish_reason == "tool_calls"

    anthropic = TypeAdapter(RawMessageStreamEvent)
    events = [anthropic.validate_json(e.data) for e in await body("anthropic") if e.event != "ping"]
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert kinds.count("content_block_start") == kinds.count("content_block_stop") == 2

    responses = TypeAdapter(ResponseStreamEvent)
    whole = await body("responses")
    parsed_events = [responses.validate_json(e.data) for e in whole]
    assert parsed_events[-1].type == "response.completed"
    numbers = [e.sequence_number for e in parsed_events]
    assert numbers == list(range(len(numbers)))
    resumed = await body("responses", starting_after=3)
    assert [e.id for e in resumed] == [str(n) for n in numbers[4:]]

    parts = [json.loads(e.data) for e in await body("ai-sdk") if e.data != "[DONE]"]
    types = [part["type"] for part in parts]
    assert types.count("text-start") == types.count("text-end") == 1
    assert types.count("tool-input-start") == types.count("tool-input-available") == 1
    assert types[-1] == "finish"


async def test_a_chat_resumes_its_latest_run_and_stays_with_its_owner(
    served: tuple[httpx.AsyncClient, Runs],
) -> None:
    client, _ = served
    assert (await client.get("/api/chat/c1/stream")).status_code == 204
    alice = {"x-user": "alice"}
    first = await client.post("/start/answer?chat=c1&format=ai-sdk", headers=alice)
    assert first.headers["x-vercel-ai-ui-message-stream"] == "v1"
    resumed = await client.get("/api/chat/c1/stream", headers=alice)
    assert resumed.content == first.content  # the replay is the same stream, from its start
    assert (await client.get("/api/chat/c1/stream", headers={"x-user": "bob"})).status_code == 204
    taken = await client.post("/start/answer?chat=c1&format=ai-sdk", headers={"x-user": "bob"})
    assert taken.status_code == 403 and taken.json()["error"] == "chat_taken"
    gone = await client.post("/api/chat/c2/cancel", headers=alice)
    assert gone.status_code == 404 and gone.json()["error"] == "unknown_chat"
    done = await client.post("/api/chat/c1/cancel", headers=alice)
    assert done.json()["state"] == "completed"  # idempotent: it had ended


async def test_a_refused_run_is_a_429_and_its_producer_never_starts() -> None:
    runs = Runs(Hub(), family="task", limits=RunLimits(max_concurrent=1))
    async with (
        serving(app_of(runs, PRODUCERS)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
        client.stream("POST", "/start/slow"),
    ):
        refused = await client.post("/start/answer")
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"] == "too_many_runs"
