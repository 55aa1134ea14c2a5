"""OpenAI-compatible Chat Completions, streamed: OpenAI, vLLM, llama.cpp, Ollama, LiteLLM...

>>> provider = OpenAIProvider(base_url="https://api.openai.com/v1", api_key="sk-...",
...                           default_model="gpt-4o-mini")
>>> async for chunk in provider.stream(ChatRequest(messages=[...])):   # doctest: +SKIP
...     print(chunk)
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

_FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


class OpenAIProvider:
    """Streams ``POST {base_url}/chat/completions`` with ``stream_options.include_usage``."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        default_model: str,
        name: str = "openai",
        connect_timeout: float = 10.0,
        read_timeout: float = 120.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.name = name
        self.default_model = default_model
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._headers = {"accept": "text/event-stream"}
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"
        self._upstream = Upstream(connect_timeout, read_timeout, client)

    def body(self, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.model or self.default_model,
            "messages": [m.model_dump(exclude_none=True) for m in request.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": request.max_tokens,
        }
        for option in ("temperature", "top_p", "stop", "tools"):
            value = getattr(request, option)
            if value is not None:
                body[option] = value
        return body

    async def stream(self, request: ChatRequest) -> AsyncGenerator[Chunk, None]:
        async with self._upstream.open_stream(
            self._url, self.body(request), self._headers, _error_message
        ) as pieces:
            parser = Parser()
            async for raw in pieces:
                for event in parser.feed(raw):
                    if event.data == "[DONE]":
                        return
                    try:
                        payload = orjson.loads(event.data or "")
                    except orjson.JSONDecodeError:
                        raise UpstreamError(
                            "upstream_error", "the provider sent a chunk that is not JSON"
                        ) from None
                    for chunk in chunks_of(payload):
                        yield chunk
        # Some servers end without [DONE]; that is fine only if the answer said it finished.

    async def aclose(self) -> None:
        await self._upstream.aclose()


def _error_message(body: Any) -> str | None:
    error = body.get("error")
    if isinstance(error, dict):
        return str(error.get("message") or error.get("type") or "")
    return str(error) if error else None


def chunks_of(payload: dict[str, Any]) -> list[Chunk]:
    """The typed chunks of one ``chat.completion.chunk``; raises for an in-band error."""
    if "error" in payload:
        raise UpstreamError(
            "upstream_error", f"the provider failed mid-stream: {_error_message(payload)}"
        )
    found: list[Chunk] = []
    for choice in payload.get("choices") or ():
        index = choice.get("index", 0)
        delta = choice.get("delta") or {}
        if delta.get("content"):
            found.append(TextDelta(delta["content"], index))
        for call in delta.get("tool_calls") or ():
            function = call.get("function") or {}
            found.append(
                ToolCallDelta(
                    call.get("index", 0),
                    call.get("id"),
                    function.get("name"),
                    function.get("arguments") or "",
                )
            )
        reason = choice.get("finish_reason")
        if reason:
            found.append(Finish(_FINISH_REASONS.get(reason, "stop")))
    usage = payload.get("usage")
    if usage:
        found.append(Usage(usage.get("prompt_tokens"), usage.get("completion_tokens")))
    return found
