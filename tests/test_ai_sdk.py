"""The Vercel AI SDK's UI message stream (``POST /api/chat``): the sans-I/O encoder and body
parser, then the wire of a real ``sluiceway serve`` in front of the fake upstream (and of the
embedded local model).  ``test_ai_sdk_node.py`` consumes the same streams with the SDK itself."""

from __future__ import annotations

import asyncio
import doctest
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest
from conftest import StartServer
from fake_llm import FakeLLM, Script
from serverproc import ServerProcess, SSEStream
from test_generations import API_KEY, llm_env

from sluiceway.llm import ai_sdk_format
from sluiceway.llm.ai_sdk_format import (
    DONE,
    BadRequest,
    UIMessageEncoder,
    parse_chat_request,
)
from sluiceway.llm.providers import local
from sluiceway.runs.chats import ChatIndex

# -- sans-I/O --------------------------------------------------------------------------------


def user(text: str, **extra: Any) -> dict[str, Any]:
    return {"id": "u", "role": "user", "parts": [{"type": "text", "text": text}], **extra}


def chat_body(chat_id: str, text: str = "Say hello", **extra: Any) -> dict[str, Any]:
    """What DefaultChatTransport posts for ``sendMessage({text})``."""
    return {
        "id": chat_id,
        "messages": [user(text)],
        "trigger": "submit-message",
        "messageId": None,
        **extra,
    }


def test_doctests() -> None:
    assert doctest.testmod(ai_sdk_format, raise_on_error=False).failed == 0


def test_a_body_becomes_a_chat_request() -> None:
    body = {
        "id": "chat-7",
        "trigger": "regenerate-message",
        "messageId": "m2",
        "messages": [
            {"id": "s", "role": "system", "parts": [{"type": "text", "text": "Be brief"}]},
            {
                "id": "u1",
                "role": "user",
                "parts": [
                    {"type": "text", "text": "Hel"},
                    {"type": "data-note", "data": {"x": 1}},
                    {"type": "text", "text": "lo"},
                ],
            },
            {
                "id": "a1",
                "role": "assistant",
                "parts": [{"type": "step-start"}, {"type": "text", "text": "Hi!", "state": "done"}],
            },
            # An answer stopped before its first token: nothing to tell the model.
            {"id": "a2", "role": "assistant", "parts": [{"type": "step-start"}]},
            {"id": "u2", "role": "user", "content": "More"},  # the AI SDK 4 shape
        ],
        "model": "m",
        "max_tokens": 9,
        "temperature": 0.5,
        "stop": "END",
        "someAppField": {"ignored": True},
    }
    turn = parse_chat_request(body, default_max_tokens=512)
    assert (turn.chat_id, turn.trigger, turn.message_id) == ("chat-7", "regenerate-message", "m2")
    assert [(m.role, m.content) for m in turn.request.messages] == [
        ("system", "Be brief"),
        ("user", "Hello"),
        ("assistant", "Hi!"),
        ("user", "More"),
    ]
    request = turn.request
    assert (request.model, request.max_tokens, request.temperature) == ("m", 9, 0.5)
    assert request.stop == ["END"]
    assert parse_chat_request(chat_body("c"), 77).request.max_tokens == 77


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ([], "JSON object"),
        ({"messages": [user("x")]}, "id:"),
        ({"id": "", "messages": [user("x")]}, "id:"),
        ({"id": "x" * 257, "messages": [user("x")]}, "id:"),
        ({"id": "c"}, "messages:"),
        ({"id": "c", "messages": []}, "messages:"),
        ({"id": "c", "messages": ["hi"]}, "messages[0]"),
        ({"id": "c", "messages": [{**user("x"), "role": "tool"}]}, "messages[0].role"),
        ({"id": "c", "messages": [{**user("x"), "role": "developer"}]}, "messages[0].role"),
        ({"id": "c", "messages": [{"role": "user"}]}, "messages[0].parts"),
        ({"id": "c", "messages": [{"role": "user", "parts": ["x"]}]}, "messages[0].parts[0]"),
        (
            {"id": "c", "messages": [{"role": "user", "parts": [{"type": "text", "text": 1}]}]},
            "messages[0].parts[0].text",
        ),
        (
            {"id": "c", "messages": [{"role": "user", "parts": [{"type": "file", "url": "x"}]}]},
            "needs a text part",
        ),
        ({"id": "c", "messages": [{"role": "assistant", "parts": []}]}, "no message has text"),
        ({**chat_body("c"), "trigger": "resume-stream"}, "trigger:"),
        ({**chat_body("c"), "messageId": 3}, "messageId:"),
        ({**chat_body("c"), "max_tokens": -1}, "max_tokens"),
        ({**chat_body("c"), "temperature": 9}, "temperature"),
    ],
)
def test_bad_bodies_are_refused_naming_the_field(body: Any, names: str) -> None:
    with pytest.raises(BadRequest, match=names.replace("[", r"\[").replace("]", r"\]")):
        parse_chat_request(body, 512)


