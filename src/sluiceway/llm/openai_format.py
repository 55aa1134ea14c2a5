"""OpenAI's Chat Completions wire format, as a face of a generation (sans-I/O).

A request body becomes a :class:`ChatRequest`; a generation's events become
``chat.completion.chunk`` objects (streaming) or one ``chat.completion`` (not streaming), so
the official ``openai`` SDK works unchanged against ``/v1/chat/completions``.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from sluiceway.llm.request import ChatRequest

#: Our end states that OpenAI has no word for.
_FINISH = {
    "time_limit": "length",
    "limit": "length",
    "cancelled": "stop",
    "abandoned": "stop",
    "shutdown": "stop",
}

#: Error ``type`` by status, as OpenAI names them (the SDK picks its exception by status).
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_exceeded",
    502: "api_error",
    503: "api_error",
    504: "timeout",
}


class BadRequest(ValueError):
    """The body is not a chat completion request we can serve (answered with 400)."""


def error_body(status: int, code: str, message: str) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": ERROR_TYPES.get(status, "api_error"),
            "param": None,
            "code": code,
        }
    }


def _text(content: Any) -> str:
    """A message's content: a string, null, or a list of parts of which text is kept."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise BadRequest("only text content parts are supported")
            texts.append(str(part.get("text", "")))
        return "".join(texts)
    raise BadRequest("message content must be a string or a list of parts")


def parse_request(body: Any, default_max_tokens: int) -> tuple[ChatRequest, bool, bool]:
    """(request, stream, include_usage) from a Chat Completions body; raises
    :class:`BadRequest` with a message that names the field."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    if body.get("n", 1) != 1:
        raise BadRequest("n must be 1")
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise BadRequest("messages: a list of messages is required")
    converted = []
    for message in messages:
        if not isinstance(message, dict):
            raise BadRequest("messages: each message must be an object")
        role = message.get("role")
        converted.append(
            {
                "role": "system" if role == "developer" else role,
                "content": _text(message.get("content")),
                "tool_call_id": message.get("tool_call_id"),
                "tool_calls": message.get("tool_calls"),
            }
        )
    stop = body.get("stop")
    stream_options = body.get("stream_options") or {}
    try:
        request = ChatRequest(
            messages=converted,
            model=body.get("model"),
            max_tokens=body.get("max_completion_tokens")
            or body.get("max_tokens")
            or default_max_tokens,
            temperature=body.get("temperature"),
            top_p=body.get("top_p"),
            stop=[stop] if isinstance(stop, str) else stop,
            tools=body.get("tools"),
        )
    except ValidationError as exc:
        raise BadRequest(
            "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        ) from None
    return request, bool(body.get("stream")), bool(stream_options.get("include_usage"))


class ChunkEncoder:
    """Turns a generation's events into ``chat.completion.chunk`` objects."""

    def __init__(self, generation_id: str, model: str, created: int, include_usage: bool) -> None:
        self.id = "chatcmpl-" + generation_id.removeprefix("gen_")
        self.model = model
        self.created = created
        self.include_usage = include_usage

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": choices,
        }
        if self.include_usage:
            chunk["usage"] = None
        chunk.update(extra)
        return chunk

    def _delta(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return self._chunk([choice])

    def chunks(self, event: str, payload: dict[str, Any]) -> list[dict[str, Any]]:
        """The chunks for one generation event (``error`` gives OpenAI's in-band error)."""
        if event == "start":
            return [self._delta({"role": "assistant", "content": ""})]
        if event == "token":
            return [self._delta({"content": payload["text"]})]
        if event == "tool_call":
            call: dict[str, Any] = {"index": payload["index"]}
            if payload.get("id"):
                call["id"] = payload["id"]
                call["type"] = "function"
            function = {}
            if payload.get("name"):
                function["name"] = payload["name"]
            function["arguments"] = payload.get("arguments", "")
            call["function"] = function
            return [self._delta({"tool_calls": [call]})]
        if event == "done":
            reason = payload.get("finish_reason") or "stop"
            found = [self._delta({}, _FINISH.get(reason, reason))]
            if self.include_usage:
                found.append(self._chunk([], usage=payload.get("usage")))
            return found
        if event == "error":
            return [error_body(502, payload.get("error", "upstream_error"), payload["message"])]
        return []  # partial: not part of this format

    def completion(self, text: str, done: dict[str, Any]) -> dict[str, Any]:
        """The non-streaming ``chat.completion`` from the text and the ``done`` event."""
        message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
        calls = done.get("tool_calls")
        if calls:
            message["tool_calls"] = [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": call["arguments"]},
                }
                for call in calls
            ]
            message["content"] = text or None
        reason = done.get("finish_reason") or "stop"
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": _FINISH.get(reason, reason),
                }
            ],
            "usage": done.get("usage"),
        }
