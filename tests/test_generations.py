"""``/v1/generations`` against a real ``sluiceway serve`` in front of the fake upstream:
detached generations, exact resume, replay without a second upstream call, cancel and abandon
closing the upstream promptly, errors before and after the first token, limits."""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import StartServer
from fake_llm import FAKE_API_KEY, FakeLLM, Script
from serverproc import ServerProcess

from sluiceway.client import EventSource, HTTPStatusError
from sluiceway.sse import Event

API_KEY = FAKE_API_KEY
ASK = {"messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 64}


def llm_env(fake: FakeLLM, provider: str = "openai", **settings: str) -> dict[str, str]:
    env = {
        "SLUICEWAY_LLM_PROVIDER": provider,
        "SLUICEWAY_LLM_BASE_URL": fake.url + ("/v1" if provider == "openai" else ""),
        "SLUICEWAY_LLM_API_KEY": API_KEY,
        "SLUICEWAY_LLM_MODEL": "fake-model",
    }
    env.update({f"SLUICEWAY_LLM_{name.upper()}": value for name, value in settings.items()})
    return env


@pytest.fixture(scope="module")
def server(fake: FakeLLM) -> Iterator[ServerProcess]:
    process = ServerProcess(env=llm_env(fake, abandon_after="0.5")).start()
    yield process
    process.stop()


@pytest.fixture(autouse=True)
def fresh_script(fake: FakeLLM) -> None:
    fake.script = Script()


def generate(server: ServerProcess, body: dict[str, Any] = ASK, **options: Any) -> list[Event]:
    source = EventSource(f"{server.url}/v1/generations", method="POST", json=body, **options)
    with source:
        return list(source)


def follow(server: ServerProcess, generation_id: str, last_event_id: str = "") -> list[Event]:
    url = f"{server.url}/v1/generations/{generation_id}/stream"
    with EventSource(url, last_event_id=last_event_id, retry_delay=0.01) as source:
        return list(source)  # a finished generation answers the reconnect with 204


def text_of(events: list[Event]) -> str:
    return "".join(e.json()["text"] for e in events if e.event == "token")


def test_a_generation_streams_start_tokens_and_done(server: ServerProcess, fake: FakeLLM) -> None:
    fake.script = Script(tokens=["Hel", "lo", " there"], prompt_tokens=7)
    events = generate(server)
    assert [e.event for e in events] == ["start", "token", "token", "token", "done"]
    start, done = events[0].json(), events[-1].json()
    assert start["model"] == "fake-model" and start["provider"] == "openai"
    assert text_of(events) == "Hello there"
    assert done["finish_reason"] == "stop"
    assert done["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    assert done["ttft_ms"] >= 0 and done["output_tokens"] == 3
    upstream = fake.requests[-1]
    assert upstream.json["stream_options"] == {"include_usage": True}
    assert upstream.headers["authorization"] == f"Bearer {API_KEY}"


def test_resume_from_any_event_id_is_exact_and_calls_the_provider_once(
    server: ServerProcess, fake: FakeLLM
) -> None:
    fake.script = Script(tokens=[f"t{n} " for n in range(12)])
    events = generate(server)
    generation_id = events[0].json()["id"]
    requests = len(fake.requests)
    assert follow(server, generation_id) == events  # a late client replays it all
    for index in (0, 1, 6, len(events) - 2):
        replay = follow(server, generation_id, last_event_id=events[index].id or "")
        assert replay == events[index + 1 :], index
    assert follow(server, generation_id, last_event_id=events[-1].id or "") == []  # 204
    assert len(fake.requests) == requests  # replays never call the provider again


def test_clients_attach_mid_generation_and_see_the_same_events(
    server: ServerProcess, fake: FakeLLM
) -> None:
    fake.script = Script(tokens=[f"{n}," for n in range(10)], token_interval=0.05)
    url = f"{server.url}/v1/generations"
    with EventSource(url, method="POST", json=ASK) as first:
        iterator = iter(first)
        start = next(iterator)
        second_token = [next(iterator), next(iterator)][-1]
        late = follow(server, start.json()["id"], last_event_id=second_token.id or "")
        rest = list(iterator)
    assert late == rest
    assert text_of(rest) == "".join(f"{n}," for n in range(2, 10))


def test_cancel_closes_the_upstream_within_a_second(server: ServerProcess, fake: FakeLLM) -> None:
    fake.script = Script(tokens=["x"] * 100, token_interval=0.2)
    closed_before = fake.closed
    url = f"{server.url}/v1/generations"
    with EventSource(url, method="POST", json=ASK) as source:
        iterator = iter(source)
        generation_id = next(iterator).json()["id"]
        next(iterator)  # a first token
        cancelled_at = time.monotonic()
        answer = httpx.post(f"{server.url}/v1/generations/{generation_id}/cancel")
        rest = list(iterator)
    assert answer.status_code == 200 and answer.json()["state"] == "cancelled"
    assert fake.wait_closed(closed_before + 1, timeout=2)
    assert fake.closed_at[-1] - cancelled_at < 1.0
    assert rest[-1].event == "done" and rest[-1].json()["finish_reason"] == "cancelled"
    again = httpx.post(f"{server.url}/v1/generations/{generation_id}/cancel")
    assert again.json() == {"id": generation_id, "state": "cancelled"}  # idempotent


def test_a_generation_nobody_watches_is_cancelled_after_the_grace_period(
    server: ServerProcess, fake: FakeLLM
) -> None:
    fake.script = Script(tokens=["x"] * 200, token_interval=0.1)
    closed_before = fake.closed
    with EventSource(f"{server.url}/v1/generations", method="POST", json=ASK) as source:
        generation_id = next(iter(source)).json()["id"]
    left_at = time.monotonic()  # the only client left; the grace period is 0.5 s
    assert fake.wait_closed(closed_before + 1, timeout=5)
    assert fake.closed_at[-1] - left_at < 0.5 + 1.0
    state = httpx.get(f"{server.url}/v1/generations/{generation_id}").json()
    assert state["state"] == "abandoned"
    assert follow(server, generation_id)[-1].json()["finish_reason"] == "abandoned"


def test_with_on_abandon_finish_the_generation_completes_unwatched(
    start_server: StartServer, fake: FakeLLM
) -> None:
    server = start_server(env=llm_env(fake, abandon_after="0.2", on_abandon="finish"))
    fake.script = Script(tokens=["a"] * 10, token_interval=0.1)
    with EventSource(f"{server.url}/v1/generations", method="POST", json=ASK) as source:
        generation_id = next(iter(source)).json()["id"]
    events = follow(server, generation_id)
    assert text_of(events) == "a" * 10
    assert events[-1].json()["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("script", "status", "code"),
    [
        (Script(status=401), 401, "unauthorized"),
        (Script(status=404), 404, "not_found"),
        (Script(status=429, retry_after=7), 429, "rate_limited"),
        (Script(status=500), 502, "upstream_error"),
        (Script(status=503), 502, "upstream_unavailable"),
    ],
)
def test_errors_before_the_first_token_are_http_statuses(
    server: ServerProcess, fake: FakeLLM, script: Script, status: int, code: str
) -> None:
    fake.script = script
    answer = httpx.post(f"{server.url}/v1/generations", json=ASK, timeout=10)
    assert answer.status_code == status
    error = answer.json()
    assert error["error"] == code
    assert "the provider answered" in error["detail"]
    assert API_KEY not in answer.text
    if status == 429:
        assert error["retry_after"] == 7


def test_an_unreachable_provider_is_502_and_a_silent_one_504(
    start_server: StartServer, fake: FakeLLM
) -> None:
    env = llm_env(fake, first_token_timeout="0.5")
    env["SLUICEWAY_LLM_BASE_URL"] = "http://127.0.0.1:9/v1"
    down = start_server(env=env)
    answer = httpx.post(f"{down.url}/v1/generations", json=ASK, timeout=10)
    assert answer.status_code == 502 and "cannot reach the provider" in answer.text
    slow = start_server(env=llm_env(fake, first_token_timeout="0.5"))
    fake.script = Script(first_token_delay=5)
    answer = httpx.post(f"{slow.url}/v1/generations", json=ASK, timeout=10)
    assert answer.status_code == 504 and answer.json()["error"] == "timeout"
    assert API_KEY not in down.output() + slow.output()


def test_an_error_after_the_first_token_is_an_error_event(
    server: ServerProcess, fake: FakeLLM
) -> None:
    fake.script = Script(tokens=["a", "b", "c"], error_after=2)
    events = generate(server)
    assert [e.event for e in events] == ["start", "token", "token", "error"]
    assert events[-1].json()["error"] == "upstream_error"
    assert API_KEY not in events[-1].data


def test_limits_max_tokens_concurrency_and_duration(
    start_server: StartServer, fake: FakeLLM
) -> None:
    server = start_server(env=llm_env(fake, max_concurrent="1", max_tokens="100", max_duration="1"))
    with pytest.raises(HTTPStatusError) as caught:
        generate(server, {**ASK, "max_tokens": 101})
    assert caught.value.status == 400 and "max_tokens" in caught.value.body
    fake.script = Script(tokens=["x"] * 100, token_interval=0.05)
    with EventSource(f"{server.url}/v1/generations", method="POST", json=ASK) as running:
        iterator = iter(running)
        next(iterator)
        refused = httpx.post(f"{server.url}/v1/generations", json=ASK, timeout=10)
        assert refused.status_code == 429 and refused.json()["error"] == "too_many_generations"
        rest = list(iterator)
    assert rest[-1].json()["finish_reason"] == "time_limit"  # 1 s of a 5 s answer
    assert fake.wait_closed(1, timeout=2)


def test_the_max_tokens_of_the_request_stops_the_answer(
    server: ServerProcess, fake: FakeLLM
) -> None:
    for ignored in (False, True):  # the provider stops at max_tokens, or we stop reading
        fake.script = Script(tokens=["x"] * 20, prompt_tokens=9, ignore_max_tokens=ignored)
        events = generate(server, {**ASK, "max_tokens": 5})
        assert text_of(events) == "xxxxx"
        done = events[-1].json()
        assert done["finish_reason"] == "length"
        # The usage comes after the last delta: it is read even so.
        assert done["usage"]["prompt_tokens"] == 9, ignored


def test_partial_json_events_show_the_value_as_it_forms(
    server: ServerProcess, fake: FakeLLM
) -> None:
    pieces = ['{"name": "Ad', 'a", "langs": ["e', 'n", "fr"]', ', "age": 36}']
    fake.script = Script(tokens=pieces, token_interval=0.15)
    events = generate(server, {**ASK, "partial_json": True})
    partials = [e.json()["value"] for e in events if e.event == "partial"]
    assert partials[0] == {"name": "Ad"}
    assert {"name": "Ada", "langs": ["e"]} in partials
    assert partials[-1] == {"name": "Ada", "langs": ["en", "fr"], "age": 36}
    assert events[-1].json()["value"] == {"name": "Ada", "langs": ["en", "fr"], "age": 36}
    fake.script = Script(tokens=['{"a": ', "oops"])
    broken = generate(server, {**ASK, "partial_json": True})
    assert "parse_error" in broken[-1].json()


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{nope", 400, "invalid_json"),
        (b"{}", 422, "invalid_body"),
        (b'{"messages": [{"role": "wizard", "content": "x"}]}', 422, "invalid_body"),
        (b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}', 422, "invalid_body"),
        (b'{"messages": [{"role": "user", "content": "x"}], "extra": 1}', 422, "invalid_body"),
    ],
)
def test_bad_requests_are_refused_before_the_provider_is_called(
    server: ServerProcess, fake: FakeLLM, body: bytes, status: int, code: str
) -> None:
    before = len(fake.requests)
    answer = httpx.post(f"{server.url}/v1/generations", content=body)
    assert answer.status_code == status
    assert answer.json()["error"] == code
    assert len(fake.requests) == before


def test_unknown_generations_and_bad_ids(server: ServerProcess) -> None:
    assert httpx.get(f"{server.url}/v1/generations/gen_nope").status_code == 404
    assert httpx.get(f"{server.url}/v1/generations/gen_nope/stream").status_code == 404
    assert httpx.post(f"{server.url}/v1/generations/gen_nope/cancel").status_code == 404


@pytest.mark.parametrize(
    "last_event_id", ["nonsense", "ffffffff-3", "{epoch}-999", "{epoch}-1,x-1"]
)
def test_a_last_event_id_that_is_not_the_generations_is_a_400(
    server: ServerProcess, fake: FakeLLM, last_event_id: str
) -> None:
    """Resuming from it would silently skip or repeat tokens (it used to be a 200 whose
    first event said the position was reset)."""
    events = generate(server)
    generation_id = events[0].json()["id"]
    epoch = (events[0].id or "").split("-")[0]
    answer = httpx.get(
        f"{server.url}/v1/generations/{generation_id}/stream",
        headers={"last-event-id": last_event_id.format(epoch=epoch)},
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid_last_event_id"


def sample(metrics: dict[str, float], name: str, **labels: str) -> float:
    """The value of the sample ``name`` whose labels include ``labels`` (in any order)."""
    wanted = {f'{key}="{value}"' for key, value in labels.items()}
    for key, value in metrics.items():
        sample_name, _, label_text = key.partition("{")
        if sample_name == name and wanted <= set(label_text.rstrip("}").split(",")):
            return value
    raise KeyError(f"{name} {labels} not in {sorted(k for k in metrics if name in k)}")


def test_generation_metrics(server: ServerProcess, fake: FakeLLM) -> None:
    generate(server)
    metrics = server.metrics()
    labels = {"provider": "openai", "model": "fake-model"}
    assert sample(metrics, "sluiceway_llm_time_to_first_token_seconds_count", **labels) >= 1
    assert sample(metrics, "sluiceway_llm_generations_total", **labels, outcome="completed") >= 1
    assert sample(metrics, "sluiceway_llm_output_tokens_total", **labels) >= 4
    assert sample(metrics, "sluiceway_llm_inter_token_seconds_count", **labels) >= 3
    assert sample(metrics, "sluiceway_llm_active_generations", **labels) == 0


def test_pacing_spaces_tokens_and_merges_them_when_behind(
    server: ServerProcess, fake: FakeLLM
) -> None:
    fake.script = Script(tokens=[f"{n} " for n in range(20)])  # all at once
    arrivals: list[tuple[float, Event]] = []
    source = EventSource(f"{server.url}/v1/generations", method="POST", json={**ASK, "pace": 20})
    with source:
        arrivals = [(time.monotonic(), event) for event in source]
    tokens = [(at, e) for at, e in arrivals if e.event == "token"]
    assert text_of([e for _, e in tokens]) == "".join(f"{n} " for n in range(20))
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(tokens)]
    assert min(gaps) >= 0.03  # 20 tokens/s: about 50 ms apart, not a burst
    generation_id = arrivals[0][1].json()["id"]
    # A replay at 5 tokens/s is 4 s behind from the start: the backlog is merged.
    replay = follow_paced(server, generation_id, pace=5)
    assert text_of(replay) == "".join(f"{n} " for n in range(20))
    assert len([e for e in replay if e.event == "token"]) < 20
    assert replay[-1].event == "done"


def follow_paced(server: ServerProcess, generation_id: str, pace: float) -> list[Event]:
    url = f"{server.url}/v1/generations/{generation_id}/stream?pace={pace}"
    with EventSource(url, retry_delay=0.01) as source:
        return list(source)


async def test_a_remote_api_takes_more_than_a_handful_of_users_at_once(
    server: ServerProcess, fake: FakeLLM
) -> None:
    """``llm_max_concurrent`` unset: a remote API serves hundreds at once (the 17th user used
    to get a 429); the local model's default is in test_llm_local."""
    fake.script = Script(tokens=["a", "b"], stall_after=1)
    users = 40
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=10) as client,
        contextlib.AsyncExitStack() as streams,
    ):
        for _ in range(users):
            response = await streams.enter_async_context(
                client.stream("POST", "/v1/generations", json=ASK)
            )
            assert response.status_code == 200
        assert fake.wait_open(users, timeout=5)


def test_the_concurrency_bound_fits_the_provider_unless_set() -> None:
    from sluiceway.server.settings import Settings

    def bound(**values: Any) -> int:
        return Settings(**values).generation_limits().max_concurrent

    assert bound(llm_provider="local") == 64  # one at a time on the CPU: the rest queue
    assert bound(llm_provider="openai") == bound(llm_provider="anthropic") == 1024
    assert bound(llm_provider="openai", llm_max_concurrent=16) == 16
