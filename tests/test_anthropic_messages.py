"""The official ``anthropic`` SDK against ``POST /v1/messages``: a real ``sluiceway serve`` in
front of the fake upstream (OpenAI and Anthropic faces) and in front of the embedded model."""

from __future__ import annotations

import doctest
import json
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest
from conftest import StartServer
from fake_llm import FakeLLM, Script
from serverproc import ServerProcess
from test_generations import API_KEY, follow, llm_env, text_of

from sluiceway.llm import anthropic_format
from sluiceway.llm.providers import local
from sluiceway.llm.providers.local import find_local_model
from sluiceway.sse import Event, Parser

MESSAGES: list[Any] = [{"role": "user", "content": "Say hello"}]
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.fixture(scope="module")
def server(fake: FakeLLM) -> Iterator[ServerProcess]:
    process = ServerProcess(env=llm_env(fake)).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def anthropic_server(fake: FakeLLM) -> Iterator[ServerProcess]:
    process = ServerProcess(env=llm_env(fake, provider="anthropic")).start()
    yield process
    process.stop()


@pytest.fixture
def sdk(server: ServerProcess) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0) as client:
        yield client


@pytest.fixture(autouse=True)
def fresh_script(fake: FakeLLM) -> None:
    fake.reset()


def generation(server: ServerProcess, generation_id: str) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/v1/generations/{generation_id}")
    response.raise_for_status()
    return response.json()  # type: ignore[no-any-return]


def raw_events(server: ServerProcess, body: dict[str, Any]) -> tuple[httpx.Response, list[Event]]:
    """The wire: every SSE event of a streaming request, pings included."""
    parser = Parser()
    events: list[Event] = []
    with httpx.stream("POST", f"{server.url}/v1/messages", json=body, timeout=10) as response:
        for chunk in response.iter_bytes():
            events += parser.feed(chunk)
    return response, events


def test_doctests() -> None:
    assert doctest.testmod(anthropic_format, raise_on_error=False).failed == 0


def test_encoder_numbers_blocks_and_closes_them_in_order() -> None:
    encoder = anthropic_format.MessageEncoder("gen_ab12", "m")
    seen: list[tuple[str, Any]] = []
    for event, payload in [
        ("start", {}),
        ("token", {"text": "Hi"}),
        ("tool_call", {"index": 0, "id": "call_1", "name": "f", "arguments": ""}),
        ("tool_call", {"index": 0, "arguments": '{"a": 1}'}),
        ("tool_call", {"index": 1, "name": "g", "arguments": "{}"}),  # no id: one is made
        ("partial", {"value": {}}),  # not part of this format
        ("done", {"finish_reason": "tool_calls", "usage": {"completion_tokens": 4}}),
    ]:
        seen += encoder.events(event, payload)
    assert [(name, data.get("index")) for name, data in seen] == [
        ("message_start", None),
        ("content_block_start", 0),
        ("ping", None),
        ("content_block_delta", 0),
        ("content_block_stop", 0),
        ("content_block_start", 1),
        ("content_block_delta", 1),
        ("content_block_delta", 1),
        ("content_block_stop", 1),
        ("content_block_start", 2),
        ("content_block_delta", 2),
        ("content_block_stop", 2),
        ("message_delta", None),
        ("message_stop", None),
    ]
    assert seen[5][1]["content_block"] == {
        "type": "tool_use",
        "id": "call_1",
        "name": "f",
        "input": {},
    }
    assert seen[9][1]["content_block"]["id"] == "toolu_ab12_1"
    assert seen[12][1]["delta"]["stop_reason"] == "tool_use"
    assert seen[12][1]["usage"] == {"output_tokens": 4}  # no input_tokens when unknown
    assert seen[0][1]["message"]["id"] == "msg_ab12"


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("time_limit", "max_tokens"),
        ("cancelled", "end_turn"),
        ("abandoned", "end_turn"),
        ("content_filter", "refusal"),
        ("something_new", "end_turn"),
    ],
)
def test_stop_reasons(reason: str, expected: str) -> None:
    encoder = anthropic_format.MessageEncoder("gen_1", "m")
    events = encoder.events("done", {"finish_reason": reason})
    assert [name for name, _ in events] == ["ping", "message_delta", "message_stop"]
    assert events[1][1]["delta"]["stop_reason"] == expected
    assert encoder.message("", {"finish_reason": reason})["stop_reason"] == expected


