"""The fake LLM upstream is faithful: the official ``openai`` and ``anthropic`` SDKs, which
validate what they receive, read its streams, tool calls, usage and errors as they would the
real APIs'.  Also the fake's own knobs: timing, stalls, and seeing the client leave."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
from fake_llm import FakeLLM, Script

KEY = "test-key"
MESSAGES: list[Any] = [{"role": "user", "content": "Say hello"}]
WEATHER = ("get_weather", '{"city": "Paris", "unit": "celsius", "days": [1, 2]}')


@pytest.fixture
def fake() -> Iterator[FakeLLM]:
    with FakeLLM(api_key=KEY) as server:
        yield server


@pytest.fixture
def oai(fake: FakeLLM) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fake.url + "/v1", api_key=KEY, max_retries=0, timeout=5) as c:
        yield c


@pytest.fixture
def claude(fake: FakeLLM) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=fake.url, api_key=KEY, max_retries=0, timeout=5) as c:
        yield c


def openai_stream(client: openai.OpenAI, **kwargs: Any) -> Any:
    return client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, **kwargs
    )


def anthropic_stream(client: anthropic.Anthropic, **kwargs: Any) -> Any:
    kwargs.setdefault("max_tokens", 256)
    return client.messages.stream(model="claude-test", messages=MESSAGES, **kwargs)


def raw_events(fake: FakeLLM, path: str, body: dict[str, Any], **headers: str) -> list[str]:
    """The SSE events of a response, as text, with its head checked for a real stream's."""
    with httpx.stream("POST", fake.url + path, json=body, headers=headers, timeout=5) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["transfer-encoding"] == "chunked"
        text = response.read().decode()
    assert text.endswith("\n\n")
    return text.removesuffix("\n\n").split("\n\n")


# -- OpenAI ----------------------------------------------------------------------------------


