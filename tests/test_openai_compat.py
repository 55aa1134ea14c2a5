"""The official ``openai`` SDK against ``/v1/chat/completions``, and the Anthropic provider,
both through a real ``sluiceway serve`` in front of the fake upstream."""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest
from fake_llm import FakeLLM, Script
from serverproc import ServerProcess
from test_generations import API_KEY, ASK, follow, generate, llm_env, text_of

from sluiceway.client import EventSource


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
def sdk(server: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0) as client:
        yield client


@pytest.fixture(autouse=True)
def fresh_script(fake: FakeLLM) -> None:
    fake.script = Script()


MESSAGES = [{"role": "user", "content": "Say hello"}]


def test_the_openai_sdk_streams_from_us(sdk: openai.OpenAI, fake: FakeLLM) -> None:
    fake.script = Script(tokens=["Hel", "lo", "!"], prompt_tokens=5)
    stream = sdk.chat.completions.create(
        model="fake-model",
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello!"
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (5, 3)
    assert len({c.id for c in chunks}) == 1 and chunks[0].object == "chat.completion.chunk"
    assert chunks[0].model == "fake-model"


def test_the_openai_sdk_without_streaming(sdk: openai.OpenAI, fake: FakeLLM) -> None:
    fake.script = Script(tokens=["All", " good"])
    completion = sdk.chat.completions.create(model="fake-model", messages=MESSAGES)  # type: ignore[arg-type]
    assert completion.choices[0].message.content == "All good"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens == 2


def test_tool_calls_reach_the_sdk(sdk: openai.OpenAI, fake: FakeLLM) -> None:
    fake.script = Script(tokens=[], tool_call=("get_weather", '{"city": "Oslo"}'))
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    stream = sdk.chat.completions.create(
        model="fake-model",
        messages=MESSAGES,  # type: ignore[arg-type]
        tools=tools,  # type: ignore[arg-type]
        stream=True,
    )
    name, arguments, finish = "", "", None
    for chunk in stream:
        for call in chunk.choices[0].delta.tool_calls or () if chunk.choices else ():
            name += (call.function and call.function.name) or ""
            arguments += (call.function and call.function.arguments) or ""
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    assert (name, json.loads(arguments), finish) == ("get_weather", {"city": "Oslo"}, "tool_calls")
    assert fake.requests[-1].json["tools"] == tools


def test_upstream_errors_become_the_sdks_exceptions(sdk: openai.OpenAI, fake: FakeLLM) -> None:
    fake.script = Script(status=401)
    with pytest.raises(openai.AuthenticationError) as auth:
        sdk.chat.completions.create(model="m", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
    assert API_KEY not in str(auth.value)
    fake.script = Script(status=429, retry_after=3)
    with pytest.raises(openai.RateLimitError):
        sdk.chat.completions.create(model="m", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(model="m", messages=MESSAGES, n=2)  # type: ignore[arg-type]


def test_a_mid_stream_error_reaches_the_sdk(sdk: openai.OpenAI, fake: FakeLLM) -> None:
    fake.script = Script(tokens=["a", "b", "c"], error_after=2)
    stream = sdk.chat.completions.create(model="m", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
    received = []
    with pytest.raises(openai.APIError):
        for chunk in stream:
            received.append(chunk.choices[0].delta.content if chunk.choices else None)
    assert "a" in received and "b" in received


def test_an_openai_stream_is_a_generation_that_can_be_followed(
    server: ServerProcess, fake: FakeLLM
) -> None:
    fake.script = Script(tokens=["x", "y"])
    body = {"model": "m", "messages": MESSAGES, "stream": True}
    headers: dict[str, str] = {}
    source = EventSource(
        f"{server.url}/v1/chat/completions",
        method="POST",
        json=body,
        on_open=lambda response: headers.update(response.headers),
    )
    with source:
        events = list(source)
    assert events[-1].data == "[DONE]"
    generation_id = headers["x-generation-id"]
    assert text_of(follow(server, generation_id)) == "xy"  # the same answer, in our format


def test_the_anthropic_provider(anthropic_server: ServerProcess, fake: FakeLLM) -> None:
    fake.script = Script(tokens=["Bon", "jour"], prompt_tokens=9, ping_every=1)
    body = {**ASK, "messages": [{"role": "system", "content": "Be brief"}, *ASK["messages"]]}
    events = generate(anthropic_server, body)
    assert text_of(events) == "Bonjour"
    done = events[-1].json()
    assert done["finish_reason"] == "stop"
    assert done["usage"] == {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}
    request = fake.requests[-1]
    assert request.path == "/v1/messages"
    assert request.headers["x-api-key"] == API_KEY
    assert request.json["system"] == "Be brief"
    assert request.json["messages"] == [{"role": "user", "content": "Say hello"}]


def test_the_anthropic_provider_tool_use_and_errors(
    anthropic_server: ServerProcess, fake: FakeLLM
) -> None:
    fake.script = Script(tokens=["Let me check."], tool_call=("lookup", '{"q": "sluice"}'))
    events = generate(anthropic_server)
    arguments = "".join(e.json()["arguments"] for e in events if e.event == "tool_call")
    assert json.loads(arguments) == {"q": "sluice"}
    assert events[-1].json()["finish_reason"] == "tool_calls"
    assert events[-1].json()["tool_calls"][0]["name"] == "lookup"
    fake.script = Script(tokens=["a", "b"], error_after=1)
    failed = generate(anthropic_server)
    assert failed[-1].event == "error"
    assert failed[-1].json()["error"] == "upstream_unavailable"  # overloaded_error