def test_encoder_errors_are_anthropics_types() -> None:
    encoder = anthropic_format.MessageEncoder("gen_1", "m")
    for kind, expected in [
        ("upstream_unavailable", "overloaded_error"),
        ("upstream_error", "api_error"),
        ("rate_limited", "rate_limit_error"),
        ("timeout", "timeout_error"),
    ]:
        [(name, data)] = encoder.events("error", {"error": kind, "message": "boom"})
        assert (name, data) == (
            "error",
            {"type": "error", "error": {"type": expected, "message": "boom"}},
        )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "the body must be a JSON object"),
        ({"messages": MESSAGES}, "max_tokens: Field required"),
        ({"messages": MESSAGES, "max_tokens": "9"}, "max_tokens: must be a positive integer"),
        ({"max_tokens": 9, "messages": [{"role": "tool", "content": "x"}]}, "messages.0.role"),
        ({"max_tokens": 9, "messages": [{"role": "user"}]}, "messages.0.content"),
        ({"max_tokens": 9, "messages": MESSAGES, "n": 2}, "n: Extra inputs are not permitted"),
        ({"max_tokens": 9, "messages": MESSAGES, "stream": "yes"}, "stream: must be a boolean"),
        (
            {"max_tokens": 9, "messages": MESSAGES, "tool_choice": {"type": "any"}},
            "tool_choice",
        ),
        ({"max_tokens": 9, "messages": MESSAGES, "system": [{"type": "image"}]}, "system"),
    ],
)
def test_parse_request_names_the_bad_field(body: Any, message: str) -> None:
    with pytest.raises(anthropic_format.BadRequest, match=message):
        anthropic_format.parse_request(body)


def test_parse_request_tool_choice_none_drops_the_tools() -> None:
    chat, _ = anthropic_format.parse_request(
        {"max_tokens": 9, "messages": MESSAGES, "tools": [WEATHER], "tool_choice": {"type": "none"}}
    )
    assert chat.tools is None


def test_messages_stream_assembles_the_generation(
    sdk: anthropic.Anthropic, server: ServerProcess, fake: FakeLLM
) -> None:
    fake.script = Script(tokens=["Hel", "lo", " there"], prompt_tokens=7)
    with sdk.messages.stream(model="fake-model", max_tokens=64, messages=MESSAGES) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
        generation_id = stream.response.headers["x-generation-id"]
    assert texts == ["Hel", "lo", " there"]  # one text_delta per token, in order
    assert [block.type for block in final.content] == ["text"]
    assert final.content[0].text == "Hello there"  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn" and final.stop_sequence is None
    assert (final.usage.input_tokens, final.usage.output_tokens) == (7, 3)
    assert final.model == "fake-model" and final.role == "assistant"
    assert final.id == "msg_" + generation_id.removeprefix("gen_")
    state = generation(server, generation_id)
    assert state["text"] == "Hello there" and state["state"] == "completed"
    assert text_of(follow(server, generation_id)) == "Hello there"  # the same generation


def test_create_stream_true_gives_anthropics_events(
    sdk: anthropic.Anthropic, server: ServerProcess, fake: FakeLLM
) -> None:
    fake.script = Script(tokens=["a", "b", "c"], prompt_tokens=4)
    stream = sdk.messages.create(model="fake-model", max_tokens=64, messages=MESSAGES, stream=True)
    with stream:
        events = list(stream)
        generation_id = stream.response.headers["x-generation-id"]
    assert [e.type for e in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta")  # type: ignore[union-attr]
    assert text == "abc" == generation(server, generation_id)["text"]
    start, delta = events[0], events[-2]
    assert start.type == "message_start" and delta.type == "message_delta"
    assert start.message.usage.output_tokens == 0 and start.message.content == []
    assert delta.delta.stop_reason == "end_turn" and delta.usage.output_tokens == 3
    assert delta.usage.input_tokens == 4


def test_the_wire_is_anthropics(server: ServerProcess, fake: FakeLLM) -> None:
    fake.script = Script(tokens=["x", "y"], prompt_tokens=3)
    body = {"model": "fake-model", "max_tokens": 64, "messages": MESSAGES, "stream": True}
    response, events = raw_events(server, body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-generation-id"].startswith("gen_")
    assert [e.event for e in events] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    data = [json.loads(e.data) for e in events]
    assert all(d["type"] == e.event for d, e in zip(data, events, strict=True))
    message = data[0]["message"]
    assert message == {
        "id": message["id"],
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": "fake-model",
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 0, "output_tokens": 0},
    }
    assert data[1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    assert data[3] == {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": "x"},
    }
    assert data[5] == {"type": "content_block_stop", "index": 0}
    assert data[6] == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 2, "input_tokens": 3},
    }


