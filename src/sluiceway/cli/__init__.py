"""The ``sluiceway`` command: ``serve``, ``tail``, ``publish`` and ``demo-data``.

It needs the ``server`` extra (``pip install "sluiceway[server]"``); without it the command
says so instead of failing with a traceback.
"""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from sluiceway.cli.commands import main as command
    except ModuleNotFoundError as exc:
        if (exc.name or "sluiceway").startswith("sluiceway"):
            raise  # our own: a broken install, not a missing extra
        sys.exit(
            f"sluiceway: the command needs the server extra ({exc.name} is missing): "
            'pip install "sluiceway[server]"'
        )
    command()
