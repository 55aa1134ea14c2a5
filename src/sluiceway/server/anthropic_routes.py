"""``POST /v1/messages``: Anthropic's Messages API over a detached generation."""

from __future__ import annotations

from starlette.routing import BaseRoute

routes: list[BaseRoute] = []