def types(chunks: list[dict[str, Any]]) -> list[str]:
    return [chunk["type"] for chunk in chunks]


def test_the_encoder_sequence_of_an_answer() -> None:
    encoder = UIMessageEncoder("gen_1")
    start = encoder.chunks("start", {"id": "gen_1", "model": "m", "provider": "openai"})
    assert start == [
        {
            "type": "start",
            "messageId": "gen_1",
            "messageMetadata": {"generationId": "gen_1", "model": "m"},
        },
        {"type": "start-step"},
    ]
    assert types(encoder.chunks("token", {"text": "a"})) == ["text-start", "text-delta"]
    assert encoder.chunks("token", {"text": "b"}) == [
        {"type": "text-delta", "id": "text-0", "delta": "b"}
    ]
    assert encoder.chunks("partial", {"value": {}}) == []
    assert not encoder.ended
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    done = {
        "finish_reason": "stop",
        "usage": usage,
        "ttft_ms": 1.5,
        "tokens_per_s": 9.0,
        "duration_ms": 4.0,
        "output_tokens": 2,
    }
    end = encoder.chunks("done", done)
    assert end == [
        {"type": "text-end", "id": "text-0"},
        {"type": "finish-step"},
        {"type": "data-usage", "id": "usage", "data": usage},
        {
            "type": "data-timing",
            "id": "timing",
            "data": {"ttft_ms": 1.5, "tokens_per_s": 9.0, "duration_ms": 4.0, "output_tokens": 2},
        },
        {"type": "finish", "finishReason": "stop"},
    ]
    assert encoder.ended


def test_an_agent_loop_opens_and_closes_every_part() -> None:
    """Text, a tool call in pieces, its result, the model's next step, more text: every part
    started is ended, in order, and the pieces of the arguments join into the whole JSON."""
    encoder = UIMessageEncoder("run_1")
    chunks: list[dict[str, Any]] = []
    for event, payload in [
        ("start", {"id": "run_1"}),
        ("token", {"text": "Let me look."}),
        ("tool_call", {"index": 0, "id": "call_1", "name": "weather", "arguments": ""}),
        ("tool_call", {"index": 0, "arguments": '{"city": '}),
        ("tool_call", {"index": 0, "arguments": '"Oslo"}'}),
        ("tool_result", {"id": "call_1", "output": {"sky": "clear"}}),
        ("step", {"step": 2, "finish_reason": "tool_calls"}),
        ("token", {"text": "Clear skies."}),
        ("done", {"finish_reason": "stop", "usage": None}),
    ]:
        chunks += encoder.chunks(event, payload)
    assert types(chunks) == [
        "start",
        "start-step",
        "text-start",
        "text-delta",
        "text-end",
        "tool-input-start",
        "tool-input-delta",
        "tool-input-delta",
        "tool-input-available",
        "tool-output-available",
        "finish-step",
        "start-step",
        "text-start",
        "text-delta",
        "text-end",
        "finish-step",
        "data-usage",
        "data-timing",
        "finish",
    ]
    deltas = "".join(c["inputTextDelta"] for c in chunks if c["type"] == "tool-input-delta")
    assert deltas == '{"city": "Oslo"}'
    available = next(c for c in chunks if c["type"] == "tool-input-available")
    assert available == {
        "type": "tool-input-available",
        "toolCallId": "call_1",
        "toolName": "weather",
        "input": {"city": "Oslo"},
    }
    texts = [c["id"] for c in chunks if c["type"] == "text-start"]
    assert texts == ["text-0", "text-1"]  # a part of its own in each step


