"""Anthropic's Messages API wire format, as a face of a generation (sans-I/O).

A request body becomes a :class:`ChatRequest`; a generation's events become Anthropic's named
stream events (``message_start``, ``content_block_start``, ``ping``, ``content_block_delta``,
``content_block_stop``, ``message_delta``, ``message_stop``, or ``error``) or one ``message``
object, so the official ``anthropic`` SDK works unchanged against ``/v1/messages``::

    >>> chat, stream = parse_request(
    ...     {"model": "m", "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}]}
    ... )
    >>> chat.messages[0].content, chat.max_tokens, stream
    ('Hi', 64, False)
    >>> encoder = MessageEncoder("gen_0123abcd", "m")
    >>> [name for name, _ in encoder.events("start", {})]
    ['message_start']
    >>> [name for name, _ in encoder.events("token", {"text": "Hel"})]
    ['content_block_start', 'ping', 'content_block_delta']
    >>> [name for name, _ in encoder.events("done", {"finish_reason": "length"})]
    ['content_block_stop', 'message_delta', 'message_stop']
    >>> sse_bytes("ping", {"type": "ping"})
    b'event: ping\\ndata: {"type":"ping"}\\n\\n'
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from pydantic import ValidationError

from sluiceway.llm.request import ChatRequest

#: Our finish reasons (the provider's, in OpenAI's words, or how the generation ended) in
#: Anthropic's words.  A stopped generation ended normally from the client's point of view.
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
    "time_limit": "max_tokens",
    "cancelled": "end_turn",
    "abandoned": "end_turn",
    "shutdown": "end_turn",
    "limit": "max_tokens",
}

#: Error ``type`` by HTTP status, as Anthropic names them.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

#: Error ``type`` by upstream error kind (see ``sluiceway.llm.chunks.ERROR_STATUS``): finer
#: than the status, e.g. an overloaded provider is 502 like any failing one, but says so.
KIND_ERROR_TYPES = {
    "bad_request": "invalid_request_error",
    "unauthorized": "authentication_error",
    "not_found": "not_found_error",
    "rate_limited": "rate_limit_error",
    "upstream_error": "api_error",
    "upstream_unavailable": "overloaded_error",
    "unavailable": "api_error",
    "timeout": "timeout_error",
}

#: Request fields that only tune, label or place the request: accepted and ignored, because no
#: provider behind us takes them (and the answer's shape does not depend on them).
_IGNORED = frozenset(
    {
        "metadata",
        "top_k",
        "service_tier",
        "speed",
        "cache_control",
        "inference_geo",
        "workspace_id",
        "user_profile_id",
    }
)

#: Fields we know and handle below; anything else is refused rather than silently dropped.
_KNOWN = frozenset(
    {
        "model",
        "max_tokens",
        "messages",
        "system",
        "stream",
        "temperature",
        "top_p",
        "stop_sequences",
        "tools",
        "tool_choice",
        "thinking",
    }
)

logger = logging.getLogger("sluiceway.llm")


class BadRequest(ValueError):
    """The body is not a Messages request we can serve (answered with 400)."""


def error_type(status: int, kind: str | None = None) -> str:
    """Anthropic's error ``type`` for an upstream error ``kind`` or, failing that, a status.

    >>> error_type(429), error_type(502, "upstream_unavailable"), error_type(418)
    ('rate_limit_error', 'overloaded_error', 'invalid_request_error')
    """
    if kind in KIND_ERROR_TYPES:
        return KIND_ERROR_TYPES[kind]
    return ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def error_body(error: str, message: str) -> dict[str, Any]:
    """Anthropic's error object, both as an HTTP body and as the in-band ``error`` event.

    >>> error_body("rate_limit_error", "slow down")
    {'type': 'error', 'error': {'type': 'rate_limit_error', 'message': 'slow down'}}
    """
    return {"type": "error", "error": {"type": error, "message": message}}


def sse_bytes(name: str, data: dict[str, Any]) -> bytes:
    """One named SSE event as Anthropic writes it (``event:`` then one ``data:`` line)."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


# -- requests --------------------------------------------------------------------------------


