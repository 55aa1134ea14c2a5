"""``sluiceway publish``: publish one event, or one event per line of stdin."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

import click
import httpx
import orjson


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
        return f"{body['error']}: {body['detail']}"
    except (ValueError, KeyError, TypeError):
        return response.text.strip()[:500] or response.reason_phrase


def _lines(stream: Iterable[str]) -> Iterable[str]:
    for line in stream:
        yield line.removesuffix("\n").removesuffix("\r")


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
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    url = f"{server.rstrip('/')}/topics/{topic}"
    lines = _lines(sys.stdin) if data == "-" else [data]
    try:
        with httpx.Client(headers=headers, timeout=30.0) as http:
            for number, line in enumerate(lines, start=1):
                where = f"line {number}: " if data == "-" else ""
                body: dict[str, Any] = {"data": _decode(line, where) if json_data else line}
                if event is not None:
                    body["event"] = event
                response = http.post(url, json=body)
                if response.status_code != 200:
                    status = response.status_code
                    raise click.ClickException(f"{where}{status} {_error_text(response)}")
                click.echo(response.json()["id"])
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach {server}: {exc}") from None


def _decode(line: str, where: str) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise click.ClickException(f"{where}not valid JSON: {exc}") from None