def test_an_error_closes_the_open_parts_first() -> None:
    encoder = UIMessageEncoder("run_2")
    chunks = encoder.chunks("start", {})
    chunks += encoder.chunks("tool_call", {"index": 0, "id": "c", "name": "f", "arguments": "{"})
    chunks += encoder.chunks("error", {"error": "upstream_error", "message": "gone"})
    assert types(chunks)[-2:] == ["tool-input-available", "error"]


@pytest.mark.parametrize(
    ("reason", "last"),
    [
        ("stop", {"type": "finish", "finishReason": "stop"}),
        ("length", {"type": "finish", "finishReason": "length"}),
        ("tool_calls", {"type": "finish", "finishReason": "tool-calls"}),
        ("content_filter", {"type": "finish", "finishReason": "content-filter"}),
        ("time_limit", {"type": "finish", "finishReason": "length"}),
        ("something_new", {"type": "finish", "finishReason": "other"}),
        ("cancelled", {"type": "abort"}),
        ("abandoned", {"type": "abort"}),
    ],
)
def test_finish_reasons_in_the_sdks_words(reason: str, last: dict[str, Any]) -> None:
    encoder = UIMessageEncoder("gen_1")
    encoder.chunks("start", {"model": "m"})
    assert encoder.chunks("done", {"finish_reason": reason})[-1] == last


def test_an_answer_without_text_has_no_text_part_and_errors_close_it() -> None:
    silent = UIMessageEncoder("gen_1")
    silent.chunks("start", {"model": "m"})
    assert types(silent.chunks("done", {"finish_reason": "cancelled"})) == [
        "finish-step",
        "data-usage",
        "data-timing",
        "abort",
    ]
    failing = UIMessageEncoder("gen_2")
    failing.chunks("token", {"text": "a"})
    chunks = failing.chunks("error", {"error": "upstream_error", "message": "it broke"})
    assert chunks[0] == {"type": "text-end", "id": "text-0"}
    assert chunks[1]["type"] == "error"
    assert orjson.loads(chunks[1]["errorText"]) == {"error": "upstream_error", "detail": "it broke"}
    wire = UIMessageEncoder("gen_3").encode("error", {"error": "timeout", "message": "slow"})
    assert wire.startswith(b'data: {"type":"error","errorText":') and wire.endswith(DONE)


def test_the_chat_index_is_bounded_and_restores() -> None:
    index = ChatIndex(capacity=3)
    for n in range(5):
        index.set(f"c{n}", f"gen_{n}")
    assert len(index) == 3 and index.get("c0") is None and index.get("c4") == "gen_4"
    index.set("c2", "gen_x")  # a new generation makes the chat the most recent again
    index.set("c5", "gen_5")
    assert index.get("c2") == "gen_x" and index.get("c3") is None
    previous = index.set("c5", "gen_6")
    index.restore("c5", "gen_6", previous)  # it failed before its first token
    assert index.get("c5") == "gen_5"
    index.set("c9", "gen_9")
    index.restore("c9", "gen_9", None)
    assert index.get("c9") is None
    index.set("c5", "gen_7")
    index.restore("c5", "gen_6", "gen_5")  # the chat moved on: nothing to undo
    assert index.get("c5") == "gen_7"


# -- a real server in front of the fake upstream ----------------------------------------------


@pytest.fixture(scope="module")
def server(fake: FakeLLM) -> Iterator[ServerProcess]:
    process = ServerProcess(env=llm_env(fake)).start()
    yield process
    process.stop()


@pytest.fixture(autouse=True)
def fresh_script(fake: FakeLLM) -> None:
    fake.reset()


