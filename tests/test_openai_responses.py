"""The official ``openai`` SDK against ``/v1/responses`` (the Responses API), through a real
``sluiceway serve`` in front of the fake upstream: streaming, the stream helper, background
responses, resume with ``starting_after``, cancel, and errors before and after the first token."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from conftest import StartServer
from fake_llm import FakeLLM, Script
from serverproc import ServerProcess
from test_generations import llm_env

from sluiceway.client import EventSource
from sluiceway.llm.providers import local


@pytest.fixture(scope="module")
def server(fake: FakeLLM) -> Iterator[ServerProcess]:
    process = ServerProcess(env=llm_env(fake)).start()
    yield process
    process.stop()


@pytest.fixture
def sdk(server: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0) as client:
        yield client


@pytest.fixture(autouse=True)
def fresh_script(fake: FakeLLM) -> None:
    fake.script = Script()


def generation_text(server: ServerProcess, response_id: str) -> str:
    generation_id = "gen_" + response_id.removeprefix("resp_")
    return str(httpx.get(f"{server.url}/v1/generations/{generation_id}").json()["text"])


def test_streaming_events_in_order(
    sdk: openai.OpenAI, server: ServerProcess, fake: FakeLLM
) -> None:
    fake.script = Script(tokens=["Hel", "lo", "!"], prompt_tokens=5)
    events = list(sdk.responses.create(model="fake-model", input="Say hello", stream=True))
    types = [event.type for event in events]
    assert types == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    completed = events[-1].response  # type: ignore[union-attr]
    assert deltas == completed.output_text == "Hello!"
    assert completed.status == "completed"
    assert completed.usage is not None
    assert (completed.usage.input_tokens, completed.usage.output_tokens) == (5, 3)
    assert generation_text(server, completed.id) == "Hello!"


def test_the_stream_helper(sdk: openai.OpenAI, fake: FakeLLM) -> None:
    fake.script = Script(tokens=["One", " two", " three"])
    with sdk.responses.stream(
        model="fake-model",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "Count"}]}],
        instructions="Be brief.",
    ) as stream:
        texts = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(texts) == final.output_text == "One two three"
    assert final.instructions == "Be brief."
    request = fake.requests[-1].json
    assert request["messages"][0] == {"role": "system", "content": "Be brief."}


def test_without_streaming(sdk: openai.OpenAI, fake: FakeLLM) -> None:
    fake.script = Script(tokens=["All", " good"], finish_reason="length")
    response = sdk.responses.create(model="fake-model", input="Hi", max_output_tokens=2)
    assert response.output_text == "All good"
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"


def test_resume_exactly_after_any_event(sdk: openai.OpenAI, fake: FakeLLM) -> None:
    fake.script = Script(tokens=[f"t{n} " for n in range(8)], token_interval=0.02)
    events = list(sdk.responses.create(model="fake-model", input="Go", stream=True))
    response_id = events[0].response.id  # type: ignore[union-attr]
    for cut in (0, 3, len(events) - 2):
        resumed = list(
            sdk.responses.retrieve(response_id, stream=True, starting_after=cut)  # type: ignore[call-overload]
        )
        assert [e.sequence_number for e in resumed] == list(range(cut + 1, len(events)))
        assert [e.model_dump() for e in resumed] == [e.model_dump() for e in events[cut + 1 :]]


def test_resume_while_it_is_still_generating(
    sdk: openai.OpenAI, server: ServerProcess, fake: FakeLLM
) -> None:
    fake.script = Script(tokens=[f"w{n} " for n in range(20)], token_interval=0.05)
    stream = sdk.responses.create(model="fake-model", input="Go", stream=True)
    seen = []
    for event in stream:
        seen.append(event)
        if len(seen) == 6:
            break
    stream.close()  # the client leaves mid-answer
    response_id = seen[0].response.id  # type: ignore[union-attr]
    rest = list(
        sdk.responses.retrieve(response_id, stream=True, starting_after=seen[-1].sequence_number)  # type: ignore[call-overload]
    )
    events = seen + rest
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "".join(f"w{n} " for n in range(20)) == generation_text(server, response_id)
    assert events[-1].type == "response.completed"


def test_background_then_retrieve_and_cancel(sdk: openai.OpenAI, fake: FakeLLM) -> None:
    fake.script = Script(tokens=["slow "] * 200, token_interval=0.05)
    started = sdk.responses.create(model="fake-model", input="Go", background=True)
    assert started.status in ("queued", "in_progress") and started.background is True
    time.sleep(0.3)
    partial = sdk.responses.retrieve(started.id)
    assert partial.status == "in_progress" and partial.output_text.startswith("slow")
    cancel_at = time.monotonic()
    cancelled = sdk.responses.cancel(started.id)
    assert cancelled.status == "cancelled"
    assert fake.wait_closed(1, timeout=1.0)
    assert time.monotonic() - cancel_at < 1.5
    again = sdk.responses.cancel(started.id)  # idempotent
    assert again.status == "cancelled" and again.output_text == cancelled.output_text
    events = list(sdk.responses.retrieve(started.id, stream=True))  # type: ignore[call-overload]
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.status == "cancelled"  # type: ignore[union-attr]


def test_background_is_not_abandoned(server: ServerProcess, fake: FakeLLM) -> None:
    fake.script = Script(tokens=["x"] * 5, token_interval=0.05)
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused") as sdk:
        started = sdk.responses.create(model="fake-model", input="Go", background=True)
        deadline = time.monotonic() + 5
        while sdk.responses.retrieve(started.id).status == "in_progress":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert sdk.responses.retrieve(started.id).output_text == "xxxxx"


def test_errors_before_the_first_token(sdk: openai.OpenAI, fake: FakeLLM) -> None:
    fake.script = Script(status=429, retry_after=3)
    with pytest.raises(openai.RateLimitError):
        sdk.responses.create(model="fake-model", input="Hi", stream=True)
    fake.script = Script()
    with pytest.raises(openai.BadRequestError):
        sdk.responses.create(model="fake-model", input=[{"role": "wizard", "content": "x"}])  # type: ignore[list-item]
    with pytest.raises(openai.BadRequestError):
        sdk.responses.create(model="fake-model", input=[])
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve("resp_nope")


def test_an_error_after_the_first_token_fails_the_response(
    sdk: openai.OpenAI, fake: FakeLLM
) -> None:
    fake.script = Script(tokens=["a", "b", "c"], error_after=2)
    events = list(sdk.responses.create(model="fake-model", input="Hi", stream=True))
    assert events[-1].type == "response.failed"
    failed = events[-1].response  # type: ignore[union-attr]
    assert failed.status == "failed" and failed.error is not None
    with sdk.responses.stream(model="fake-model", input="Hi") as stream:
        assert list(stream)[-1].type == "response.failed"
        with pytest.raises(RuntimeError):
            stream.get_final_response()  # the helper's own error: no response.completed


def test_function_calls(sdk: openai.OpenAI, fake: FakeLLM) -> None:
    fake.script = Script(tokens=[], tool_call=("get_weather", '{"city": "Paris"}'))
    tools = [
        {
            "type": "function",
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    with sdk.responses.stream(model="fake-model", input="Weather?", tools=tools) as stream:  # type: ignore[arg-type]
        final = stream.get_final_response()
    (call,) = final.output
    assert call.type == "function_call"
    assert (call.name, call.arguments) == ("get_weather", '{"city": "Paris"}')
    assert fake.requests[-1].json["tools"][0]["function"]["name"] == "get_weather"


def test_last_event_id_resumes_like_starting_after(
    sdk: openai.OpenAI, server: ServerProcess
) -> None:
    events = list(sdk.responses.create(model="fake-model", input="Go", stream=True))
    response_id = events[0].response.id  # type: ignore[union-attr]
    url = f"{server.url}/v1/responses/{response_id}?stream=true"
    with EventSource(url, last_event_id="4", retry_delay=0.01) as source:
        resumed = []
        for event in source:
            resumed.append(json.loads(event.data))
            if event.event in ("response.completed", "response.failed", "response.incomplete"):
                break
    assert [e["sequence_number"] for e in resumed] == list(range(5, len(events)))
    assert [e["type"] for e in resumed] == [e.type for e in events[5:]]


def test_an_oversized_request_is_413(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as refused:
        sdk.responses.create(model="fake-model", input="x" * 2_000_000)
    assert refused.value.status_code == 413


@pytest.mark.slow
@pytest.mark.skipif(
    local.find_local_model() is None or not local.xllamacpp_available(),
    reason="the local model extra is not installed",
)
def test_the_embedded_model_through_the_responses_api(start_server: StartServer) -> None:
    local_server = start_server()
    with openai.OpenAI(base_url=f"{local_server.url}/v1", api_key="unused") as client:
        events = list(
            client.responses.create(
                model="smollm2-135m-instruct",
                input="Name three colours.",
                max_output_tokens=24,
                stream=True,
            )
        )
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    # 24 tokens may not be enough for the whole answer: then the response is incomplete.
    assert events[-1].type in ("response.completed", "response.incomplete")
    final = events[-1].response  # type: ignore[union-attr]
    assert text == final.output_text and text.strip()
    assert generation_text(local_server, final.id) == text
