"""The Vercel AI SDK (npm ``ai``) against ``POST /api/chat`` of a real ``sluiceway serve``.

Each test runs a scenario of ``tests/node_ai/chat_scenarios.mjs`` (Node) and asserts on the one
line of JSON it prints: the assistant message the SDK assembled (``readUIMessageStream``, or the
``AbstractChat`` core of ``useChat``), the chunks it received, and the errors it raised.  The SDK
validates every chunk against its own ``uiMessageChunkSchema`` as it reads, so a chunk of the
wrong shape fails the scenario.  Every test runs with both pinned majors: ``ai`` 6.x and 5.x
(installed as ``ai5``).  Node and npm come from the system (``.ci/run`` installs them); the
packages are installed with ``npm ci`` into ``tests/node_ai/node_modules`` on first use.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_llm import FakeLLM, Script
from nodeproc import node_with_packages
from serverproc import ServerProcess
from test_generations import API_KEY, llm_env

NODE_DIR = Path(__file__).parent / "node_ai"
SCRIPT = NODE_DIR / "chat_scenarios.mjs"
SCENARIO_TIMEOUT = 60.0

#: The pinned SDK packages (tests/node_ai/package.json): the current major, and ai 5.
PACKAGES = ["ai", "ai5"]


@pytest.fixture(scope="module")
def node() -> str:
    """The ``node`` executable, with the pinned packages installed next to the script."""
    return node_with_packages(NODE_DIR, PACKAGES, "the Vercel AI SDK interop")


@pytest.fixture(scope="module")
def server(fake: FakeLLM) -> Iterator[ServerProcess]:
    process = ServerProcess(env=llm_env(fake)).start()
    yield process
    process.stop()


@pytest.fixture(autouse=True)
def fresh_script(fake: FakeLLM) -> None:
    fake.reset()


@pytest.fixture(params=PACKAGES)
def package(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def chat_id(request: pytest.FixtureRequest) -> str:
    return f"{request.node.name}-{time.monotonic_ns()}"


def run_scenario(
    node: str,
    server: ServerProcess,
    package: str,
    scenario: str,
    chat_id: str,
    **options: Any,
) -> dict[str, Any]:
    result = subprocess.run(
        [node, str(SCRIPT), server.url, scenario, chat_id, json.dumps(options)],
        cwd=NODE_DIR,
        env={**os.environ, "AI_PACKAGE": package},
        capture_output=True,
        text=True,
        timeout=SCENARIO_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, (
        f"scenario {scenario} failed ({result.returncode}):\n{result.stderr}\n{result.stdout}"
    )
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    parsed: dict[str, Any] = json.loads(lines[0])
    assert (parsed["scenario"], parsed["package"]) == (scenario, package)
    return parsed


def generation(server: ServerProcess, generation_id: str) -> dict[str, Any]:
    answer = httpx.get(f"{server.url}/v1/generations/{generation_id}", timeout=5.0)
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def part_types(message: dict[str, Any]) -> list[str]:
    return [part["type"] for part in message["parts"]]


def test_the_sdk_assembles_the_answer(
    node: str, server: ServerProcess, fake: FakeLLM, package: str, chat_id: str
) -> None:
    fake.script = Script(tokens=["Hel", "lo", ",", " wor", "ld", "!"], prompt_tokens=5)
    result = run_scenario(node, server, package, "send", chat_id)
    assert result["phase"] == "stream" and result["error"] is None
    message = result["message"]
    state = generation(server, message["id"])  # the message id is the generation id
    assert result["text"] == state["text"] == "Hello, world!"
    assert message["role"] == "assistant"
    assert message["metadata"] == {"generationId": message["id"], "model": "fake-model"}
    assert part_types(message) == ["step-start", "text", "data-usage", "data-timing"]
    assert message["parts"][1]["state"] == "done"
    usage = {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}
    assert message["parts"][2] == {"type": "data-usage", "id": "usage", "data": usage}
    assert result["types"][-1] == "finish"
    assert result["chunks"][-1] == {"type": "finish", "finishReason": "stop"}
    assert fake.requests[-1].json["messages"] == [{"role": "user", "content": "Say hello"}]


def test_reconnect_to_an_unknown_chat_is_nothing(
    node: str, server: ServerProcess, package: str, chat_id: str
) -> None:
    assert run_scenario(node, server, package, "reconnect", chat_id)["none"] is True


def test_reconnect_mid_answer_yields_the_same_full_text(
    node: str, server: ServerProcess, fake: FakeLLM, package: str, chat_id: str
) -> None:
    fake.script = Script(tokens=[f"w{n} " for n in range(20)], token_interval=0.03)
    result = run_scenario(node, server, package, "interrupt", chat_id, stopAfterChars=4)
    partial, resumed = result["partial"], result["resumed"]
    assert partial["stopped"] and partial["error"] is None
    assert resumed["error"] is None
    full = generation(server, resumed["message"]["id"])["text"]
    assert full == "".join(f"w{n} " for n in range(20))
    assert 4 <= len(partial["text"]) < len(full) and full.startswith(partial["text"])
    assert resumed["text"] == full
    assert resumed["message"]["id"] == partial["message"]["id"]
    assert resumed["types"][-1] == "finish"
    assert len(fake.requests) == 1  # one provider call for both readers


def test_the_chat_core_sends_and_a_reload_resumes(
    node: str, server: ServerProcess, fake: FakeLLM, package: str, chat_id: str
) -> None:
    """AbstractChat (what useChat wraps): sendMessage, then resumeStream in a fresh Chat with
    the saved messages — the replay replaces the answer, it does not add a second one."""
    fake.script = Script(tokens=["Bon", "jour"])
    result = run_scenario(node, server, package, "chat", chat_id)
    for key in ("sent", "reloaded"):
        chat = result[key]
        assert (chat["status"], chat["error"]) == ("ready", None), key
        assert chat["roles"] == ["user", "assistant"], key
        assert chat["text"] == "Bonjour", key
        assert chat["finishes"] == [
            {
                "text": "Bonjour",
                "isAbort": False,
                "isError": False,
                "isDisconnect": False,
                "finishReason": "stop",  # from the finish chunk
            }
        ], key
    assert result["reloaded"]["message"] == result["sent"]["message"]


def test_stop_is_a_disconnect_and_resume_completes_the_same_message(
    node: str, server: ServerProcess, fake: FakeLLM, package: str, chat_id: str
) -> None:
    fake.script = Script(tokens=[f"{n}," for n in range(20)], token_interval=0.03)
    result = run_scenario(node, server, package, "chat-stop-resume", chat_id, stopAfterChars=3)
    stopped, resumed = result["stopped"], result["resumed"]
    assert stopped["finishes"][0]["isAbort"] is True
    full = "".join(f"{n}," for n in range(20))
    assert full.startswith(stopped["text"]) and len(stopped["text"]) < len(full)
    assert resumed["roles"] == ["user", "assistant"]  # replaced, not added
    assert (resumed["status"], resumed["text"]) == ("ready", full)
    assert resumed["message"]["id"] == stopped["message"]["id"]


def test_an_error_before_the_first_token_is_the_sdks_error(
    node: str, server: ServerProcess, fake: FakeLLM, package: str, chat_id: str
) -> None:
    fake.script = Script(status=429, retry_after=3)
    result = run_scenario(node, server, package, "send", chat_id)
    assert result["phase"] == "send"
    error = json.loads(result["error"])  # the transport raises the body as the message
    assert error["error"] == "rate_limited" and error["retry_after"] == 3
    assert "the provider answered" in error["detail"]
    assert API_KEY not in result["error"]


def test_an_error_after_the_first_token_is_the_sdks_error(
    node: str, server: ServerProcess, fake: FakeLLM, package: str, chat_id: str
) -> None:
    fake.script = Script(tokens=["a", "b", "c"], error_after=2)
    result = run_scenario(node, server, package, "send", chat_id)
    assert result["phase"] == "stream"
    assert json.loads(result["error"])["error"] == "upstream_error"
    assert result["text"] == "ab"
    assert result["types"][-1] == "error"


def test_a_cancelled_answer_ends_with_abort(
    node: str, server: ServerProcess, fake: FakeLLM, package: str, chat_id: str
) -> None:
    fake.script = Script(tokens=["x"] * 200, token_interval=0.05)
    parts = [{"type": "text", "text": "go"}]
    body = {"id": chat_id, "messages": [{"id": "u", "role": "user", "parts": parts}]}
    with (
        httpx.Client(base_url=server.url, timeout=10.0) as http,
        http.stream("POST", "/api/chat", json=body) as response,
    ):
        lines = response.iter_lines()
        while '"text-delta"' not in next(lines):
            pass
        assert http.post(f"/api/chat/{chat_id}/cancel").json()["state"] == "cancelled"
    result = run_scenario(node, server, package, "reconnect", chat_id)
    assert result["error"] is None
    assert result["types"][-1] == "abort" and "finish" not in result["types"]
    assert result["text"] == generation(server, result["message"]["id"])["text"]


@pytest.mark.parametrize(
    ("script", "code", "text"),
    [
        (Script(status=401), "unauthorized", None),
        (Script(tokens=["a", "b", "c"], error_after=2), "upstream_error", "ab"),
    ],
    ids=["before-first-token", "after-first-token"],
)
def test_errors_reach_the_chat_core_as_its_error(
    node: str,
    server: ServerProcess,
    fake: FakeLLM,
    package: str,
    chat_id: str,
    script: Script,
    code: str,
    text: str | None,
) -> None:
    """``chat.error`` / ``status: "error"``, with our JSON error as the message; a reload
    resumes to the same state (a failure before the first token left nothing to resume)."""
    fake.script = script
    result = run_scenario(node, server, package, "chat", chat_id)
    sent, reloaded = result["sent"], result["reloaded"]
    assert sent["status"] == "error"
    assert json.loads(sent["error"])["error"] == code
    assert sent["text"] == text
    assert sent["finishes"][0]["isError"] is True
    if text is None:
        assert (reloaded["status"], reloaded["roles"]) == ("ready", ["user"])
    else:
        assert (reloaded["status"], reloaded["error"]) == ("error", sent["error"])
        assert reloaded["message"] == sent["message"]
