"""``sluiceway serve``: the parts composed into a streaming server."""

from sluiceway.server.app import create_app
from sluiceway.server.settings import Settings

__all__ = ["Settings", "create_app"]
