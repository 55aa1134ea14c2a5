"""A model's streamed tool calls, collected whole: what an agent loop runs between model calls.

>>> calls = ToolCalls()
>>> for chunk in [ToolCallDelta(0, "call_1", "get_weather"), ToolCallDelta(0, arguments='{"ci'),
...               ToolCallDelta(0, arguments='ty": "Paris"}')]:
...     calls.add(chunk)
>>> [(call.name, call.arguments()) for call in calls]
[('get_weather', {'city': 'Paris'})]
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from sluiceway.llm.chunks import ToolCallDelta

__all__ = ["ToolCall", "ToolCalls"]


@dataclass
class ToolCall:
    """One tool call, once its deltas are in: ``arguments_json`` is the model's JSON text."""

    id: str
    name: str
    arguments_json: str = ""

    def arguments(self) -> dict[str, Any]:
        """The arguments as a dict (``{}`` for none); raises ``ValueError`` for a model's bad
        JSON (tell it so in the tool's result, and let it try again)."""
        if not self.arguments_json.strip():
            return {}
        value = orjson.loads(self.arguments_json)
        if not isinstance(value, dict):
            raise ValueError("a tool's arguments must be a JSON object")
        return value

    def message_part(self) -> dict[str, Any]:
        """As an entry of an OpenAI assistant message's ``tool_calls``."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments_json or "{}"},
        }


class ToolCalls:
    """Feed it every chunk of one model call (:meth:`add` ignores what is not a tool call);
    iterate it for the calls, in the model's order."""

    def __init__(self) -> None:
        self._calls: dict[int, ToolCall] = {}

    def add(self, chunk: object) -> None:
        if not isinstance(chunk, ToolCallDelta):
            return
        call = self._calls.get(chunk.index)
        if call is None:
            call = self._calls[chunk.index] = ToolCall(
                chunk.id or f"call_{chunk.index}", chunk.name or ""
            )
        else:
            if chunk.id:
                call.id = chunk.id
            if chunk.name:
                call.name = chunk.name
        call.arguments_json += chunk.arguments

    def __bool__(self) -> bool:
        return bool(self._calls)

    def __len__(self) -> int:
        return len(self._calls)

    def __iter__(self) -> Iterator[ToolCall]:
        return iter([self._calls[index] for index in sorted(self._calls)])

    def assistant_message(self) -> dict[str, Any]:
        """The assistant message that made these calls (OpenAI's shape), for the next call's
        ``messages``."""
        return {
            "role": "assistant",
            "content": None,
            "tool_calls": [c.message_part() for c in self],
        }
