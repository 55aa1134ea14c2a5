"""``sluiceway publish``: publish one event, or one event per line of stdin.

It speaks HTTP with the standard library's ``http.client``: one POST per event on one
keep-alive connection needs nothing more, and importing httpx would double the command's
start time (``bench/cli_start.py``).
"""

from __future__ import annotations

import http.client
import sys
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, urlsplit

import click
import orjson


def _error_text(status: int, reason: str, body: bytes) -> str:
    try:
        found = orjson.loads(body)
        return f"{found['error']}: {found['detail']}"
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return body.decode("utf-8", "replace").strip()[:500] or reason or str(status)


def _lines(stream: Iterable[str]) -> Iterable[str]:
    for line in stream:
        yield line.removesuffix("\n").removesuffix("\r")


class _Server:
    """One keep-alive connection to the server at ``base`` (http or https)."""

    def __init__(self, base: str, timeout: float) -> None:
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise click.BadParameter(f"not an http(s) URL: {base!r}", param_hint="--server")
        kind = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        self.connection = kind(parts.hostname, parts.port, timeout=timeout)
        self.path = parts.path.rstrip("/")

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str, bytes]:
        for attempt in (1, 2):
            try:
                self.connection.request("POST", self.path + path, body=body, headers=headers)
                response = self.connection.getresponse()
                return response.status, response.reason, response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                # The server closed the kept-alive connection while stdin was quiet (uvicorn
                # does after 5 s): it never read this request, so it goes once more, anew.
                self.connection.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


@click.command()
@click.argument("topic")
@click.argument("data")
@click.option("--event", help="The event type (default: message).")
@click.option(
    "--server",
    envvar="SLUICEWAY_SERVER",
    default="http://127.0.0.1:8000",
    show_default=True,
    help="The server's base URL. [SLUICEWAY_SERVER]",
)
@click.option("--key", envvar="SLUICEWAY_PUBLISH_KEY", help="Publish key. [SLUICEWAY_PUBLISH_KEY]")
@click.option("--json-data", is_flag=True, help="DATA is JSON: publish the value it encodes.")
def publish(
    topic: str, data: str, event: str | None, server: str, key: str | None, json_data: bool
) -> None:
    """Publish DATA to TOPIC and print the event's id.

    With DATA '-', publish one event per line of stdin, printing one id per line; the first
    failure stops it with the line number (the lines before it are published).
    """
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    # Quoted, so that a name the server refuses ("a/b", "a b") reaches it as one segment and
    # is answered "invalid_topic", not another route's 404.
    path = f"/topics/{quote(topic, safe='')}"
    lines = _lines(sys.stdin) if data == "-" else [data]
    target = _Server(server, timeout=30.0)
    try:
        for number, line in enumerate(lines, start=1):
            where = f"line {number}: " if data == "-" else ""
            body: dict[str, Any] = {"data": _decode(line, where) if json_data else line}
            if event is not None:
                body["event"] = event
            status, reason, answer = target.post(path, orjson.dumps(body), headers)
            if status != 200:
                raise click.ClickException(f"{where}{status} {_error_text(status, reason, answer)}")
            click.echo(orjson.loads(answer)["id"])
    except (OSError, http.client.HTTPException) as exc:
        raise click.ClickException(f"cannot reach {server}: {exc}") from None
    finally:
        target.connection.close()


def _decode(line: str, where: str) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise click.ClickException(f"{where}not valid JSON: {exc}") from None