def test_create_without_streaming_returns_a_message(
    sdk: anthropic.Anthropic, server: ServerProcess, fake: FakeLLM
) -> None:
    fake.script = Script(tokens=["All", " good"], prompt_tokens=6)
    raw = sdk.messages.with_raw_response.create(
        model="fake-model", max_tokens=64, messages=MESSAGES
    )
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant"
    assert [(b.type, b.text) for b in message.content] == [("text", "All good")]  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert (message.usage.input_tokens, message.usage.output_tokens) == (6, 2)
    generation_id = raw.headers["x-generation-id"]
    assert message._request_id == generation_id
    assert generation(server, generation_id)["text"] == "All good"


def test_stop_reason_max_tokens(sdk: anthropic.Anthropic, fake: FakeLLM) -> None:
    fake.script = Script(tokens=["one", " two", " three", " four"])
    with sdk.messages.stream(model="fake-model", max_tokens=2, messages=MESSAGES) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "max_tokens" and final.usage.output_tokens == 2
    assert final.content[0].text == "one two"  # type: ignore[union-attr]
    message = sdk.messages.create(model="fake-model", max_tokens=3, messages=MESSAGES)
    assert message.stop_reason == "max_tokens"
    assert message.content[0].text == "one two three"  # type: ignore[union-attr]


def test_the_request_reaches_the_provider_translated(
    sdk: anthropic.Anthropic, fake: FakeLLM
) -> None:
    sdk.messages.create(
        model="fake-model",
        max_tokens=50,
        system=[{"type": "text", "text": "Be "}, {"type": "text", "text": "brief"}],
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Again"},
        ],
        # Sampling parameters are gone from the SDK's signature (2.x), not from the API.
        extra_body={"temperature": 0.5, "top_p": 0.9, "top_k": 5},  # top_k: ignored
        stop_sequences=["END"],
        metadata={"user_id": "u1"},
    )
    sent = fake.requests[-1].json
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief"},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Again"},
    ]
    assert (sent["max_tokens"], sent["temperature"], sent["top_p"]) == (50, 0.5, 0.9)
    assert sent["stop"] == ["END"] and sent["model"] == "fake-model"


def test_tool_use_round_trip(sdk: anthropic.Anthropic, fake: FakeLLM) -> None:
    fake.script = Script(tokens=["Let me look."], tool_call=("get_weather", '{"city": "Oslo"}'))
    with sdk.messages.stream(
        model="fake-model", max_tokens=64, messages=MESSAGES, tools=[WEATHER]
    ) as stream:
        final = stream.get_final_message()
    assert [block.type for block in final.content] == ["text", "tool_use"]
    call = final.content[1]
    assert call.type == "tool_use" and call.name == "get_weather"
    assert call.input == {"city": "Oslo"} and call.id
    assert final.stop_reason == "tool_use"
    assert fake.requests[-1].json["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": WEATHER["input_schema"],
                "description": "The weather in a city",
            },
        }
    ]
    # Not streaming: the same blocks.
    fake.script = Script(tokens=[], tool_call=("get_weather", '{"city": "Oslo"}'))
    message = sdk.messages.create(
        model="fake-model", max_tokens=64, messages=MESSAGES, tools=[WEATHER]
    )
    assert [b.type for b in message.content] == ["tool_use"]
    assert message.content[0].input == {"city": "Oslo"}  # type: ignore[union-attr]
    # The answer goes back as a tool_result, which reaches the provider as a tool message.
    fake.script = Script(tokens=["Sunny."])
    answer = sdk.messages.create(
        model="fake-model",
        max_tokens=64,
        tools=[WEATHER],
        messages=[
            *MESSAGES,
            {"role": "assistant", "content": [call.model_dump(exclude_none=True)]},  # type: ignore[list-item]
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}],
            },
        ],
    )
    assert answer.content[0].text == "Sunny."  # type: ignore[union-attr]
    sent = fake.requests[-1].json["messages"]
    assert sent[1]["tool_calls"] == [
        {
            "id": call.id,
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
        }
    ]
    assert sent[2] == {"role": "tool", "content": "sunny", "tool_call_id": call.id}


