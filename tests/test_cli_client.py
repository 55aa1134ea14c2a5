"""``sluiceway publish`` and ``sluiceway tail`` as subprocesses against a real server."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
from conftest import StartServer
from serverproc import ServerProcess
from sse_servers import Connection, ScriptedServer


def sluiceway(
    *args: str, stdin: str | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sluiceway.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def tail_process(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sluiceway.cli", "tail", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def history(server: ServerProcess, topic: str) -> list[dict]:
    return httpx.get(f"{server.url}/topics/{topic}/history").json()["events"]


def test_publish_one_event_prints_its_id(default_server: ServerProcess, topic: str) -> None:
    result = sluiceway(
        "publish", topic, "hello", "--event", "greeting", "--server", default_server.url
    )
    assert result.returncode == 0, result.stderr
    [event] = history(default_server, topic)
    assert result.stdout.strip() == event["id"]
    assert (event["event"], event["data"]) == ("greeting", "hello")


def test_publish_reads_one_event_per_line_of_stdin(
    default_server: ServerProcess, topic: str
) -> None:
    result = sluiceway("publish", topic, "-", "--server", default_server.url, stdin="a\nb b\r\nc\n")
    assert result.returncode == 0, result.stderr
    events = history(default_server, topic)
    assert [e["data"] for e in events] == ["a", "b b", "c"]
    assert result.stdout.split() == [e["id"] for e in events]


def test_publish_json_data_stops_at_the_first_bad_line(
    default_server: ServerProcess, topic: str
) -> None:
    result = sluiceway(
        "publish",
        topic,
        "-",
        "--json-data",
        "--server",
        default_server.url,
        stdin='{"n": 1}\nnot json\n{"n": 3}\n',
    )
    assert result.returncode == 1
    assert "line 2: not valid JSON" in result.stderr
    assert [e["data"] for e in history(default_server, topic)] == ['{"n":1}']


def test_publish_reports_the_servers_error(start_server: StartServer) -> None:
    server = start_server("--publish-key", "sekrit")
    refused = sluiceway("publish", "t", "x", "--server", server.url)
    assert refused.returncode == 1
    assert "401 unauthorized" in refused.stderr
    accepted = sluiceway("publish", "t", "x", "--server", server.url, "--key", "sekrit")
    assert accepted.returncode == 0, accepted.stderr


def test_publish_to_an_unreachable_server_fails_clearly() -> None:
    result = sluiceway("publish", "t", "x", "--server", "http://127.0.0.1:9")
    assert result.returncode == 1
    assert "cannot reach http://127.0.0.1:9" in result.stderr


def wait_for_line(stream: object, needle: str, timeout: float = 15) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stream.readline()  # type: ignore[attr-defined]
        if not line:
            break
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"{needle!r} not seen in {lines}")


def test_tail_json_filters_and_resumes(default_server: ServerProcess, topic: str) -> None:
    url = f"{default_server.url}/topics/{topic}"
    ids = [
        httpx.post(url, json={"data": data, "event": kind}).json()["id"]
        for data, kind in [("a", "x"), ("b", "y"), ("c", "x"), ("d", "x")]
    ]
    result = sluiceway("tail", url, "--json", "--event", "x", "--last-event-id", ids[0], "-n", "2")
    assert result.returncode == 0, result.stderr
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {"id": ids[2], "event": "x", "data": "c"},
        {"id": ids[3], "event": "x", "data": "d"},
    ]


def test_tail_reports_reconnects_and_resets_across_a_restart(start_server: StartServer) -> None:
    server = start_server("--retry-ms", "50")
    url = f"{server.url}/topics/news"
    first = httpx.post(url, json={"data": "before"}).json()["id"]
    tail = tail_process(url, "--last-event-id", first.replace("-1", "-0"), "-H", "X-Test: 1")
    try:
        assert wait_for_line(tail.stdout, "before")
        server.restart()
        wait_for_line(tail.stderr, "reconnecting from id " + first)
        wait_for_line(tail.stderr, "reset: topic 'news' lost events (unknown_epoch)")
        httpx.post(url, json={"data": "after"}).raise_for_status()
        assert wait_for_line(tail.stdout, "after") == ["after\n"]
    finally:
        tail.terminate()
        tail.wait(10)


def test_tail_exits_with_the_status_of_a_refused_request(default_server: ServerProcess) -> None:
    result = sluiceway("tail", f"{default_server.url}/no/such/path")
    assert result.returncode == 1
    assert "answered 404" in result.stderr
    bad_header = sluiceway("tail", default_server.url, "-H", "no colon")
    assert bad_header.returncode == 2
    assert "expected 'Name: value'" in bad_header.stderr


def test_tail_posts_json_and_ends_with_the_answer() -> None:
    async def echo(connection: Connection) -> None:
        request = connection.request
        await connection.send_head()
        await connection.send(b"id: 1\ndata: %s %s\n\n" % (request.method.encode(), request.body))
        await connection.end()

    with ScriptedServer(echo) as server:
        result = sluiceway("tail", f"{server.url}/gen", "-d", '{"a": 1}')
    assert result.returncode == 0, result.stderr
    assert result.stdout == 'POST {"a":1}\n'
    assert len(server.requests) == 1  # a finished POST stream is not sent again


def test_tail_shows_the_json_error_of_a_refused_post(default_server: ServerProcess) -> None:
    result = sluiceway("tail", f"{default_server.url}/topics/x", "-d", '{"a": 1}')
    assert result.returncode == 1
    assert "POST" in result.stderr and "answered 422" in result.stderr
    assert "missing_data" in result.stderr
    invalid = sluiceway("tail", f"{default_server.url}/topics/x", "-d", "{nope")
    assert invalid.returncode == 2
    assert "not valid JSON" in invalid.stderr


def test_tail_says_when_it_never_connected() -> None:
    result = sluiceway(
        "tail", "http://127.0.0.1:9/topics/x", "--max-attempts", "2", "--retry-delay", "0.05"
    )
    assert result.returncode == 1
    assert "never connected to http://127.0.0.1:9/topics/x" in result.stderr
    assert "Connection refused" in result.stderr
    assert "reconnecting" not in result.stderr  # it never was connected


def test_a_topic_with_a_slash_is_refused_as_invalid(default_server: ServerProcess) -> None:
    for bad in ("a/b", "a/b/history/x"):
        result = sluiceway("publish", bad, "x", "--server", default_server.url)
        assert result.returncode == 1
        assert "400 invalid_topic" in result.stderr, result.stderr
    for path in ("/topics/a/b", "/topics/a%2Fb", "/topics/a/b/history"):
        answer = httpx.get(default_server.url + path)
        assert (answer.status_code, answer.json()["error"]) == (400, "invalid_topic"), path
    answer = httpx.post(default_server.url + "/topics/a/history", json={"data": 1})
    assert (answer.status_code, answer.json()["error"]) == (405, "method_not_allowed")


def test_version_and_help_name_every_command() -> None:
    version = sluiceway("--version")
    assert version.returncode == 0
    assert version.stdout.startswith("sluiceway ") and version.stdout.strip()[-1].isdigit()
    listed = sluiceway("--help").stdout
    for command in ("serve", "tail", "publish", "demo-data"):
        assert command in listed


def test_publish_and_tail_never_import_the_server() -> None:
    """What keeps them fast (bench/cli_start.py measures it): neither loads the server, its
    database layer, nor (publish) httpx."""
    check = (
        "import sys; from sluiceway.cli.commands import main; "
        "main.get_command(None, 'publish'); main.get_command(None, 'tail'); "
        "loaded = [m for m in ('sluiceway.server', 'sqlalchemy', 'uvicorn', 'starlette') "
        "if m in sys.modules]; assert not loaded, loaded"
    )
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    publish_only = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; import sluiceway.cli.publish; assert 'httpx' not in sys.modules",
        ],
        capture_output=True,
        text=True,
    )
    assert publish_only.returncode == 0, publish_only.stderr


def test_publish_from_stdin_goes_on_after_the_server_closed_an_idle_connection(
    default_server: ServerProcess, topic: str
) -> None:
    """`tail -f log | sluiceway publish t -`: lines may come minutes apart, and the server
    closes a kept-alive connection idle for 5 s; the next line goes on a new one."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sluiceway.cli",
            "publish",
            topic,
            "-",
            "--server",
            default_server.url,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None
    process.stdin.write("one\n")
    process.stdin.flush()
    time.sleep(6.5)  # past uvicorn's keep-alive timeout
    out, err = process.communicate("two\n", timeout=30)
    assert process.returncode == 0, err
    assert len(out.split()) == 2
    assert [e["data"] for e in history(default_server, topic)] == ["one", "two"]