def _blocks(content: Any, where: str) -> list[dict[str, Any]]:
    """Content as a list of blocks (a string is one text block)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise BadRequest(f"{where}: content must be a string or a list of content blocks")
    for block in content:
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise BadRequest(f"{where}: each content block must be an object with a type")
    return content


def _text_of(blocks: list[dict[str, Any]], where: str) -> str:
    texts = []
    for block in blocks:
        if block["type"] != "text" or not isinstance(block.get("text"), str):
            raise BadRequest(f"{where}: only text blocks are supported here, not {block['type']}")
        texts.append(block["text"])
    return "".join(texts)


def _user(blocks: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """A user turn: its ``tool_result`` blocks become OpenAI-style ``tool`` messages (first,
    as Anthropic requires them to be), its text one user message."""
    converted: list[dict[str, Any]] = []
    texts = []
    for block in blocks:
        if block["type"] == "tool_result":
            result = block.get("content", "")
            converted.append(
                {
                    "role": "tool",
                    "tool_call_id": block.get("tool_use_id"),
                    "content": _text_of(_blocks(result, where), where),
                }
            )
        else:
            texts.append(block)
    if texts or not converted:
        converted.append({"role": "user", "content": _text_of(texts, where)})
    return converted


def _assistant(blocks: list[dict[str, Any]], where: str) -> dict[str, Any]:
    """An assistant turn: text, and its ``tool_use`` blocks as OpenAI-style ``tool_calls``."""
    calls = []
    texts = []
    for block in blocks:
        if block["type"] == "tool_use":
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {
                        "name": block.get("name"),
                        "arguments": orjson.dumps(block.get("input", {})).decode(),
                    },
                }
            )
        else:
            texts.append(block)
    message: dict[str, Any] = {"role": "assistant", "content": _text_of(texts, where)}
    if calls:
        message["tool_calls"] = calls
    return message


def _tools(tools: Any, tool_choice: Any) -> list[dict[str, Any]] | None:
    """Anthropic's custom tools as OpenAI function tools (the providers translate back)."""
    choice = (tool_choice or {}).get("type", "auto") if isinstance(tool_choice, dict) else None
    if tool_choice is not None and choice not in ("auto", "none"):
        raise BadRequest("tool_choice: only {'type': 'auto'} and {'type': 'none'} are supported")
    if tools is None or choice == "none":
        return None
    if not isinstance(tools, list):
        raise BadRequest("tools: must be a list of tools")
    converted = []
    for tool in tools:
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise BadRequest("tools: each tool must be an object with a name")
        if tool.get("type", "custom") != "custom":
            # Server tools (web search, code execution...) run at Anthropic, not here.
            raise BadRequest(f"tools: tool type {tool['type']!r} is not supported")
        function: dict[str, Any] = {
            "name": tool["name"],
            "parameters": tool.get("input_schema") or {"type": "object"},
        }
        if tool.get("description"):
            function["description"] = tool["description"]
        converted.append({"type": "function", "function": function})
    return converted


