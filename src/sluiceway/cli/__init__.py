"""The ``sluiceway`` command: ``serve``, ``tail`` and ``publish``."""

from __future__ import annotations

import click

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

__all__ = ["main"]
