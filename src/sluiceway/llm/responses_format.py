"""OpenAI's Responses API wire format, as a face of a generation (sans-I/O).

A request body becomes a :class:`ChatRequest`; a generation's events become Responses stream
events, numbered by ``sequence_number`` from 0. The numbering is a pure function of the
generation's history, so a client resumes exactly with ``starting_after=N``: the events are
encoded again from the start and those up to N are skipped.

>>> encoder = ResponsesEncoder(ResponseInfo("resp_1", "m", 0))
>>> [event["type"] for event in encoder.feed("start", {})]
['response.created', 'response.in_progress']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from sluiceway.llm.openai_format import BadRequest
from sluiceway.llm.request import ChatRequest

#: Our end states as a Response's status (the rest are "completed").
_STATUS = {
    "length": "incomplete",
    "time_limit": "incomplete",
    "cancelled": "cancelled",
    "abandoned": "cancelled",
    "shutdown": "cancelled",
    "limit": "incomplete",
}


@dataclass(frozen=True, slots=True)
class ResponseInfo:
    """What a Response object repeats from its request."""

    id: str
    model: str
    created_at: int
    instructions: str | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    background: bool = False
    tools: list[dict[str, Any]] = field(default_factory=list)


def response_id(generation_id: str) -> str:
    return "resp_" + generation_id.removeprefix("gen_")


def generation_id(response_id: str) -> str:
    return "gen_" + response_id.removeprefix("resp_")


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") not in (
                "input_text",
                "output_text",
                "text",
            ):
                raise BadRequest("input: only text content parts are supported")
            texts.append(str(part.get("text", "")))
        return "".join(texts)
    raise BadRequest("input: message content must be a string or a list of parts")


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise BadRequest("instructions must be a string")
        messages.append({"role": "system", "content": instructions})
    items = body.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    if not isinstance(items, list) or not items:
        raise BadRequest("input: a string or a non-empty list of items is required")
    for item in items:
        if not isinstance(item, dict):
            raise BadRequest("input: each item must be an object")
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise BadRequest(f"input: unknown role {str(role)[:40]!r}")
            messages.append(
                {
                    "role": "system" if role == "developer" else role,
                    "content": _content_text(item.get("content")),
                }
            )
        elif kind == "function_call":
            call = {
                "id": item.get("call_id"),
                "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments", "")},
            }
            messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": item.get("call_id"),
                    "content": output if isinstance(output, str) else str(output),
                }
            )
        else:
            raise BadRequest(f"input: items of type {str(kind)[:40]!r} are not supported")
    return messages


def _tools(body: dict[str, Any]) -> list[dict[str, Any]] | None:
    tools = body.get("tools")
    if not tools:
        return None
    if not isinstance(tools, list):
        raise BadRequest("tools must be a list")
    converted = []
    for tool in tools:
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise BadRequest("tools: only function tools are supported")
        function = {k: tool[k] for k in ("name", "description", "parameters") if k in tool}
        converted.append({"type": "function", "function": function})
    return converted


def parse_request(body: Any, default_max_tokens: int) -> tuple[ChatRequest, bool, bool]:
    """(request, stream, background) from a Responses body; raises :class:`BadRequest`."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    if body.get("previous_response_id") is not None:
        raise BadRequest("previous_response_id is not supported: send the whole input")
    try:
        request = ChatRequest(
            messages=_messages(body),
            model=body.get("model"),
            max_tokens=body.get("max_output_tokens") or default_max_tokens,
            temperature=body.get("temperature"),
            top_p=body.get("top_p"),
            tools=_tools(body),
        )
    except ValidationError as exc:
        raise BadRequest(
            "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        ) from None
    return request, bool(body.get("stream")), bool(body.get("background"))


def annotation(request: ChatRequest, body: dict[str, Any]) -> dict[str, Any]:
    """The request fields a Response object repeats, kept with the generation (as JSON, so
    that any process can describe it)."""
    return {
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "temperature": request.temperature,
        "top_p": request.top_p,
        "background": bool(body.get("background")),
        "tools": list(body.get("tools") or []),
    }


def response_info(
    generation_id: str, model: str, created: float, fields: dict[str, Any]
) -> ResponseInfo:
    return ResponseInfo(
        id=response_id(generation_id), model=model, created_at=int(created), **fields
    )


class ResponsesEncoder:
    """Feeds on a generation's events, in order, and returns Responses stream events; keeps
    the Response object as it stands (:meth:`snapshot`)."""

    def __init__(self, info: ResponseInfo) -> None:
        self.info = info
        self.sequence = 0
        self.status = "in_progress"
        self.output: list[dict[str, Any]] = []  # output items, by output_index
        self._message: int | None = None  # output_index of the message item, once opened
        self._calls: dict[int, int] = {}  # tool call index -> output_index
        self.usage: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.incomplete: dict[str, Any] | None = None
        self.completed_at: int | None = None

    # -- the Response object -----------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        info = self.info
        return {
            "id": info.id,
            "object": "response",
            "created_at": info.created_at,
            "status": self.status,
            "background": info.background,
            "completed_at": self.completed_at,
            "error": self.error,
            "incomplete_details": self.incomplete,
            "instructions": info.instructions,
            "max_output_tokens": info.max_output_tokens,
            "metadata": {},
            "model": info.model,
            "output": [dict(item) for item in self.output],
            "parallel_tool_calls": True,
            "previous_response_id": None,
            "temperature": info.temperature,
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": info.tools,
            "top_p": info.top_p,
            "truncation": "disabled",
            "usage": self.usage,
        }

    # -- events ------------------------------------------------------------------------------

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event

    def feed(self, kind: str, payload: dict[str, Any]) -> list[dict[str, Any]]:
        """The stream events for one generation event (``start``, ``token``, ...)."""
        if kind == "start":
            return [
                self._event("response.created", response=self.snapshot()),
                self._event("response.in_progress", response=self.snapshot()),
            ]
        if kind == "token":
            return self._text(payload["text"])
        if kind == "tool_call":
            return self._tool_call(payload)
        if kind == "step":
            # The model's next call (an agent loop): this step's items are complete, and the
            # next text is a message item of its own.
            self._message = None
            return self._close_items()
        if kind == "done":
            return self._done(payload)
        if kind == "error":
            return self._failed(payload)
        return []  # partial, tool_result: not part of this format

    def _text(self, delta: str) -> list[dict[str, Any]]:
        events = []
        if self._message is None:
            self._message = len(self.output)
            item: dict[str, Any] = {
                "id": "msg_" + self.info.id.removeprefix("resp_"),
                "type": "message",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            }
            self.output.append(item)
            events.append(
                self._event(
                    "response.output_item.added", output_index=self._message, item=dict(item)
                )
            )
            part = {"type": "output_text", "text": "", "annotations": []}
            item["content"] = [part]
            events.append(
                self._event(
                    "response.content_part.added",
                    item_id=item["id"],
                    output_index=self._message,
                    content_index=0,
                    part=dict(part),
                )
            )
        item = self.output[self._message]
        item["content"][0]["text"] += delta
        events.append(
            self._event(
                "response.output_text.delta",
                item_id=item["id"],
                output_index=self._message,
                content_index=0,
                delta=delta,
                logprobs=[],
            )
        )
        return events

    def _tool_call(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        events = []
        index = int(payload.get("index", 0))
        output_index = self._calls.get(index)
        if output_index is None:
            output_index = self._calls[index] = len(self.output)
            item = {
                "id": f"fc_{self.info.id.removeprefix('resp_')}_{index}",
                "type": "function_call",
                "status": "in_progress",
                "call_id": payload.get("id") or f"call_{index}",
                "name": payload.get("name") or "",
                "arguments": "",
            }
            self.output.append(item)
            events.append(
                self._event(
                    "response.output_item.added", output_index=output_index, item=dict(item)
                )
            )
        item = self.output[output_index]
        if payload.get("name") and not item["name"]:
            item["name"] = payload["name"]
        delta = payload.get("arguments") or ""
        if delta:
            item["arguments"] += delta
            events.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=output_index,
                    delta=delta,
                )
            )
        return events

    def _close_items(self, status: str = "completed") -> list[dict[str, Any]]:
        """The ``...done`` events of every open output item, in output order: every item
        added is done, however the response ends."""
        events = []
        for output_index, item in enumerate(self.output):
            if item["status"] != "in_progress":
                continue
            item["status"] = status
            if item["type"] == "message":
                part = item["content"][0]
                common = {"item_id": item["id"], "output_index": output_index, "content_index": 0}
                events.append(
                    self._event(
                        "response.output_text.done", **common, text=part["text"], logprobs=[]
                    )
                )
                events.append(self._event("response.content_part.done", **common, part=dict(part)))
            else:
                events.append(
                    self._event(
                        "response.function_call_arguments.done",
                        item_id=item["id"],
                        output_index=output_index,
                        name=item["name"],
                        arguments=item["arguments"],
                    )
                )
            events.append(
                self._event("response.output_item.done", output_index=output_index, item=dict(item))
            )
        return events

    def _done(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        events = self._close_items()
        usage = payload.get("usage") or {}
        input_tokens = usage.get("prompt_tokens") or 0
        output_tokens = usage.get("completion_tokens") or 0
        self.usage = {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens,
        }
        reason = payload.get("finish_reason") or "stop"
        self.status = _STATUS.get(reason, "completed")
        self.completed_at = self.info.created_at + int((payload.get("duration_ms") or 0) / 1000)
        if self.status == "completed":
            return [*events, self._event("response.completed", response=self.snapshot())]
        if self.status == "incomplete":
            self.incomplete = {"reason": "max_output_tokens"}
        # A cancelled response ends like an incomplete one: there is no "cancelled" event.
        return [*events, self._event("response.incomplete", response=self.snapshot())]

    def _failed(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        events = self._close_items("incomplete")
        self.status = "failed"
        self.error = {
            "code": "server_error",
            "message": f"{payload.get('error', 'upstream_error')}: {payload.get('message', '')}",
        }
        return [*events, self._event("response.failed", response=self.snapshot())]