def parse_request(body: Any) -> tuple[ChatRequest, bool]:
    """(request, stream) from a Messages body; raises :class:`BadRequest` with a message that
    names the field, as Anthropic's do."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    unknown = sorted(set(body) - _KNOWN - _IGNORED)
    if unknown:
        raise BadRequest(f"{unknown[0]}: Extra inputs are not permitted")
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise BadRequest("max_tokens: Field required")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise BadRequest("max_tokens: must be a positive integer")
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") not in (None, "disabled"):
        raise BadRequest("thinking: extended thinking is not supported")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages: a non-empty list of messages is required")
    converted: list[dict[str, Any]] = []
    system = body.get("system")
    if system is not None:
        converted.append(
            {"role": "system", "content": _text_of(_blocks(system, "system"), "system")}
        )
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(message, dict):
            raise BadRequest(f"{where}: each message must be an object")
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise BadRequest(f"{where}.role: must be 'user' or 'assistant', not {role!r}")
        blocks = _blocks(message.get("content"), f"{where}.content")
        if role == "user":
            converted += _user(blocks, f"{where}.content")
        else:
            converted.append(_assistant(blocks, f"{where}.content"))
    stop = body.get("stop_sequences")
    try:
        request = ChatRequest(
            messages=converted,
            model=body.get("model"),
            max_tokens=max_tokens,
            temperature=body.get("temperature"),
            top_p=body.get("top_p"),
            stop=stop or None,
            tools=_tools(body.get("tools"), body.get("tool_choice")),
        )
    except ValidationError as exc:
        raise BadRequest(
            "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        ) from None
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("stream: must be a boolean")
    return request, stream


# -- responses -------------------------------------------------------------------------------


def _usage(usage: dict[str, Any] | None) -> dict[str, int]:
    usage = usage or {}
    return {
        "input_tokens": usage.get("prompt_tokens") or 0,
        "output_tokens": usage.get("completion_tokens") or 0,
    }


def _tool_input(arguments: str) -> Any:
    # A model can emit arguments that are not a JSON object; Anthropic's input is one.
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


class MessageEncoder:
    """Turns a generation's events into Anthropic's stream events, as (name, data) pairs.

    Anthropic numbers content blocks in order (text and ``tool_use`` together), and a block is
    opened with ``content_block_start`` and closed with ``content_block_stop`` before the next
    one; the encoder keeps that state, so every block is closed however the answer ends. A
    tool call streams into its block while it is the open one; a call that begins while
    another tool block is open (a provider that interleaves the pieces of parallel calls)
    is kept until the step ends and sent whole then, so that every call's ``input`` is its
    complete JSON. The first block is followed by a ``ping``, as the API sends it.
    ``input_tokens`` in ``message_start`` is 0: the provider reports it only with the end,
    where ``message_delta``'s usage carries it (the SDK takes it from there). An agent loop's
    steps and tool results are not part of this format: its answers follow one another.
    """

    def __init__(self, generation_id: str, model: str) -> None:
        self.id = "msg_" + generation_id.removeprefix("gen_")
        self.model = model
        self._blocks = 0  # blocks opened so far: the next block's index
        self._open: int | None = None  # the open block's index
        self._open_kind: str | None = None
        self._tool_blocks: dict[int, int] = {}  # tool call index -> block index
        #: Calls kept until the step ends: index -> the tool_use block, and its arguments.
        self._pending: dict[int, tuple[dict[str, Any], list[str]]] = {}
        self._pinged = False

    def _open_block(self, block: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        found = self._close_block()
        index = self._blocks
        self._blocks += 1
        self._open, self._open_kind = index, block["type"]
        found.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": block},
            )
        )
        if not self._pinged:
            self._pinged = True
            found.append(("ping", {"type": "ping"}))
        return found

    def _close_block(self) -> list[tuple[str, dict[str, Any]]]:
        if self._open is None:
            return []
        index, self._open, self._open_kind = self._open, None, None
        return [("content_block_stop", {"type": "content_block_stop", "index": index})]

    @staticmethod
    def _delta(index: int, delta: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return (
            "content_block_delta",
            {"type": "content_block_delta", "index": index, "delta": delta},
        )

    def events(self, event: str, payload: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """The stream events for one generation event (``error`` gives the in-band error)."""
        if event == "start":
            message: dict[str, Any] = {
                "id": self.id,
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": self.model,
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }
            return [("message_start", {"type": "message_start", "message": message})]
        if event == "token":
            found = []
            if self._open_kind != "text":
                found = self._open_block({"type": "text", "text": ""})
            assert self._open is not None
            return [
                *found,
                self._delta(self._open, {"type": "text_delta", "text": payload["text"]}),
            ]
        if event == "tool_call":
            return self._tool_call(payload)
        if event == "step":
            return self._end_step()
        if event == "done":
            found = self._end_step()
            if not self._pinged:  # nothing was answered: still the ping the API always sends
                self._pinged = True
                found.append(("ping", {"type": "ping"}))
            usage = payload.get("usage") or {}
            delta_usage = {"output_tokens": usage.get("completion_tokens") or 0}
            if usage.get("prompt_tokens") is not None:
                delta_usage["input_tokens"] = usage["prompt_tokens"]
            reason = STOP_REASONS.get(payload.get("finish_reason") or "stop", "end_turn")
            delta = {"stop_reason": reason, "stop_sequence": None}
            found.append(
                ("message_delta", {"type": "message_delta", "delta": delta, "usage": delta_usage})
            )
            found.append(("message_stop", {"type": "message_stop"}))
            return found
        if event == "error":
            kind = payload.get("error", "upstream_error")
            error = error_body(error_type(502, kind), payload.get("message", kind))
            return [*self._end_step(), ("error", error)]
        return []  # partial, tool_result: not part of this format

    def _tool_id(self, call: int) -> str:
        # Providers that name no id (a local model) still need one for the tool_result.
        return f"toolu_{self.id.removeprefix('msg_')}_{call}"

    def _tool_call(self, payload: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        call = payload.get("index", 0)
        pieces = payload.get("arguments", "")
        if call in self._pending:
            self._pending[call][1].append(pieces)
            return []
        found = []
        if call not in self._tool_blocks:
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": payload.get("id") or self._tool_id(call),
                "name": payload.get("name") or "",
                "input": {},
            }
            if self._open_kind == "tool_use":  # another call streams: this one waits, whole
                self._pending[call] = (block, [pieces])
                return []
            found = self._open_block(block)
            self._tool_blocks[call] = self._blocks - 1
        elif self._tool_blocks[call] != self._open:
            # Its block was closed by text between its pieces: nothing can be added to it.
            logger.warning("a piece of tool call %s came after its block ended", call)
            return []
        # Even an empty first piece is sent, as the API opens every tool input with one.
        arguments = {"type": "input_json_delta", "partial_json": pieces}
        return [*found, self._delta(self._tool_blocks[call], arguments)]

    def _end_step(self) -> list[tuple[str, dict[str, Any]]]:
        """Close the open block, then send each waiting call whole, in its own block."""
        found = self._close_block()
        for call, (block, pieces) in sorted(self._pending.items()):
            found.extend(self._open_block(block))
            self._tool_blocks[call] = self._blocks - 1
            arguments = {"type": "input_json_delta", "partial_json": "".join(pieces)}
            found.append(self._delta(self._blocks - 1, arguments))
            found.extend(self._close_block())
        self._pending.clear()
        return found

    def message(self, text: str, done: dict[str, Any]) -> dict[str, Any]:
        """The non-streaming ``message`` from the text and the ``done`` event."""
        content: list[dict[str, Any]] = []
        if text:
            content.append({"type": "text", "text": text})
        for i, call in enumerate(done.get("tool_calls") or ()):
            content.append(
                {
                    "type": "tool_use",
                    "id": call["id"] or self._tool_id(i),
                    "name": call["name"],
                    "input": _tool_input(call["arguments"]),
                }
            )
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "content": content,
            "model": self.model,
            "stop_reason": STOP_REASONS.get(done.get("finish_reason") or "stop", "end_turn"),
            "stop_sequence": None,
            "usage": _usage(done.get("usage")),
        }
