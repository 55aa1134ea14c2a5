"""``sluiceway serve``: run the streaming server."""

from __future__ import annotations

import logging
import sys
from typing import Any

import click
from pydantic import ValidationError

from sluiceway.server.settings import Settings


@click.command()
@click.option("--host", help="Address to bind (default 127.0.0.1). [SLUICEWAY_HOST]")
@click.option("--port", type=int, help="Port (default 8000; 0 picks a free one). [SLUICEWAY_PORT]")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@click.option("--backlog", type=int, help="Listen backlog (default 2048).")
@click.option("--publish-key", help="'Authorization: Bearer KEY' may do everything.")
@click.option(
    "--anonymous-publish/--no-anonymous-publish",
    default=None,
    help="Publish without a token (default: only on loopback without a publish key).",
)
@click.option(
    "--anonymous-subscribe/--no-anonymous-subscribe",
    default=None,
    help="Read without a token (default: on).",
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    help="A Host name to answer besides loopback ones (repeat; '.example.com', '*').",
)
@click.option(
    "--forwarded-allow-ips",
    help="Proxies whose X-Forwarded-For is believed: addresses or networks, comma-separated,"
    " or '*' (default: 127.0.0.1,::1). Setting it says a proxy fronts this server.",
)
@click.option("--ping-interval", type=float, help="Keep-alive after N idle seconds (default 15).")
@click.option("--retry-ms", type=int, help="retry: sent at the start of every stream.")
@click.option("--history-size", type=int, help="Events kept per topic (default 1000).")
@click.option("--history-ttl", type=float, help="Seconds an event stays in history (default 3600).")
@click.option("--buffer-events", type=int, help="Most events a subscriber may lag (default 1000).")
@click.option("--buffer-bytes", type=int, help="Most bytes a subscriber may lag (default 1 MiB).")
@click.option("--write-timeout", type=float, help="Drop a socket stuck this long (default 30 s).")
@click.option("--max-body-bytes", type=int, help="Largest request body (default 1 MiB).")
@click.option("--keep-latest", "keep_latest_topics", multiple=True, help="Keep-latest topics.")
@click.option("--backend", help="'memory' (default) or a Redis URL shared by processes.")
@click.option("--workers", type=int, help="Processes on the port (needs a Redis backend).")
def serve(**options: Any) -> None:
    """Run the streaming server (embedded defaults: no Redis, no key on loopback).

    Every option can also be set as SLUICEWAY_<OPTION> in the environment.
    """
    overrides = {name: value for name, value in options.items() if value not in (None, ())}
    if "forwarded_allow_ips" in overrides:  # uvicorn's form: "10.0.0.1, 10.0.0.0/8"
        text = overrides["forwarded_allow_ips"]
        overrides["forwarded_allow_ips"] = [
            part.strip() for part in text.split(",") if part.strip()
        ]
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise click.UsageError(str(exc)) from None
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s: %(message)s", stream=sys.stderr
    )
    from sluiceway.hub import BackendUnavailable
    from sluiceway.server.run import serve as run_server

    try:
        run_server(settings)
    except BackendUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
