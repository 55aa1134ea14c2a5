"""Anthropic Messages, streamed: message_start, content_block_*, text and input_json deltas,
message_delta (stop reason, usage), ping and error events.

>>> provider = AnthropicProvider(api_key="sk-ant-...", default_model="claude-sonnet-4-5")
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import httpx
import orjson

from sluiceway.llm.chunks import (
    Chunk,
    Finish,
    FinishReason,
    TextDelta,
    ToolCallDelta,
    UpstreamError,
    Usage,
)
from sluiceway.llm.providers.http import Upstream
from sluiceway.llm.request import ChatRequest
from sluiceway.sse import Parser

API_VERSION = "2023-06-01"

_STOP_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

_ERROR_KINDS = {
    "invalid_request_error": "bad_request",
    "authentication_error": "unauthorized",
    "permission_error": "unauthorized",
    "not_found_error": "not_found",
    "rate_limit_error": "rate_limited",
    "overloaded_error": "upstream_unavailable",
    "timeout_error": "timeout",
}


class AnthropicProvider:
    """Streams ``POST {base_url}/v1/messages``."""

    def __init__(
        self,
        *,
        api_key: str | None,
        default_model: str,
        base_url: str = "https://api.anthropic.com",
        name: str = "anthropic",
        connect_timeout: float = 10.0,
        read_timeout: float = 120.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.name = name
        self.default_model = default_model
        base = base_url.rstrip("/").removesuffix("/v1")
        self._url = base + "/v1/messages"
        self._headers = {"accept": "text/event-stream", "anthropic-version": API_VERSION}
        if api_key:
            self._headers["x-api-key"] = api_key
        self._upstream = Upstream(connect_timeout, read_timeout, client)

    def body(self, request: ChatRequest) -> dict[str, Any]:
        system = "\n\n".join(m.content for m in request.messages if m.role == "system")
        messages: list[dict[str, Any]] = []
        for message in request.messages:
            if message.role == "system":
                continue
            if message.role == "tool":
                result = {
                    "type": "tool_result",
                    "tool_use_id": message.tool_call_id,
                    "content": message.content,
                }
                messages.append({"role": "user", "content": [result]})
            elif message.role == "assistant" and message.tool_calls:
                # The calls an assistant turn made: Anthropic pairs each tool_result with one.
                blocks: list[dict[str, Any]] = []
                if message.content:
                    blocks.append({"type": "text", "text": message.content})
                blocks.extend(_tool_use(call) for call in message.tool_calls)
                messages.append({"role": "assistant", "content": blocks})
            else:
                messages.append({"role": message.role, "content": message.content})
        body: dict[str, Any] = {
            "model": request.model or self.default_model,
            "messages": messages,
            "max_tokens": request.max_tokens,
            "stream": True,
        }
        if system:
            body["system"] = system
        if request.temperature is not None:
            body["temperature"] = min(request.temperature, 1.0)  # Anthropic's range is 0-1
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if request.stop:
            body["stop_sequences"] = request.stop
        if request.tools:
            body["tools"] = [_tool(t) for t in request.tools]
        return body

    async def stream(self, request: ChatRequest) -> AsyncGenerator[Chunk, None]:
        async with self._upstream.open_stream(
            self._url, self.body(request), self._headers, _error_message
        ) as pieces:
            parser = Parser()
            state = MessageEventReader()
            async for raw in pieces:
                for event in parser.feed(raw):
                    try:
                        payload = orjson.loads(event.data or "")
                    except orjson.JSONDecodeError:
                        raise UpstreamError(
                            "upstream_error", "the provider sent an event that is not JSON"
                        ) from None
                    for chunk in state.chunks_of(event.event or "", payload):
                        yield chunk
                    if state.stopped:
                        return

    async def aclose(self) -> None:
        await self._upstream.aclose()


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI function tool in Anthropic's shape (one already in it passes through)."""
    function = tool.get("function")
    if tool.get("type") != "function" or not isinstance(function, dict):
        return tool
    converted = {
        "name": function["name"],
        "input_schema": function.get("parameters") or {"type": "object"},
    }
    if function.get("description"):
        converted["description"] = function["description"]
    return converted


def _error_message(body: Any) -> str | None:
    error = body.get("error") or {}
    return str(error.get("message") or error.get("type") or "") or None


class MessageEventReader:
    """The typed chunks of Anthropic's Messages stream events, one event at a time.

    Anthropic numbers content blocks (text and tool use together); tool calls get their own
    0-based index, as in OpenAI's format."""

    def __init__(self) -> None:
        self.prompt_tokens: int | None = None
        self.tool_index: dict[int, int] = {}
        self.stopped = False

    def chunks_of(self, kind: str, payload: dict[str, Any]) -> list[Chunk]:
        if kind == "content_block_delta":
            delta = payload.get("delta") or {}
            if delta.get("type") == "text_delta":
                return [TextDelta(delta.get("text", ""))]
            if delta.get("type") == "input_json_delta":
                index = self.tool_index.get(payload.get("index", 0), 0)
                return [ToolCallDelta(index, arguments=delta.get("partial_json", ""))]
            return []
        if kind == "message_start":
            usage = (payload.get("message") or {}).get("usage") or {}
            self.prompt_tokens = usage.get("input_tokens")
            return []
        if kind == "content_block_start":
            block = payload.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = self.tool_index.setdefault(payload.get("index", 0), len(self.tool_index))
                return [ToolCallDelta(index, block.get("id"), block.get("name"))]
            return []
        if kind == "message_delta":
            found: list[Chunk] = []
            usage = payload.get("usage") or {}
            if "output_tokens" in usage:
                found.append(Usage(self.prompt_tokens, usage["output_tokens"]))
            reason = (payload.get("delta") or {}).get("stop_reason")
            if reason:
                found.append(Finish(_STOP_REASONS.get(reason, "stop")))
            return found
        if kind == "message_stop":
            self.stopped = True
            return []
        if kind == "error":
            error = payload.get("error") or {}
            kind_name = _ERROR_KINDS.get(error.get("type", ""), "upstream_error")
            raise UpstreamError(
                kind_name,
                f"the provider failed mid-stream: {error.get('message') or error.get('type')}",
            )
        return []  # ping, content_block_stop, and event types added later


def _tool_use(call: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI-style tool call as Anthropic's ``tool_use`` block."""
    function = call.get("function") or {}
    try:
        arguments = orjson.loads(function.get("arguments") or "{}")
    except orjson.JSONDecodeError:
        arguments = {}
    return {
        "type": "tool_use",
        "id": call.get("id"),
        "name": function.get("name"),
        "input": arguments if isinstance(arguments, dict) else {},
    }