def test_bad_requests_are_400s_in_anthropics_shape(
    sdk: anthropic.Anthropic, server: ServerProcess, fake: FakeLLM
) -> None:
    before = len(fake.requests)
    bad: list[dict[str, Any]] = [
        {"messages": [{"role": "system", "content": "x"}]},
        {"messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]},
        {"messages": []},
        {"messages": MESSAGES, "tools": [{"type": "web_search_20250305", "name": "web_search"}]},
        {"messages": MESSAGES, "thinking": {"type": "enabled", "budget_tokens": 1024}},
        {"messages": MESSAGES, "extra_body": {"temperature": 5}},
        {"messages": MESSAGES, "extra_body": {"frequency_penalty": 1}},  # not Anthropic's
        {"messages": MESSAGES, "max_tokens": 10_000},  # over llm_max_tokens (4096)
    ]
    for params in bad:
        options = {"model": "fake-model", "max_tokens": 64, **params}
        with pytest.raises(anthropic.BadRequestError) as caught:
            sdk.messages.create(**options)
        body = caught.value.body
        assert isinstance(body, dict) and body["type"] == "error", params
        assert body["error"]["type"] == "invalid_request_error", params
    with pytest.raises(anthropic.BadRequestError) as missing:  # (stream: else the SDK objects)
        sdk.messages.create(
            model="fake-model",
            max_tokens=anthropic.omit,  # type: ignore[arg-type]
            messages=MESSAGES,
            stream=True,
        )
    assert "max_tokens" in missing.value.message
    response = httpx.post(f"{server.url}/v1/messages", content=b"{not json")
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert len(fake.requests) == before  # all refused before the provider was called


def test_an_oversized_request_is_413(sdk: anthropic.Anthropic, fake: FakeLLM) -> None:
    huge = [{"role": "user", "content": "x" * (2 * 1024 * 1024)}]  # default max_body_bytes: 1 MiB
    with pytest.raises(anthropic.APIStatusError) as caught:
        sdk.messages.create(model="fake-model", max_tokens=64, messages=huge)
    assert caught.value.status_code == 413
    assert caught.value.body["error"]["type"] == "request_too_large"  # type: ignore[index]
    assert fake.requests == []


def test_upstream_errors_before_the_first_token_are_the_sdks_exceptions(
    sdk: anthropic.Anthropic, fake: FakeLLM
) -> None:
    def create() -> None:
        with sdk.messages.stream(model="fake-model", max_tokens=64, messages=MESSAGES) as s:
            s.get_final_message()

    fake.script = Script(status=429, retry_after=3)
    with pytest.raises(anthropic.RateLimitError) as limited:
        create()
    assert limited.value.response.headers["retry-after"] == "3"
    assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    fake.script = Script(status=401)
    with pytest.raises(anthropic.AuthenticationError) as auth:
        create()
    assert auth.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    assert API_KEY not in str(auth.value)
    fake.script = Script(status=404)
    with pytest.raises(anthropic.NotFoundError) as missing:
        sdk.messages.create(model="no-such-model", max_tokens=64, messages=MESSAGES)
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    fake.script = Script(status=500)
    with pytest.raises(anthropic.InternalServerError) as failed:
        create()
    assert failed.value.status_code == 502
    assert failed.value.body["error"]["type"] == "api_error"  # type: ignore[index]


def test_an_error_after_the_first_token_is_in_band(
    sdk: anthropic.Anthropic, server: ServerProcess, fake: FakeLLM
) -> None:
    fake.script = Script(tokens=["a", "b", "c"], error_after=2)
    received: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        sdk.messages.stream(model="fake-model", max_tokens=64, messages=MESSAGES) as stream,
    ):
        for text in stream.text_stream:
            received.append(text)
    assert received == ["a", "b"]
    assert caught.value.status_code == 200  # the stream had started: the error came in-band
    assert caught.value.body["type"] == "error"  # type: ignore[index]
    assert caught.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    # On the wire: the error event ends the stream, nothing after it.
    fake.script = Script(tokens=["a", "b", "c"], error_after=2)
    body = {"model": "fake-model", "max_tokens": 64, "messages": MESSAGES, "stream": True}
    _response, events = raw_events(server, body)
    assert events[-1].event == "error" and "message_stop" not in [e.event for e in events]
    # Not streaming, the generation's failure is the response's status.
    fake.script = Script(tokens=["a", "b", "c"], error_after=2)
    with pytest.raises(anthropic.InternalServerError) as failed:
        sdk.messages.create(model="fake-model", max_tokens=64, messages=MESSAGES)
    assert failed.value.status_code == 502


