"""The command group behind ``sluiceway`` (see :mod:`sluiceway.cli`).

Each command's module is imported when that command runs, not before: ``sluiceway publish``
and ``tail`` never load the server (``serve`` imports it all, about 1.5 s), so they start in a
fraction of that (``bench/cli_start.py``).
"""

from __future__ import annotations

import importlib
from typing import Any

import click

#: name -> (module, attribute, one-line help shown by ``sluiceway --help``).
COMMANDS: dict[str, tuple[str, str, str]] = {
    "serve": ("sluiceway.cli.serve", "serve", "Run the streaming server."),
    "tail": ("sluiceway.cli.tail", "tail", "Print the events of a stream as they arrive."),
    "publish": ("sluiceway.cli.publish", "publish", "Publish an event to a topic."),
    "demo-data": ("sluiceway.cli.demo_data", "demo_data", "Create the demo table for exports."),
}


class LazyGroup(click.Group):
    """A group whose commands are imported when they run (their help too)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        found = COMMANDS.get(cmd_name)
        if found is None:
            return None
        module, attribute, _ = found
        command: click.Command = getattr(importlib.import_module(module), attribute)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # The group's help lists the commands from the table: no command is imported for it.
        with formatter.section("Commands"):
            formatter.write_dl([(name, text) for name, (_, _, text) in COMMANDS.items()])


def _version(ctx: click.Context, param: Any, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from importlib.metadata import version

    click.echo(f"sluiceway {version('sluiceway')}")
    ctx.exit()


@click.group(cls=LazyGroup)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_version,
    help="Show the version and exit.",
)
def main() -> None:
    """Sluiceway: streaming to clients over HTTP."""


__all__ = ["main"]
