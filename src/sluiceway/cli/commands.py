"""The command group behind ``sluiceway`` (see :mod:`sluiceway.cli`)."""

from __future__ import annotations

import click

from sluiceway.cli.demo_data import demo_data
from sluiceway.cli.publish import publish
from sluiceway.cli.serve import serve
from sluiceway.cli.tail import tail


@click.group()
@click.version_option(package_name="sluiceway")
def main() -> None:
    """Sluiceway: streaming to clients over HTTP."""


main.add_command(serve)
main.add_command(tail)
main.add_command(publish)
main.add_command(demo_data)

__all__ = ["main"]