def test_openai_stream_text_finish_and_usage(fake: FakeLLM, oai: openai.OpenAI) -> None:
    chunks = list(openai_stream(oai, stream_options={"include_usage": True}))

    assert {c.id for c in chunks} == {chunks[0].id} and chunks[0].id.startswith("chatcmpl-")
    assert all(c.object == "chat.completion.chunk" and c.model == "gpt-4o-mini" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    *with_choices, last = chunks
    text = "".join(c.choices[0].delta.content or "" for c in with_choices)
    assert text == "Hello, world!"
    assert [c.choices[0].finish_reason for c in with_choices][-1] == "stop"
    assert all(c.choices[0].finish_reason is None for c in with_choices[:-1])
    # The usage comes alone, after the finish, and is null on every other chunk.
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (12, 4)
    assert last.usage.total_tokens == 16
    assert all(c.usage is None for c in with_choices)

    (request,) = fake.requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.json["stream"] is True and request.json["messages"] == MESSAGES
    assert fake.wait_for(lambda: fake.completed == 1 and fake.open_streams == 0, 2)
    assert fake.closed_at == []


def test_openai_stream_without_usage(oai: openai.OpenAI) -> None:
    chunks = list(openai_stream(oai))
    assert all(c.choices and c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_openai_raw_wire(fake: FakeLLM) -> None:
    body = {"model": "m", "messages": MESSAGES, "stream": True}
    auth = {"authorization": f"Bearer {KEY}"}
    events = raw_events(fake, "/v1/chat/completions", body, **auth)
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert all(e.startswith("data: {") for e in events[:-1])
    # Every chunk is padded by default; no "usage" key at all without include_usage.
    assert all(c["obfuscation"] and "usage" not in c for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert chunks[1]["choices"][0] == {
        "index": 0,
        "delta": {"content": "Hello"},
        "logprobs": None,
        "finish_reason": None,
    }
    assert chunks[-1]["choices"][0]["delta"] == {}
    assert chunks[0]["system_fingerprint"].startswith("fp_")

    options = {"include_usage": True, "include_obfuscation": False}
    events = raw_events(fake, "/v1/chat/completions", {**body, "stream_options": options}, **auth)
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert all("obfuscation" not in c and "usage" in c for c in chunks)


def test_openai_tool_call_deltas_assemble(fake: FakeLLM, oai: openai.OpenAI) -> None:
    fake.script = Script(tokens=["Let me", " check."], tool_call=WEATHER)
    text, calls, finish = "", {}, None
    for chunk in openai_stream(oai):
        choice = chunk.choices[0]
        text += choice.delta.content or ""
        for call in choice.delta.tool_calls or []:
            entry = calls.setdefault(call.index, {"id": None, "name": "", "arguments": ""})
            entry["id"] = entry["id"] or call.id
            entry["name"] += call.function.name or ""
            entry["arguments"] += call.function.arguments or ""
        finish = choice.finish_reason or finish
    assert text == "Let me check."
    assert finish == "tool_calls"
    assert list(calls) == [0] and calls[0]["id"].startswith("call_")
    assert calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == json.loads(WEATHER[1])

    # The SDK's own accumulator agrees.
    with oai.chat.completions.stream(model="gpt-4o-mini", messages=MESSAGES) as stream:
        argument_deltas = [
            e.arguments_delta for e in stream if e.type == "tool_calls.function.arguments.delta"
        ]
        completion = stream.get_final_completion()
    assert len([d for d in argument_deltas if d]) == 3
    message = completion.choices[0].message
    assert message.content == "Let me check."
    assert message.tool_calls is not None and message.tool_calls[0].function.name == "get_weather"
    assert json.loads(message.tool_calls[0].function.arguments) == json.loads(WEATHER[1])
    assert completion.usage is None  # not asked for


def test_openai_tool_call_without_text(fake: FakeLLM, oai: openai.OpenAI) -> None:
    fake.script = Script(tokens=[], tool_call=WEATHER)
    chunks = list(openai_stream(oai, stream_options={"include_usage": True}))
    first = chunks[0].choices[0].delta
    # As the API does: the role and the opening of the call in one chunk, content null.
    assert first.role == "assistant" and first.content is None
    assert first.tool_calls is not None and first.tool_calls[0].function.name == "get_weather"
    arguments = "".join(
        call.function.arguments or ""
        for chunk in chunks
        if chunk.choices
        for call in chunk.choices[0].delta.tool_calls or []
    )
    assert json.loads(arguments) == json.loads(WEATHER[1])
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_openai_max_tokens_cuts(fake: FakeLLM, oai: openai.OpenAI, field: str) -> None:
    fake.script = Script(tool_call=WEATHER)
    limit: Any = {field: 2}
    chunks = list(openai_stream(oai, stream_options={"include_usage": True}, **limit))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello,"
    assert chunks[-2].choices[0].finish_reason == "length"
    assert all(not c.choices or not c.choices[0].delta.tool_calls for c in chunks)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2


def test_openai_non_streaming(fake: FakeLLM, oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert completion.object == "chat.completion" and completion.id.startswith("chatcmpl-")
    assert completion.choices[0].message.content == "Hello, world!"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens == 16

    fake.script = Script(tokens=[], tool_call=WEATHER)
    completion = oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    message = completion.choices[0].message
    assert message.content is None and completion.choices[0].finish_reason == "tool_calls"
    assert message.tool_calls is not None
    assert json.loads(message.tool_calls[0].function.arguments) == json.loads(WEATHER[1])
    assert fake.wait_for(lambda: fake.completed == 2, 2)


def test_openai_wrong_key_is_authentication_error(fake: FakeLLM) -> None:
    with openai.OpenAI(base_url=fake.url + "/v1", api_key="wrong", max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError) as caught:
            openai_stream(client)
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model="m", messages=MESSAGES)
    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_api_key" and caught.value.type == "invalid_request_error"
    assert caught.value.request_id is not None and caught.value.request_id.startswith("req_")
    assert fake.open_streams == 0 and fake.completed == 0


def test_openai_rate_limit_with_retry_after(fake: FakeLLM, oai: openai.OpenAI) -> None:
    fake.script = Script(status=429, retry_after=2)
    with pytest.raises(openai.RateLimitError) as caught:
        openai_stream(oai)
    assert caught.value.response.headers["retry-after"] == "2"
    assert caught.value.code == "rate_limit_exceeded"

    fake.script = Script(status=500)
    with pytest.raises(openai.InternalServerError):
        oai.chat.completions.create(model="m", messages=MESSAGES)
    fake.script = Script(status=400)
    with pytest.raises(openai.BadRequestError):
        openai_stream(oai)


def test_openai_mid_stream_error(fake: FakeLLM, oai: openai.OpenAI) -> None:
    fake.script = Script(error_after=2)
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in openai_stream(oai):
            received.append(chunk.choices[0].delta.content)
    # The in-band error is an APIError, not a status error: the status was 200.
    assert not isinstance(caught.value, openai.APIStatusError)
    assert caught.value.type == "server_error"
    assert received == ["", "Hello", ","]
    assert fake.wait_for(lambda: fake.errored == 1 and fake.open_streams == 0, 2)
    assert fake.completed == 0 and fake.closed_at == []

    # Not streaming, the same failure is an HTTP 500.
    with pytest.raises(openai.InternalServerError):
        oai.chat.completions.create(model="m", messages=MESSAGES)


def test_openai_rejects_what_the_api_rejects(fake: FakeLLM, oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="stream_options"):
        oai.chat.completions.create(
            model="m", messages=MESSAGES, stream_options={"include_usage": True}
        )
    with pytest.raises(openai.NotFoundError):
        oai.models.list()
    assert fake.open_streams == 0 and fake.completed == 0


async def test_openai_async_client(fake: FakeLLM) -> None:
    fake.script = Script(token_interval=0.01)
    client = openai.AsyncOpenAI(base_url=fake.url + "/v1", api_key=KEY, max_retries=0)
    async with client:
        stream = await client.chat.completions.create(
            model="m",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello, world!"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4


# -- Anthropic -------------------------------------------------------------------------------


def test_anthropic_stream_text_stop_reason_and_usage(
    fake: FakeLLM, claude: anthropic.Anthropic
) -> None:
    with anthropic_stream(claude) as stream:
        texts = list(stream.text_stream)
        message = stream.get_final_message()
    assert texts == ["Hello", ",", " world", "!"]
    assert message.id.startswith("msg_") and message.model == "claude-test"
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "Hello, world!"
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (12, 4)

    (request,) = fake.requests
    assert request.path == "/v1/messages" and request.json["max_tokens"] == 256
    assert "anthropic-version" in request.headers
    assert fake.wait_for(lambda: fake.completed == 1 and fake.open_streams == 0, 2)


def test_anthropic_event_order(fake: FakeLLM, claude: anthropic.Anthropic) -> None:
    stream = claude.messages.create(model="m", max_tokens=100, messages=MESSAGES, stream=True)
    kinds = [event.type for event in stream]
    assert kinds == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * 4,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


def test_anthropic_raw_wire_with_pings(fake: FakeLLM) -> None:
    fake.script = Script(ping_every=2)
    body = {"model": "m", "max_tokens": 100, "messages": MESSAGES, "stream": True}
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    events = raw_events(fake, "/v1/messages", body, **headers)
    names = []
    for event in events:
        name_line, data_line = event.split("\n")
        name = name_line.removeprefix("event: ")
        # The event name is repeated as the data's "type".
        assert json.loads(data_line.removeprefix("data: "))["type"] == name
        names.append(name)
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * 2,
        "ping",
        *["content_block_delta"] * 2,
        "ping",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    delta = json.loads(events[-2].split("data: ", 1)[1])
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"] == {"output_tokens": 4}


def test_anthropic_tool_use_input_json(fake: FakeLLM, claude: anthropic.Anthropic) -> None:
    fake.script = Script(tokens=["Checking."], tool_call=WEATHER)
    with anthropic_stream(claude) as stream:
        events = list(stream)
        message = stream.get_final_message()
    pieces = [e.partial_json for e in events if e.type == "input_json"]
    # The API opens the input with an empty piece; then the arguments in three.
    assert pieces[0] == "" and len(pieces) == 4
    assert "".join(pieces) == WEATHER[1]
    snapshots = [e.snapshot for e in events if e.type == "input_json"]
    assert snapshots[-1] == json.loads(WEATHER[1])
    assert [block.type for block in message.content] == ["text", "tool_use"]
    tool = message.content[1]
    assert tool.type == "tool_use" and tool.name == "get_weather"
    assert tool.id.startswith("toolu_") and tool.input == json.loads(WEATHER[1])
    assert message.stop_reason == "tool_use"
    assert message.usage.output_tokens == 4

    # Not streaming: the same message.
    whole = claude.messages.create(model="m", max_tokens=100, messages=MESSAGES)
    assert [block.type for block in whole.content] == ["text", "tool_use"]
    assert whole.content[1].input == json.loads(WEATHER[1])  # type: ignore[union-attr]
    assert whole.stop_reason == "tool_use"


def test_anthropic_tool_use_only(fake: FakeLLM, claude: anthropic.Anthropic) -> None:
    fake.script = Script(tokens=[], tool_call=WEATHER)
    with anthropic_stream(claude) as stream:
        message = stream.get_final_message()
    assert [block.type for block in message.content] == ["tool_use"]
    assert message.content[0].input == json.loads(WEATHER[1])  # type: ignore[union-attr]


def test_anthropic_max_tokens_and_finish_mapping(
    fake: FakeLLM, claude: anthropic.Anthropic
) -> None:
    with anthropic_stream(claude, max_tokens=2) as stream:
        message = stream.get_final_message()
    assert message.content[0].text == "Hello,"  # type: ignore[union-attr]
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 2

    fake.script = Script(finish_reason="content_filter")
    with anthropic_stream(claude) as stream:
        assert stream.get_final_message().stop_reason == "refusal"


def test_anthropic_non_streaming(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(model="m", max_tokens=100, messages=MESSAGES)
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].text == "Hello, world!"  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (12, 4)


def test_anthropic_authentication(fake: FakeLLM) -> None:
    client = anthropic.Anthropic(base_url=fake.url, api_key="wrong", max_retries=0)
    with client, pytest.raises(anthropic.AuthenticationError) as caught:
        anthropic_stream(client).__enter__()
    assert caught.value.status_code == 401
    assert caught.value.type == "authentication_error"
    assert caught.value.request_id is not None and caught.value.request_id.startswith("req_")

    # x-api-key (as raw HTTP clients send it) is taken too; anthropic-version is required.
    url = fake.url + "/v1/messages"
    body = {"model": "m", "max_tokens": 10, "messages": MESSAGES}
    version = {"anthropic-version": "2023-06-01"}
    answer = httpx.post(url, json=body, headers={"x-api-key": KEY, **version})
    assert answer.status_code == 200 and answer.json()["type"] == "message"
    answer = httpx.post(url, json=body, headers={"x-api-key": "wrong", **version})
    assert answer.status_code == 401
    assert answer.json()["error"]["type"] == "authentication_error"
    answer = httpx.post(url, json=body, headers={"x-api-key": KEY})
    assert answer.status_code == 400
    assert answer.json()["error"]["type"] == "invalid_request_error"
    answer = httpx.post(
        url, json={"model": "m", "messages": MESSAGES}, headers={"x-api-key": KEY, **version}
    )
    assert answer.status_code == 400 and "max_tokens" in answer.json()["error"]["message"]


def test_anthropic_status_errors(fake: FakeLLM, claude: anthropic.Anthropic) -> None:
    fake.script = Script(status=429, retry_after=3)
    with pytest.raises(anthropic.RateLimitError) as caught:
        anthropic_stream(claude).__enter__()
    assert caught.value.response.headers["retry-after"] == "3"
    assert caught.value.type == "rate_limit_error"
    assert caught.value.body["type"] == "error"  # type: ignore[index]

    fake.script = Script(status=529)
    with pytest.raises(anthropic.OverloadedError) as overloaded:
        claude.messages.create(model="m", max_tokens=10, messages=MESSAGES)
    assert isinstance(overloaded.value, anthropic.InternalServerError)
    assert overloaded.value.type == "overloaded_error"


def test_anthropic_mid_stream_error(fake: FakeLLM, claude: anthropic.Anthropic) -> None:
    fake.script = Script(error_after=1)
    texts = []
    with pytest.raises(anthropic.APIStatusError) as caught, anthropic_stream(claude) as stream:
        texts.extend(stream.text_stream)
    # The SDK makes the in-band error a status error of the 200 it arrived with.
    assert caught.value.status_code == 200
    assert caught.value.type == "overloaded_error" and caught.value.api_message == "Overloaded"
    assert texts == ["Hello"]
    assert fake.wait_for(lambda: fake.errored == 1 and fake.open_streams == 0, 2)

    # Not streaming, the same failure is an HTTP 529.
    with pytest.raises(anthropic.OverloadedError):
        claude.messages.create(model="m", max_tokens=10, messages=MESSAGES)


async def test_anthropic_async_client(fake: FakeLLM) -> None:
    fake.script = Script(token_interval=0.01, tool_call=WEATHER)
    client = anthropic.AsyncAnthropic(base_url=fake.url, api_key=KEY, max_retries=0)
    async with (
        client,
        client.messages.stream(model="m", max_tokens=64, messages=MESSAGES) as stream,
    ):
        texts = [text async for text in stream.text_stream]
        message = await stream.get_final_message()
    assert "".join(texts) == "Hello, world!"
    assert message.content[-1].input == json.loads(WEATHER[1])  # type: ignore[union-attr]


# -- the fake's knobs ------------------------------------------------------------------------


def test_timing(fake: FakeLLM, oai: openai.OpenAI) -> None:
    fake.script = Script(tokens=["a", "b", "c"], first_token_delay=0.3, token_interval=0.1)
    start = time.monotonic()
    arrivals = []
    for chunk in openai_stream(oai):
        if chunk.choices[0].delta.content:
            arrivals.append(time.monotonic() - start)
    assert 0.3 <= arrivals[0] < 1.0
    assert arrivals[1] - arrivals[0] >= 0.08 and arrivals[2] - arrivals[1] >= 0.08


@pytest.mark.parametrize("face", ["openai", "anthropic"])
def test_stall_then_client_leaves(
    fake: FakeLLM, oai: openai.OpenAI, claude: anthropic.Anthropic, face: str
) -> None:
    fake.script = Script(stall_after=2)
    texts: list[str] = []
    if face == "openai":
        stream = openai_stream(oai)
        for chunk in stream:
            texts.append(chunk.choices[0].delta.content or "")
            if len(texts) == 3:
                break
        assert fake.open_streams == 1 and fake.closed_at == []
        left = time.monotonic()
        stream.close()
    else:
        with anthropic_stream(claude) as stream:
            for text in stream.text_stream:
                texts.append(text)
                if len(texts) == 2:
                    break
            assert fake.open_streams == 1 and fake.closed_at == []
            left = time.monotonic()
    assert "".join(texts) == "Hello,"
    assert fake.wait_closed(1, timeout=2)
    assert fake.closed_at[0] - left < 0.5
    assert fake.wait_for(lambda: fake.open_streams == 0, 2)
    assert fake.completed == 0 and fake.errored == 0


def test_client_leaving_wakes_the_pause(fake: FakeLLM, oai: openai.OpenAI) -> None:
    fake.script = Script(token_interval=30)
    stream = openai_stream(oai)
    next(stream), next(stream)  # the role chunk, then "Hello"
    left = time.monotonic()
    stream.close()
    assert fake.wait_closed(1, timeout=2)
    assert fake.closed_at[0] - left < 0.5


def test_client_timeout_on_a_non_streaming_request(fake: FakeLLM, oai: openai.OpenAI) -> None:
    fake.script = Script(first_token_delay=30)
    with pytest.raises(openai.APITimeoutError):
        oai.chat.completions.create(model="m", messages=MESSAGES, timeout=0.3)
    assert fake.wait_closed(1, timeout=2)
    assert fake.wait_for(lambda: fake.open_streams == 0, 2)


def test_stall_before_the_end(fake: FakeLLM, claude: anthropic.Anthropic) -> None:
    """``stall_after`` equal to the number of deltas: every token, but never the end."""
    fake.script = Script(stall_after=4)
    with anthropic_stream(claude) as stream:
        texts = []
        for text in stream.text_stream:
            texts.append(text)
            if len(texts) == 4:
                break
        assert fake.wait_open(1, timeout=1) and fake.completed == 0
    assert fake.wait_closed(1, timeout=2)


def test_enqueued_scripts_come_first(fake: FakeLLM, oai: openai.OpenAI) -> None:
    fake.enqueue(Script(status=429, retry_after=0.5), Script(tokens=["second"]))
    fake.script = Script(tokens=["default"])
    with pytest.raises(openai.RateLimitError) as caught:
        openai_stream(oai)
    assert caught.value.response.headers["retry-after"] == "0.5"
    answers = [
        oai.chat.completions.create(model="m", messages=MESSAGES).choices[0].message.content
        for _ in range(2)
    ]
    assert answers == ["second", "default"]
    assert fake.wait_requests(3, timeout=1)


def test_leaving_the_fake_cuts_its_streams() -> None:
    """Exiting the fake ends its open (here stalled) streams at once, mid-body: the clients
    see a broken stream, not a hang."""
    with FakeLLM(api_key=None) as fake:
        fake.script = Script(stall_after=1)
        client = openai.OpenAI(base_url=fake.url + "/v1", api_key="any", max_retries=0, timeout=5)
        streams = [openai_stream(client) for _ in range(3)]
        for stream in streams:
            next(stream)
        assert fake.wait_open(3, timeout=2)
        started = time.monotonic()
    try:
        assert time.monotonic() - started < 2
        for stream in streams:
            with pytest.raises(openai.APIConnectionError):
                list(stream)
        assert fake.closed_at == []
    finally:
        client.close()


def test_a_bug_in_the_fake_fails_the_test() -> None:
    """What the fake raises while serving is raised again on exit, not passed off as a
    network error."""
    with pytest.raises(orjson.JSONDecodeError), FakeLLM(api_key=KEY) as fake:
        fake.script = Script(tool_call=("f", "{not json"))
        headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
        body = {"model": "m", "max_tokens": 10, "messages": MESSAGES}
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.post(fake.url + "/v1/messages", json=body, headers=headers)


def test_reset(fake: FakeLLM, oai: openai.OpenAI) -> None:
    fake.script = Script(tokens=["changed"])
    fake.enqueue(Script(status=500))
    fake.reset()
    completion = oai.chat.completions.create(model="m", messages=MESSAGES)
    assert completion.choices[0].message.content == "Hello, world!"
    assert len(fake.requests) == 1