def test_cancel_through_the_generation_stops_the_upstream(
    sdk: anthropic.Anthropic, server: ServerProcess, fake: FakeLLM
) -> None:
    fake.script = Script(tokens=["a", "b", "c"], stall_after=1)
    closed = fake.closed
    stream = sdk.messages.create(model="fake-model", max_tokens=64, messages=MESSAGES, stream=True)
    with stream:
        events = iter(stream)
        assert next(events).type == "message_start"
        assert next(events).type == "content_block_start"
        generation_id = stream.response.headers["x-generation-id"]
        cancelled_at = time.monotonic()
        answer = httpx.post(f"{server.url}/v1/generations/{generation_id}/cancel")
        assert answer.json()["state"] == "cancelled"
        assert fake.wait_closed(closed + 1, timeout=1)
        assert fake.closed_at[-1] - cancelled_at < 1
        rest = list(events)
    assert [e.type for e in rest][-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert rest[-2].delta.stop_reason == "end_turn"  # type: ignore[union-attr]


def test_the_anthropic_provider_behind_the_anthropic_face(
    anthropic_server: ServerProcess, fake: FakeLLM
) -> None:
    fake.script = Script(tokens=["Bon", "jour"], prompt_tokens=9, ping_every=1)
    with (
        anthropic.Anthropic(base_url=anthropic_server.url, api_key="x", max_retries=0) as sdk,
        sdk.messages.stream(
            model="fake-model", max_tokens=64, system="Be brief", messages=MESSAGES
        ) as stream,
    ):
        assert "".join(stream.text_stream) == "Bonjour"
        final = stream.get_final_message()
    assert (final.usage.input_tokens, final.usage.output_tokens) == (9, 2)
    assert final.stop_reason == "end_turn"
    sent = fake.requests[-1]
    assert sent.path == "/v1/messages" and sent.headers["x-api-key"] == API_KEY
    assert sent.json["system"] == "Be brief" and sent.json["messages"] == MESSAGES
    # The provider's overload mid-stream stays an overload for our client.
    fake.script = Script(tokens=["a", "b"], error_after=1)
    with (
        anthropic.Anthropic(base_url=anthropic_server.url, api_key="x", max_retries=0) as sdk,
        pytest.raises(anthropic.APIStatusError) as caught,
        sdk.messages.stream(model="fake-model", max_tokens=64, messages=MESSAGES) as stream,
    ):
        stream.get_final_message()
    assert caught.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


@pytest.mark.slow
def test_the_embedded_model_behind_the_anthropic_face(start_server: StartServer) -> None:
    if find_local_model() is None or not local.xllamacpp_available():
        pytest.skip("the local model extra is not installed")
    server = start_server()
    with (
        anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0) as sdk,
        sdk.messages.stream(
            model=local.MODEL_NAME,
            max_tokens=16,
            messages=[{"role": "user", "content": "Name three colours."}],
        ) as stream,
    ):
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
        generation_id = stream.response.headers["x-generation-id"]
    assert text.strip() and final.content[0].text == text  # type: ignore[union-attr]
    assert final.stop_reason in ("end_turn", "max_tokens")
    state = generation(server, generation_id)
    assert state["text"] == text
    # Stopped at max_tokens by us, the provider's usage (with the prompt's count) never came.
    assert final.usage.input_tokens == (state["usage"]["prompt_tokens"] or 0)
    assert final.usage.output_tokens == state["usage"]["completion_tokens"] <= 16


def test_the_anthropic_upstream_gets_tool_use_blocks_for_earlier_calls() -> None:
    """A tool round trip through an Anthropic upstream: the assistant turn's calls become
    ``tool_use`` blocks, so that each ``tool_result`` has its partner (Anthropic refuses a
    result without one)."""
    from sluiceway.llm.providers.anthropic import AnthropicProvider
    from sluiceway.llm.request import ChatRequest

    provider = AnthropicProvider(api_key="k", default_model="claude-test")
    call = {"id": "toolu_1", "type": "function"}
    call["function"] = {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    request = ChatRequest(
        messages=[
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": "Looking.", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
        ],  # type: ignore[list-item]
        max_tokens=10,
    )
    messages = provider.body(request)["messages"]
    assert messages[1] == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Looking."},
            {
                "type": "tool_use",
                "id": "toolu_1",
                "name": "get_weather",
                "input": {"city": "Paris"},
            },
        ],
    }
    assert messages[2]["content"][0]["tool_use_id"] == "toolu_1"
