"""``sluiceway tail``: follow an event stream, reconnecting, and print its events."""

from __future__ import annotations

import sys
from typing import Any

import click
import orjson

from sluiceway.client import EventSource, Reset, RetryInfo, SSEClientError, is_control
from sluiceway.sse import Event


def parse_header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise click.BadParameter(f"expected 'Name: value', got {text!r}", param_hint="-H")
    return name.strip(), value.strip()


def _warn(message: str) -> None:
    click.echo(f"tail: {message}", err=True)


class _Reporter:
    """Says on stderr what the stream does: a stream that never connected says so (a wrong
    URL or a server that is not running), one that was connected says it reconnects."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.connected = False

    def opened(self, response: object) -> None:
        self.connected = True

    def retry(self, info: RetryInfo) -> None:
        if not self.connected:
            _warn(
                f"never connected to {self.url} ({info.reason}); "
                f"trying again in {info.delay:.2f} s (attempt {info.failures + 1})"
            )
            return
        resume = f" from id {info.last_event_id}" if info.last_event_id else ""
        _warn(f"reconnecting{resume} in {info.delay:.2f} s ({info.reason})")


def _report_reset(reset: Reset) -> None:
    if not reset.topics:
        _warn(f"reset: events were lost; resuming at {reset.event_id}")
    for topic in reset.topics:
        _warn(
            f"reset: topic {topic.topic!r} lost events ({topic.reason}): "
            f"asked for {topic.requested}, resumed at {topic.resumed_at}"
        )


def _format(event: Event, as_json: bool) -> str:
    if as_json:
        return orjson.dumps({"id": event.id, "event": event.event, "data": event.data}).decode()
    return event.data or ""


@click.command()
@click.argument("url")
@click.option("--event", "event_types", multiple=True, help="Print only this event type.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event: id, event, data.")
@click.option("--last-event-id", default="", help="Resume after this id.")
@click.option("-H", "--header", "headers", multiple=True, help="'Name: value' request header.")
@click.option("-d", "--data", "body", help="POST this JSON body (an LLM endpoint, say).")
@click.option("-n", "--count", type=click.IntRange(min=1), help="Exit after N printed events.")
@click.option("--idle-timeout", type=float, default=60.0, show_default=True, help="Seconds.")
@click.option("--retry-delay", type=float, default=3.0, show_default=True, help="Seconds.")
@click.option("--max-attempts", type=click.IntRange(min=1), help="Give up after N failures.")
def tail(
    url: str,
    event_types: tuple[str, ...],
    as_json: bool,
    last_event_id: str,
    headers: tuple[str, ...],
    body: str | None,
    count: int | None,
    idle_timeout: float,
    retry_delay: float,
    max_attempts: int | None,
) -> None:
    """Print the events of the stream at URL as they arrive.

    Reconnects on its own, resuming with Last-Event-ID, and reports reconnects and resets on
    stderr.  Without --json only the data is printed, and the hub's control events
    (sluiceway.*) go to stderr only, unless --event names them.
    """
    payload: Any = None
    if body is not None:
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--data") from None
    reporter = _Reporter(url)
    source = EventSource(
        url,
        method="POST" if body is not None else "GET",
        headers=dict(parse_header(h) for h in headers),
        json=payload,
        last_event_id=last_event_id,
        idle_timeout=idle_timeout,
        retry_delay=retry_delay,
        max_attempts=max_attempts,
        on_open=reporter.opened,
        on_retry=reporter.retry,
        on_reset=_report_reset,
    )
    wanted = set(event_types)
    printed = 0
    try:
        with source:
            for event in source:
                if wanted and event.event not in wanted:
                    continue
                if not wanted and is_control(event) and not as_json:
                    continue
                click.echo(_format(event, as_json))
                sys.stdout.flush()
                printed += 1
                if count is not None and printed >= count:
                    return
    except SSEClientError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:  # piped into `head`: the reader is done, so are we
        sys.stderr.close()
