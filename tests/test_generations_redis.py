"""Generations across processes: two ``sluiceway serve`` sharing one Redis. A generation runs
where it was started; any process replays, resumes, describes and cancels it, in every wire
format, and a reader on another process keeps it from being abandoned."""

from __future__ import annotations

import time

import httpx
import openai
import pytest
from conftest import StartServer
from fake_llm import FakeLLM, Script
from redisproc import RedisCluster, RedisProcess
from serverproc import ServerProcess
from test_generations import follow, generate, llm_env, text_of

from sluiceway.client import EventSource
from sluiceway.sse import Parser

pytestmark = pytest.mark.slow

TOKENS = [f"t{n} " for n in range(12)]


@pytest.fixture(autouse=True)
def fresh_script(fake: FakeLLM) -> None:
    fake.script = Script()


@pytest.fixture
def pair(
    start_server: StartServer, shared_redis: RedisProcess | RedisCluster, fake: FakeLLM
) -> tuple[ServerProcess, ServerProcess]:
    # Two seconds: a reader on the other process attaches well within it, even on a loaded
    # machine (with one second, a run under load once saw the generation abandoned).
    env = llm_env(fake, abandon_after="2")
    return (
        start_server("--backend", shared_redis.url, env=env),
        start_server("--backend", shared_redis.url, env=env),
    )


def test_replay_resume_and_describe_on_another_process(
    pair: tuple[ServerProcess, ServerProcess], fake: FakeLLM
) -> None:
    first, second = pair
    fake.script = Script(tokens=TOKENS, token_interval=0.02)
    events = generate(first)
    generation_id = events[0].json()["id"]
    replayed = follow(second, generation_id)
    assert [(e.event, e.data, e.id) for e in replayed] == [(e.event, e.data, e.id) for e in events]
    resumed = follow(second, generation_id, last_event_id=events[4].id)
    assert [e.id for e in resumed] == [e.id for e in events[5:]]
    described = httpx.get(f"{second.url}/v1/generations/{generation_id}").json()
    assert described["state"] == "completed" and described["text"] == "".join(TOKENS)
    assert described["usage"]["completion_tokens"] == len(TOKENS)


def test_a_reader_on_another_process_keeps_it_from_being_abandoned(
    pair: tuple[ServerProcess, ServerProcess], fake: FakeLLM
) -> None:
    first, second = pair
    fake.script = Script(tokens=["x "] * 40, token_interval=0.1)  # 4 s, abandon_after is 2 s
    with EventSource(f"{first.url}/v1/generations", method="POST", json=ASK_BODY) as source:
        start = next(iter(source))
    generation_id = start.json()["id"]  # the client on the first process left at once
    events = follow(second, generation_id)
    assert events[-1].event == "done"
    assert events[-1].json()["finish_reason"] == "stop"
    assert text_of(events) == "x " * 40


def test_openai_responses_resume_and_cancel_on_another_process(
    pair: tuple[ServerProcess, ServerProcess], fake: FakeLLM
) -> None:
    first, second = pair
    fake.script = Script(tokens=TOKENS, token_interval=0.02)
    with openai.OpenAI(base_url=f"{first.url}/v1", api_key="x", max_retries=0) as on_first:
        events = list(on_first.responses.create(model="m", input="Go", stream=True))
    response_id = events[0].response.id  # type: ignore[union-attr]
    with openai.OpenAI(base_url=f"{second.url}/v1", api_key="x", max_retries=0) as on_second:
        resumed = list(
            on_second.responses.retrieve(response_id, stream=True, starting_after=3)  # type: ignore[call-overload]
        )
        assert [e.model_dump() for e in resumed] == [e.model_dump() for e in events[4:]]
        assert on_second.responses.retrieve(response_id).output_text == "".join(TOKENS)
        fake.script = Script(tokens=["slow "] * 200, token_interval=0.05)
        with openai.OpenAI(base_url=f"{first.url}/v1", api_key="x", max_retries=0) as on_first:
            started = on_first.responses.create(model="m", input="Go", background=True)
        time.sleep(0.3)
        closed_before = fake.closed
        cancel_at = time.monotonic()
        cancelled = on_second.responses.cancel(started.id)
        assert fake.wait_closed(closed_before + 1, timeout=1.0)
        assert time.monotonic() - cancel_at < 1.5
        assert cancelled.status == "cancelled"


def test_ai_sdk_chat_resumes_and_cancels_on_another_process(
    pair: tuple[ServerProcess, ServerProcess], fake: FakeLLM
) -> None:
    first, second = pair
    fake.script = Script(tokens=TOKENS, token_interval=0.02)
    chat_id = f"chat-{time.time_ns()}"
    body = {
        "id": chat_id,
        "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "Hi"}]}],
        "trigger": "submit-message",
    }
    original = httpx.post(f"{first.url}/api/chat", json=body, timeout=10).content
    resumed = httpx.get(f"{second.url}/api/chat/{chat_id}/stream", timeout=10)
    assert resumed.status_code == 200 and resumed.content == original
    assert httpx.get(f"{second.url}/api/chat/unknown-{chat_id}/stream").status_code == 204
    fake.script = Script(tokens=["slow "] * 200, token_interval=0.05)
    closed_before = fake.closed
    with httpx.stream("POST", f"{first.url}/api/chat", json=body, timeout=10) as streaming:
        parser = Parser()
        for chunk in streaming.iter_bytes():
            if any(e.data.startswith('{"type":"text-delta"') for e in parser.feed(chunk)):
                break
        cancelled = httpx.post(f"{second.url}/api/chat/{chat_id}/cancel", timeout=5)
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert fake.wait_closed(closed_before + 1, timeout=1.0)


ASK_BODY = {"messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 100}
