"""The Vercel AI SDK's UI message stream, as a face of a generation (sans-I/O).

The AI SDK (npm ``ai``; ``useChat``, ``DefaultChatTransport``) posts a chat's ``UIMessage``s and
reads back a *UI message stream*: SSE lines ``data: <chunk JSON>`` with the response header
``x-vercel-ai-ui-message-stream: v1``, ended by ``data: [DONE]``.  This module turns the body into
a :class:`~sluiceway.llm.request.ChatRequest` and a generation's events into those chunks; it
never touches a socket.

>>> turn = parse_chat_request(
...     {"id": "chat-1", "messages": [{"id": "m1", "role": "user",
...       "parts": [{"type": "text", "text": "Hi!"}]}]}, default_max_tokens=512)
>>> turn.chat_id, turn.request.messages[0].content
('chat-1', 'Hi!')
>>> encoder = UIMessageEncoder("gen_42")
>>> [c["type"] for c in encoder.chunks("start", {"id": "gen_42", "model": "m"})]
['start', 'start-step']
>>> encoder.chunks("token", {"text": "Hel"})
[{'type': 'text-start', 'id': 'text-0'}, {'type': 'text-delta', 'id': 'text-0', 'delta': 'Hel'}]
>>> [c["type"] for c in encoder.chunks("done", {"finish_reason": "stop", "usage": {}})]
['text-end', 'finish-step', 'data-usage', 'data-timing', 'finish']
>>> encode_chunk({"type": "finish", "finishReason": "stop"})
b'data: {"type":"finish","finishReason":"stop"}\\n\\n'

Chunk shapes follow ``uiMessageChunkSchema`` of ``ai`` and are checked by consuming real streams
with the SDK (``tests/node_ai``).  Compatibility: ``ai`` 5.0.92 and later, and 6.x.  Before
5.0.92 (and in 6.0.0) every chunk schema is *strict*, so only fields those versions know are sent:
no ``reason`` on ``abort``; ``finishReason`` on ``finish`` is what bounds us to 5.0.92.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from sluiceway.llm.request import ChatRequest

#: Response header by which the SDK (and proxies) recognise a UI message stream.
STREAM_HEADER = ("x-vercel-ai-ui-message-stream", "v1")

#: Ends every stream, as the SDK's own ``createUIMessageStreamResponse`` does.
DONE = b"data: [DONE]\n\n"


#: Our finish reasons in the SDK's words (its enum: stop, length, content-filter, tool-calls,
#: error, other).  ``time_limit`` cut the answer short, as OpenAI's ``length`` does on the
#: Chat Completions face.
FINISH_REASONS = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content-filter",
    "tool_calls": "tool-calls",
    "time_limit": "length",
    "limit": "length",
}

#: End states that are a stop by someone, not an answer's end: sent as ``abort``.
ABORTED = frozenset({"cancelled", "abandoned", "shutdown"})

TRIGGERS = frozenset({"submit-message", "regenerate-message"})
ROLES = frozenset({"system", "user", "assistant"})
MAX_CHAT_ID = 256


class BadRequest(ValueError):
    """The body is not a chat request we can serve (answered with 400)."""


@dataclass(frozen=True, slots=True)
class ChatTurn:
    """One ``POST {prefix}/chat``: the chat it belongs to and what to ask the model."""

    chat_id: str
    request: ChatRequest
    #: "submit-message" or "regenerate-message" (both start a generation over ``messages``).
    trigger: str
    #: The SDK's ``messageId`` (the message to regenerate or replace), when it sent one.
    message_id: str | None


def _message_text(index: int, message: Any) -> tuple[str, str] | None:
    """(role, text) of one UIMessage; None for an assistant message with no text (a reply that
    was only tool calls, or stopped before its first token: nothing to tell the model)."""
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise BadRequest(f"{where}: a message must be an object")
    role = message.get("role")
    if role not in ROLES:
        raise BadRequest(f"{where}.role: must be one of system, user, assistant (got {role!r})")
    parts = message.get("parts")
    if parts is None and isinstance(message.get("content"), str):
        return role, message["content"]  # the AI SDK 4 shape, still sent by some clients
    if not isinstance(parts, list):
        raise BadRequest(f"{where}.parts: a list of parts is required")
    texts: list[str] = []
    for number, part in enumerate(parts):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise BadRequest(f"{where}.parts[{number}]: a part must be an object with a type")
        if part["type"] != "text":
            continue  # step-start, reasoning, data-*, tool-*, ...: not part of the prompt
        text = part.get("text")
        if not isinstance(text, str):
            raise BadRequest(f"{where}.parts[{number}].text: must be a string")
        texts.append(text)
    if not texts:
        if role == "assistant":
            return None
        raise BadRequest(f"{where}: a {role} message needs a text part")
    return role, "".join(texts)


def parse_chat_request(body: Any, default_max_tokens: int) -> ChatTurn:
    """The :class:`ChatTurn` of an AI SDK request body; raises :class:`BadRequest` naming the
    field.

    Besides the SDK's ``id``, ``messages``, ``trigger`` and ``messageId``, a client may add (with
    the transport's ``body`` option) ``model``, ``max_tokens``, ``temperature``, ``top_p`` and
    ``stop``; anything else it adds is ignored, as the SDK's own examples expect of a server.
    """
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    chat_id = body.get("id")
    if not isinstance(chat_id, str) or not chat_id or len(chat_id) > MAX_CHAT_ID:
        raise BadRequest(f"id: the chat id must be a string of 1-{MAX_CHAT_ID} characters")
    trigger = body.get("trigger", "submit-message")
    if trigger not in TRIGGERS:
        raise BadRequest(f"trigger: must be one of {', '.join(sorted(TRIGGERS))}")
    message_id = body.get("messageId")
    if message_id is not None and not isinstance(message_id, str):
        raise BadRequest("messageId: must be a string")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages: a non-empty list of messages is required")
    converted = [
        {"role": found[0], "content": found[1]}
        for index, message in enumerate(messages)
        if (found := _message_text(index, message)) is not None
    ]
    if not converted:
        raise BadRequest("messages: no message has text")
    stop = body.get("stop")
    try:
        request = ChatRequest(
            messages=converted,
            model=body.get("model"),
            max_tokens=body.get("max_tokens") or default_max_tokens,
            temperature=body.get("temperature"),
            top_p=body.get("top_p"),
            stop=[stop] if isinstance(stop, str) else stop,
        )
    except ValidationError as exc:
        raise BadRequest(
            "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        ) from None
    return ChatTurn(chat_id, request, trigger, message_id)


def error_text(code: str, message: str) -> str:
    """What the SDK's ``Error.message`` says, before the first token (the HTTP body, which the
    transport raises as it is) and after it (an ``error`` chunk): the same JSON either way,
    ``{"error": code, "detail": message}``, so an app can ``JSON.parse`` it."""
    return orjson.dumps({"error": code, "detail": message}).decode()


def encode_chunk(chunk: dict[str, Any]) -> bytes:
    """One chunk on the wire: ``data: <JSON>`` and a blank line (no ``event:`` or ``id:``)."""
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


class UIMessageEncoder:
    """Turns a run's events into UI message chunks, every part opened and closed in order.

    ``start`` → ``start`` (``messageId``, ``messageMetadata: {generationId, model}``) and
    ``start-step``; ``token`` → ``text-start`` then ``text-delta``s; ``tool_call`` →
    ``tool-input-start`` then ``tool-input-delta``s (the arguments' pieces, whole: joined,
    they are the call's JSON); ``tool_result`` → the call's ``tool-input-available`` (its
    arguments parsed) and ``tool-output-available``; ``step`` (the model's next call, in an
    agent loop) → the open parts closed, ``finish-step``, ``start-step``; ``done`` → the open
    parts closed, ``finish-step``, ``data-usage``, ``data-timing``, then ``finish`` — or
    ``abort`` for a run that was stopped; ``error`` → the open parts closed and ``error``.
    The application's own events become data parts (``data-<type>``).

    The message id is the run's id, so a replay (``reconnectToStream``) names the same message
    and the SDK replaces what it had rather than adding a second answer.
    """

    def __init__(self, generation_id: str) -> None:
        self.generation_id = generation_id
        self._step = 0
        self._text_open = False
        #: Tool calls of this run by index: [id, name, arguments so far, input sent].
        self._calls: dict[int, list[Any]] = {}
        #: The run's last event (``done`` or ``error``) was encoded.
        self.ended = False

    @property
    def _text_id(self) -> str:
        return f"text-{self._step}"

    def _close_text(self) -> list[dict[str, Any]]:
        if not self._text_open:
            return []
        self._text_open = False
        return [{"type": "text-end", "id": self._text_id}]

    def _close_call(self, call: list[Any]) -> list[dict[str, Any]]:
        """``tool-input-available`` for a call whose arguments are complete, once."""
        if call[3]:
            return []
        call[3] = True
        try:
            tool_input = orjson.loads(call[2]) if call[2] else {}
        except orjson.JSONDecodeError:
            tool_input = call[2]  # not JSON after all: as the model wrote it
        return [
            {"type": "tool-input-available", "toolCallId": call[0], "toolName": call[1],
             "input": tool_input}
        ]  # fmt: skip

    def _close_parts(self) -> list[dict[str, Any]]:
        found = self._close_text()
        for call in self._calls.values():
            found.extend(self._close_call(call))
        return found

    def chunks(self, event: str, payload: Any) -> list[dict[str, Any]]:
        """The chunks for one run event (an empty list for those with none)."""
        if event == "start":
            metadata = {"generationId": self.generation_id, "model": payload.get("model")}
            return [
                {"type": "start", "messageId": self.generation_id, "messageMetadata": metadata},
                {"type": "start-step"},
            ]
        if event == "token":
            if self._text_open:
                return [{"type": "text-delta", "id": self._text_id, "delta": payload["text"]}]
            self._text_open = True
            text_id = self._text_id
            delta = {"type": "text-delta", "id": text_id, "delta": payload["text"]}
            return [{"type": "text-start", "id": text_id}, delta]
        if event == "tool_call":
            return self._tool_call(payload)
        if event == "tool_result":
            return self._tool_result(payload)
        if event == "step":
            self._step += 1
            return [*self._close_parts(), {"type": "finish-step"}, {"type": "start-step"}]
        if event == "done":
            self.ended = True
            reason = payload.get("finish_reason") or "stop"
            found = self._close_parts()
            found.append({"type": "finish-step"})
            # Data parts with ids: kept in the message's parts (not transient, which
            # readUIMessageStream drops), and replaced, not repeated, by a replay.
            found.append({"type": "data-usage", "id": "usage", "data": payload.get("usage")})
            timing = {
                key: payload.get(key)
                for key in ("ttft_ms", "tokens_per_s", "duration_ms", "output_tokens")
            }
            found.append({"type": "data-timing", "id": "timing", "data": timing})
            if reason in ABORTED:
                # The SDK's own streamText ends a stopped answer with ``abort`` and no finish.
                found.append({"type": "abort"})
            else:
                finish_reason = FINISH_REASONS.get(reason, "other")
                found.append({"type": "finish", "finishReason": finish_reason})
            return found
        if event == "error":
            self.ended = True
            code = payload.get("error", "upstream_error")
            text = error_text(code, payload.get("message", "the generation failed"))
            return [*self._close_parts(), {"type": "error", "errorText": text}]
        return []

    def _tool_call(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        index = int(payload.get("index", 0))
        found = self._close_text()  # a text part ends where a tool call begins
        call = self._calls.get(index)
        if call is None:
            call_id = payload.get("id") or f"call-{self.generation_id}-{index}"
            call = self._calls[index] = [call_id, payload.get("name") or "", "", False]
            found.append({"type": "tool-input-start", "toolCallId": call[0], "toolName": call[1]})
        pieces = payload.get("arguments") or ""
        if pieces and not call[3]:
            call[2] += pieces
            found.append(
                {"type": "tool-input-delta", "toolCallId": call[0], "inputTextDelta": pieces}
            )
        return found

    def _tool_result(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        call = next((c for c in self._calls.values() if c[0] == payload.get("id")), None)
        found = self._close_text()
        if call is not None:
            found.extend(self._close_call(call))
        found.append({"type": "tool-output-available", "toolCallId": payload.get("id"),
                      "output": payload.get("output")})  # fmt: skip
        return found

    def encode(self, event: str, payload: Any) -> bytes:
        """The wire bytes for one event; ``data: [DONE]`` follows the last one."""
        out = b"".join(encode_chunk(chunk) for chunk in self.chunks(event, payload))
        return out + DONE if self.ended else out

    def encode_data(self, kind: str, data: str) -> bytes:
        """An application's own event as a data part (``data-<type>``, its data parsed as
        JSON when it is JSON)."""
        try:
            value: Any = orjson.loads(data)
        except orjson.JSONDecodeError:
            value = data
        name = kind if kind.replace("-", "").replace("_", "").isalnum() else "message"
        return encode_chunk({"type": f"data-{name}", "data": value})