@pytest.fixture
async def http(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as client:
        yield client


@pytest.fixture
def chat_id(request: pytest.FixtureRequest) -> str:
    return f"{request.node.name}-{time.monotonic_ns()}"


def chunks_of(raw: bytes) -> list[Any]:
    """The ``data:`` payloads of a UI message stream: chunk objects, then the string
    ``"[DONE]"``.  Every line must be ``data: ...`` or blank (a ping comment at most)."""
    found: list[Any] = []
    for line in raw.decode().split("\n"):
        if not line or line.startswith(":"):
            continue
        assert line.startswith("data: "), line
        payload = line.removeprefix("data: ")
        found.append(payload if payload == "[DONE]" else orjson.loads(payload))
    return found


def text_of(chunks: list[Any]) -> str:
    return "".join(c["delta"] for c in chunks if isinstance(c, dict) and c["type"] == "text-delta")


def ui_types(chunks: list[Any]) -> list[str]:
    return [c if isinstance(c, str) else c["type"] for c in chunks]


async def post_chat(http: httpx.AsyncClient, body: Any) -> httpx.Response:
    return await http.post("/api/chat", json=body)


async def generation(http: httpx.AsyncClient, generation_id: str) -> dict[str, Any]:
    answer = await http.get(f"/v1/generations/{generation_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


class UIStream:
    """A UI message stream read chunk by chunk (through the SSE parser)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.sse = SSEStream(response)
        self.chunks: list[Any] = []

    async def next(self, within: float = 5.0) -> Any:
        event = await self.sse.next_event(within)
        assert event.event == "message" and not event.id
        chunk = event.data if event.data == "[DONE]" else orjson.loads(event.data)
        self.chunks.append(chunk)
        return chunk

    async def until(self, kind: str, count: int = 1, within: float = 5.0) -> None:
        async with asyncio.timeout(within):
            while ui_types(self.chunks).count(kind) < count:
                await self.next(within)

    async def rest(self, within: float = 10.0) -> list[Any]:
        """Everything up to the end of the response (which must be ``[DONE]``)."""
        for event in await self.sse.until_end(within):
            self.chunks.append(event.data if event.data == "[DONE]" else orjson.loads(event.data))
        assert self.chunks[-1] == "[DONE]"
        return self.chunks


async def test_the_wire_header_sequence_and_done(
    http: httpx.AsyncClient, fake: FakeLLM, chat_id: str
) -> None:
    fake.script = Script(tokens=["Hel", "lo", " there"], prompt_tokens=7)
    answer = await post_chat(http, chat_body(chat_id))
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert answer.headers["content-type"].startswith("text/event-stream")
    assert answer.headers["cache-control"] == "no-cache"
    generation_id = answer.headers["x-generation-id"]
    chunks = chunks_of(answer.content)
    assert ui_types(chunks) == [
        "start",
        "start-step",
        "text-start",
        "text-delta",
        "text-delta",
        "text-delta",
        "text-end",
        "finish-step",
        "data-usage",
        "data-timing",
        "finish",
        "[DONE]",
    ]
    assert chunks[0]["messageId"] == generation_id
    assert chunks[0]["messageMetadata"] == {"generationId": generation_id, "model": "fake-model"}
    assert {c["id"] for c in chunks if c != "[DONE]" and c["type"].startswith("text-")} == {
        "text-0"
    }
    state = await generation(http, generation_id)
    assert text_of(chunks) == state["text"] == "Hello there"
    assert chunks[8]["data"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    assert chunks[9]["data"]["output_tokens"] == 3 and chunks[9]["data"]["ttft_ms"] >= 0
    assert chunks[10] == {"type": "finish", "finishReason": "stop"}
    upstream = fake.requests[-1].json
    assert upstream["messages"] == [{"role": "user", "content": "Say hello"}]
    assert upstream["model"] == "fake-model"


async def test_options_in_the_body_reach_the_provider(
    http: httpx.AsyncClient, fake: FakeLLM, chat_id: str
) -> None:
    body = chat_body(chat_id, max_tokens=2, temperature=0.3, model="other-model")
    fake.script = Script(tokens=["a", "b", "c"])
    chunks = chunks_of((await post_chat(http, body)).content)
    assert text_of(chunks) == "ab"
    assert chunks[-2] == {"type": "finish", "finishReason": "length"}
    upstream = fake.requests[-1].json
    assert (upstream["model"], upstream["temperature"]) == ("other-model", 0.3)


async def test_resume_of_an_unknown_chat_is_204(http: httpx.AsyncClient) -> None:
    answer = await http.get("/api/chat/no-such-chat/stream")
    assert answer.status_code == 204 and answer.content == b""


async def test_resume_after_the_end_replays_from_the_start(
    http: httpx.AsyncClient, fake: FakeLLM, chat_id: str
) -> None:
    fake.script = Script(tokens=[f"t{n} " for n in range(8)])
    answer = await post_chat(http, chat_body(chat_id))
    requests = len(fake.requests)
    for _ in range(2):  # as often as asked, while the retention lasts
        again = await http.get(f"/api/chat/{chat_id}/stream")
        assert again.status_code == 200
        assert again.headers["x-vercel-ai-ui-message-stream"] == "v1"
        assert again.headers["x-generation-id"] == answer.headers["x-generation-id"]
        assert chunks_of(again.content) == chunks_of(answer.content)  # the same, byte for byte
    assert len(fake.requests) == requests  # never a second provider call


async def test_resume_follows_the_latest_generation_of_the_chat(
    http: httpx.AsyncClient, fake: FakeLLM, chat_id: str
) -> None:
    fake.script = Script(tokens=["first"])
    await post_chat(http, chat_body(chat_id))
    fake.script = Script(tokens=["second"])
    second = await post_chat(http, chat_body(chat_id, trigger="regenerate-message"))
    replay = chunks_of((await http.get(f"/api/chat/{chat_id}/stream")).content)
    assert text_of(replay) == "second"
    assert replay[0]["messageId"] == second.headers["x-generation-id"]


async def test_resume_mid_generation_then_live(
    http: httpx.AsyncClient, fake: FakeLLM, chat_id: str
) -> None:
    fake.script = Script(tokens=[f"{n}," for n in range(12)], token_interval=0.05)
    async with http.stream("POST", "/api/chat", json=chat_body(chat_id)) as response:
        assert response.status_code == 200
        first = UIStream(response)
        await first.until("text-delta", 3)
        async with http.stream("GET", f"/api/chat/{chat_id}/stream") as resumed:
            assert resumed.status_code == 200
            late = UIStream(resumed)
            await late.until("text-delta", 4)  # the 3 sent before, then live ones
            assert text_of(late.chunks).startswith("0,1,2,")
            whole = await late.rest()
        original = await first.rest()
    assert whole == original
    assert ui_types(whole)[-2:] == ["finish", "[DONE]"]
    assert text_of(whole) == "".join(f"{n}," for n in range(12))
    assert len(fake.requests) == 1


async def test_cancel_stops_the_upstream_within_a_second(
    http: httpx.AsyncClient, fake: FakeLLM, chat_id: str
) -> None:
    fake.script = Script(tokens=["x"] * 200, token_interval=0.1)
    closed_before = fake.closed
    async with http.stream("POST", "/api/chat", json=chat_body(chat_id)) as response:
        stream = UIStream(response)
        await stream.until("text-delta")
        cancelled_at = time.monotonic()
        answer = await http.post(f"/api/chat/{chat_id}/cancel")
        chunks = await stream.rest()
    assert fake.wait_closed(closed_before + 1, timeout=2)
    assert fake.closed_at[-1] - cancelled_at < 1.0
    generation_id = response.headers["x-generation-id"]
    assert answer.status_code == 200
    assert answer.json() == {"id": generation_id, "state": "cancelled"}
    assert answer.headers["x-generation-id"] == generation_id
    assert ui_types(chunks)[-6:] == [
        "text-end",
        "finish-step",
        "data-usage",
        "data-timing",
        "abort",
        "[DONE]",
    ]
    assert text_of(chunks) == (await generation(http, generation_id))["text"]
    again = await http.post(f"/api/chat/{chat_id}/cancel")  # idempotent
    assert again.status_code == 200 and again.json()["state"] == "cancelled"
    replay = chunks_of((await http.get(f"/api/chat/{chat_id}/stream")).content)
    assert replay == chunks  # a cancelled answer replays as it ended
    unknown = await http.post("/api/chat/no-such-chat/cancel")
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_chat"


async def test_leaving_does_not_stop_the_generation(
    http: httpx.AsyncClient, fake: FakeLLM, chat_id: str
) -> None:
    """For the SDK, leaving is a disconnect (``stop()`` too): the answer goes on, for a resume."""
    fake.script = Script(tokens=[f"{n} " for n in range(10)], token_interval=0.03)
    closed_before = fake.closed
    async with http.stream("POST", "/api/chat", json=chat_body(chat_id)) as response:
        await UIStream(response).until("text-delta")
    replay = chunks_of((await http.get(f"/api/chat/{chat_id}/stream")).content)
    assert text_of(replay) == "".join(f"{n} " for n in range(10))
    assert fake.closed == closed_before


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{nope", 400, "invalid_json"),
        (b"[]", 400, "invalid_request"),
        (b'{"id": "c", "messages": []}', 400, "invalid_request"),
        (b'{"id": "c", "messages": [{"role": "wizard", "parts": []}]}', 400, "invalid_request"),
        (orjson.dumps(chat_body("c", max_tokens=100_000)), 400, "max_tokens_too_large"),
        (b'{"id": "c", "messages": [' + b"0" * 2_000_000 + b"]}", 413, "body_too_large"),
    ],
)
async def test_bad_bodies_are_4xx_before_any_upstream_call(
    http: httpx.AsyncClient, fake: FakeLLM, body: bytes, status: int, code: str
) -> None:
    answer = await http.post("/api/chat", content=body)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert answer.json()["error"] == code and answer.json()["detail"]
    assert fake.requests == []


@pytest.mark.parametrize(
    ("script", "status", "code"),
    [
        (Script(status=401), 401, "unauthorized"),
        (Script(status=404), 404, "not_found"),
        (Script(status=429, retry_after=7), 429, "rate_limited"),
        (Script(status=500), 502, "upstream_error"),
    ],
)
async def test_errors_before_the_first_token_are_http_statuses(
    http: httpx.AsyncClient, fake: FakeLLM, chat_id: str, script: Script, status: int, code: str
) -> None:
    fake.script = Script(tokens=["earlier"])
    await post_chat(http, chat_body(chat_id))
    fake.script = script
    answer = await post_chat(http, chat_body(chat_id))
    assert answer.status_code == status
    error = answer.json()
    assert error["error"] == code and "the provider answered" in error["detail"]
    assert error["generation_id"] == answer.headers["x-generation-id"]
    assert API_KEY not in answer.text
    if status == 429:
        assert error["retry_after"] == 7 and answer.headers["retry-after"] == "7"
    # The failed generation is not the chat's answer: a resume still finds the earlier one.
    replay = chunks_of((await http.get(f"/api/chat/{chat_id}/stream")).content)
    assert text_of(replay) == "earlier"


async def test_a_chat_whose_only_generation_failed_has_nothing_to_resume(
    http: httpx.AsyncClient, fake: FakeLLM, chat_id: str
) -> None:
    fake.script = Script(status=500)
    assert (await post_chat(http, chat_body(chat_id))).status_code == 502
    assert (await http.get(f"/api/chat/{chat_id}/stream")).status_code == 204
    assert (await http.post(f"/api/chat/{chat_id}/cancel")).status_code == 404


async def test_an_error_after_the_first_token_is_an_error_chunk(
    http: httpx.AsyncClient, fake: FakeLLM, chat_id: str
) -> None:
    fake.script = Script(tokens=["a", "b", "c"], error_after=2)
    answer = await post_chat(http, chat_body(chat_id))
    assert answer.status_code == 200
    chunks = chunks_of(answer.content)
    assert ui_types(chunks) == [
        "start",
        "start-step",
        "text-start",
        "text-delta",
        "text-delta",
        "text-end",
        "error",
        "[DONE]",
    ]
    error = orjson.loads(chunks[-2]["errorText"])
    assert error["error"] == "upstream_error" and error["detail"]
    assert API_KEY not in answer.text


async def test_the_prefix_is_a_setting(start_server: StartServer, fake: FakeLLM) -> None:
    server = start_server(env={**llm_env(fake), "SLUICEWAY_CHAT_API_PREFIX": "/ai/v2"})
    async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as http:
        answer = await http.post("/ai/v2/chat", json=chat_body("c"))
        assert answer.status_code == 200 and text_of(chunks_of(answer.content)) == "Hello, world!"
        assert (await http.get("/ai/v2/chat/c/stream")).status_code == 200
        assert (await http.post("/api/chat", json=chat_body("c"))).status_code in (404, 405)


# -- the embedded local model ------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(
    local.find_local_model() is None or not local.xllamacpp_available(),
    reason="the local model extra is not installed",
)
async def test_the_embedded_model_streams_a_ui_message(start_server: StartServer) -> None:
    server = start_server()
    body = chat_body("local", "Name three colours.", max_tokens=24)
    async with httpx.AsyncClient(base_url=server.url, timeout=60.0) as http:
        answer = await post_chat(http, body)
        assert answer.status_code == 200, answer.text
        chunks = chunks_of(answer.content)
        state = await generation(http, answer.headers["x-generation-id"])
    assert ui_types(chunks)[:3] == ["start", "start-step", "text-start"]
    assert ui_types(chunks)[-2:] == ["finish", "[DONE]"]
    assert chunks[-2]["finishReason"] in ("stop", "length")
    assert text_of(chunks) == state["text"] and state["text"].strip()
    assert state["provider"] == "local"
