"""The Vercel AI SDK's UI message stream over a detached generation: ``POST /api/chat``."""

from __future__ import annotations

from starlette.routing import BaseRoute


def make_routes(prefix: str) -> list[BaseRoute]:
    return []
