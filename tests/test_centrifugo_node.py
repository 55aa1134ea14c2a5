"""The official Centrifugo client, centrifuge-js (npm ``centrifuge``), against ``sluiceway serve``.

Each test runs one scenario of ``tests/node/centrifuge_scenarios.mjs`` (Node) against a real
server and asserts on the one line of JSON it prints: what the SDK received, in order, and the
flags it reported. Node and npm come from the system (``.ci/run`` installs them); the pinned
packages are installed with ``npm ci`` into ``tests/node/node_modules`` on first use.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from nodeproc import node_with_packages
from serverproc import ServerProcess, client_for, open_stream

NODE_DIR = Path(__file__).parent / "node"
SCRIPT = NODE_DIR / "centrifuge_scenarios.mjs"
SCENARIO_TIMEOUT = 60.0
COUNT = 5


@pytest.fixture(scope="module")
def node() -> str:
    """The ``node`` executable, with the pinned packages installed next to the script."""
    return node_with_packages(NODE_DIR, ["centrifuge"], "centrifuge-js interop")


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    """Clients may publish to ``chat:*`` only."""
    server = ServerProcess(env={"SLUICEWAY_WS_PUBLISH_CHANNELS": '["chat:*"]'}).start()
    yield server
    server.stop()


@pytest.fixture(params=["json", "protobuf"])
def encoding(request: pytest.FixtureRequest) -> str:
    """Each test in both of the SDK's encodings (its default build, and its Protobuf build
    over the ``centrifuge-protobuf`` subprotocol)."""
    value: str = request.param
    return value


def _command(
    node: str, server: ServerProcess, scenario: str, channel: str, encoding: str
) -> list[str]:
    return [node, str(SCRIPT), server.url, scenario, channel, str(COUNT), encoding]


def _parse(scenario: str, returncode: int, stdout: str, stderr: str) -> dict[str, Any]:
    assert returncode == 0, f"scenario {scenario} failed ({returncode}):\n{stderr}\n{stdout}"
    lines = stdout.strip().splitlines()
    assert len(lines) == 1, stdout
    result: dict[str, Any] = json.loads(lines[0])
    assert result["scenario"] == scenario
    return result


def run_scenario(
    node: str, server: ServerProcess, scenario: str, channel: str, encoding: str
) -> dict[str, Any]:
    result = subprocess.run(
        _command(node, server, scenario, channel, encoding),
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=SCENARIO_TIMEOUT,
        check=False,
    )
    return _parse(scenario, result.returncode, result.stdout, result.stderr)


def server_history(server: ServerProcess, channel: str) -> list[Any]:
    response = httpx.get(f"{server.url}/topics/{channel}/history", timeout=5.0)
    assert response.status_code == 200, response.text
    return [event["data"] for event in response.json()["events"]]


def seqs(data: list[dict[str, Any]]) -> list[int]:
    return [item["seq"] for item in data]


def offset_of(event_id: str) -> int:
    return int(event_id.rpartition("-")[2])


async def test_roundtrip_between_sdk_http_and_sse(
    node: str, server: ServerProcess, topic: str, encoding: str
) -> None:
    """The SDK's publish reaches the SDK's subscription and an SSE subscriber; publications made
    over HTTP reach the SDK, in order, with the offsets of the hub's ids."""
    channel = f"chat:{topic}"
    async with client_for(server) as http, open_stream(http, f"/topics/{channel}") as sse:
        proc = await asyncio.create_subprocess_exec(
            *_command(node, server, "roundtrip", channel, encoding),
            cwd=NODE_DIR,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(SCENARIO_TIMEOUT):
                stdout, stderr = await proc.communicate()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode is not None
        result = _parse("roundtrip", proc.returncode, stdout.decode(), stderr.decode())
        events = await sse.events(COUNT + 1, timeout=5.0)

    from_js = {"seq": 0, "from": "js"}
    from_http = [{"seq": seq, "from": "http"} for seq in range(1, COUNT + 1)]
    assert result["received"] == [from_js, *from_http]
    assert result["offsets"] == list(range(1, COUNT + 2))
    assert [json.loads(event.data) for event in events] == [from_js, *from_http]
    assert [event.id for event in events[1:]] == result["ids"]
    assert [offset_of(event_id) for event_id in result["ids"]] == list(range(2, COUNT + 2))


def test_publish_outside_allowed_channels_is_denied(
    node: str, server: ServerProcess, encoding: str
) -> None:
    result = run_scenario(node, server, "denied", "news:not-allowed", encoding)
    assert result == {
        "scenario": "denied",
        "published": False,
        "error": {"code": 103, "message": "permission denied"},
    }
    assert server_history(server, "news:not-allowed") == []


def test_recovery_after_a_lost_connection(
    node: str, server: ServerProcess, topic: str, encoding: str
) -> None:
    """The socket dies; what was published meanwhile arrives on resubscribe, flagged recovered,
    with no loss and no duplicate. ``since`` a known position recovers from there; ``since`` a
    position in another epoch says plainly that it did not recover and replays nothing."""
    result = run_scenario(node, server, "recover", f"feed.{topic}", encoding)

    assert result["disconnect"]["code"] == 1  # connectingCodes.transportClosed
    first, again = result["subscribed"]
    assert (first["recoverable"], first["wasRecovering"], first["recovered"]) == (
        True,
        False,
        False,
    )
    assert (again["wasRecovering"], again["recovered"]) == (True, True)
    assert again["hasRecoveredPublications"]  # the publications made while it was down
    assert again["streamPosition"]["epoch"] == first["streamPosition"]["epoch"]
    assert seqs(result["received"]) == list(range(1, 3 * COUNT + 1))
    assert result["offsets"] == list(range(1, 3 * COUNT + 1))

    assert result["since"] == {"offset": COUNT, "epoch": first["streamPosition"]["epoch"]}
    late = result["sinceSubscribed"]
    assert (late["wasRecovering"], late["recovered"]) == (True, True)
    assert seqs(result["sinceReceived"]) == list(range(COUNT + 1, 3 * COUNT + 1))

    bogus = result["bogusSubscribed"]
    assert (bogus["wasRecovering"], bogus["recovered"]) == (True, False)
    assert result["bogusReceived"] == []


def test_history_and_presence(node: str, server: ServerProcess, topic: str, encoding: str) -> None:
    result = run_scenario(node, server, "history", f"feed.{topic}", encoding)

    epoch = result["ids"][0].rpartition("-")[0]
    everything = list(range(1, COUNT + 1))
    assert result["top"] == {"data": [], "offsets": [], "offset": COUNT, "epoch": epoch}
    assert seqs(result["all"]["data"]) == everything
    assert result["all"]["offsets"] == everything
    assert (result["all"]["offset"], result["all"]["epoch"]) == (COUNT, epoch)
    assert seqs(result["firstTwo"]["data"]) == [1, 2]
    assert seqs(result["lastTwo"]["data"]) == [COUNT, COUNT - 1]
    assert seqs(result["since"]["data"]) == everything[1:]

    assert result["presenceClients"] == result["clientIds"]
    assert len(set(result["clientIds"])) == 2
    assert result["presenceStats"] == {"numClients": 2, "numUsers": 1}


def test_deltas_joins_and_leaves(
    node: str, server: ServerProcess, topic: str, encoding: str
) -> None:
    """The SDK asks for fossil deltas and joins/leaves: it rebuilds every state exactly, most
    from deltas, and hears its own join, the other client's join and its leave."""
    result = run_scenario(node, server, "realtime", f"dash.{topic}", encoding)
    assert result["received"] == list(range(1, COUNT + 1))
    assert result["lastReadings"] == result["expectedReadings"]
    assert result["numDelta"] >= COUNT - 1  # every publication after the first
    assert result["compression"] > 0.5  # the SDK's own count of bytes saved
    assert (result["joins"], result["leaves"], result["otherLeft"]) == (2, 1, True)
    assert result["rpcError"] == {"code": 104}  # this server has no RPC handler


def test_a_tags_filter(node: str, server: ServerProcess, topic: str, encoding: str) -> None:
    result = run_scenario(node, server, "filtered", f"prices.{topic}", encoding)
    assert result["received"] == list(range(1, COUNT + 1, 2))
    assert all(tags == {"ticker": "AAPL"} for tags in result["tags"])
