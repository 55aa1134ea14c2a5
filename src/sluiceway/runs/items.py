"""What a run's producer yields, and the events each item becomes (sans-I/O).

A producer is any async iterator. Each item it yields becomes one event of the run's stream,
with a resumable id given by the hub:

=============================================  ==============================================
item                                           event
=============================================  ==============================================
:class:`~sluiceway.sse.Event`                  itself (``event`` and ``data``; its ``id`` is
                                               replaced by the run's position)
``str``                                        a ``message`` with that data
``bytes``                                      a ``message`` with that data (UTF-8 text)
any JSON value, dataclass or pydantic model    a ``message`` with the value as compact JSON
:class:`~sluiceway.llm.chunks.TextDelta`       ``token`` ``{"text"}``
:class:`~sluiceway.llm.chunks.ToolCallDelta`   ``tool_call`` ``{"index", "id", "name",
                                               "arguments"}``
:class:`~sluiceway.llm.chunks.ToolResult`      ``tool_result`` ``{"id", "output"}``
:class:`~sluiceway.llm.chunks.Usage`,          nothing at once: counted into the run's
:class:`~sluiceway.llm.chunks.Finish`          ``done`` (a new step after a ``Finish`` or a
                                               tool result is announced by ``step``)
=============================================  ==============================================

Every run starts with ``start`` ``{"id", "created", ...meta}`` and ends with exactly one of
``done`` ``{"state", "finish_reason", ...}`` or ``error`` ``{"error", "message"}``: the
typed LLM chunks make the same stream a generation's, which every LLM face (OpenAI Chat
Completions and Responses, Anthropic Messages, the Vercel AI SDK) can serve.

>>> from sluiceway.llm.chunks import TextDelta, Finish
>>> encoder = ItemEncoder()
>>> encoder.encode("hello", 0.0), encoder.encode({"n": 1}, 0.0)
([(None, 'hello')], [(None, '{"n":1}')])
>>> encoder.encode(TextDelta("Hi"), 0.0), encoder.encode(Finish("stop"), 0.0)
([('token', '{"text":"Hi"}')], [])
>>> encoder.summary("completed")["finish_reason"]
'stop'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from sluiceway.control import RESERVED_EVENT_PREFIX
from sluiceway.llm.chunks import Finish, TextDelta, ToolCallDelta, ToolResult, Usage
from sluiceway.llm.partial import NOTHING, parse_complete, parse_partial
from sluiceway.sse import Event

__all__ = [
    "LIFECYCLE_EVENTS",
    "TERMINAL_EVENTS",
    "ItemEncoder",
    "RunError",
    "Stored",
]

#: The events that end a run: nothing is published after them.
TERMINAL_EVENTS = frozenset({"done", "error"})
#: The events the run itself publishes (not items): a producer may not yield them by name.
LIFECYCLE_EVENTS = frozenset({"start", "step", "done", "error"})
#: At most this many ``partial`` events a second (structured output as it forms).
PARTIAL_EVENTS_PER_SECOND = 10

#: One stored event: its type (None: the default ``message``) and its data.
Stored = tuple[str | None, str]


class RunError(Exception):
    """Raise it from a producer to end the run with an error a client may see.

    Before the first item, it becomes the HTTP answer (``status``, with ``{"error": code,
    "detail": message}``); after it, the run's last event (``error`` ``{"error": code,
    "message": message}``). Any other exception ends the run with ``producer_failed`` and
    nothing more: its text and traceback go to the server's log, never to the client.

    >>> RunError("quota_exceeded", "you have used your tokens for today", status=429).status
    429
    """

    def __init__(self, code: str, message: str, *, status: int = 502) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


class ItemEncoder:
    """Turns one run's items into stored events, and keeps what an LLM answer needs to be
    summed up in its ``done``: the text, tool calls, usage, finish reason and steps.

    ``partial_json``: while text arrives, also publish ``partial`` ``{"value"}`` events with
    the JSON parsed so far (at most :data:`PARTIAL_EVENTS_PER_SECOND`), and the complete
    ``value`` (or a ``parse_error``) in ``done``.
    """

    __slots__ = (
        "_last_partial",
        "_partial_sent",
        "_past_usage",
        "_pieces",
        "_step_closed",
        "_step_usage",
        "finish_reason",
        "output_tokens",
        "partial_json",
        "steps",
        "tool_calls",
    )

    def __init__(self, *, partial_json: bool = False) -> None:
        self.partial_json = partial_json
        # The text's pieces, joined when asked: appending to one string is quadratic.
        self._pieces: list[str] = []
        #: Tool calls as they formed, by (step, index), in order of appearance.
        self.tool_calls: dict[tuple[int, int], dict[str, str]] = {}
        self._past_usage: Usage | None = None  # of the steps before this one, added up
        self._step_usage: Usage | None = None  # this step's, as last reported
        self.finish_reason: str | None = None
        self.output_tokens = 0
        #: The model calls (steps) seen so far; 0 until the first LLM chunk.
        self.steps = 0
        self._step_closed = False
        self._last_partial = float("-inf")
        self._partial_sent: Any = NOTHING

    def encode(self, item: Any, now: float) -> list[Stored]:
        """The events of one item (``now``: a monotonic time, for the ``partial`` rate).
        Raises TypeError/ValueError for an item that cannot be an event."""
        if isinstance(item, TextDelta):
            return self._text(item, now)
        if isinstance(item, ToolCallDelta):
            return self._tool_call(item)
        if isinstance(item, ToolResult):
            self._step_closed = True  # the model is answered: what follows is a new step
            return [("tool_result", _json({"id": item.id, "output": item.output}))]
        if isinstance(item, Usage):
            self._step_usage = item  # a provider may report it more than once: the last counts
            return []
        if isinstance(item, Finish):
            self.finish_reason = item.reason
            self._step_closed = True
            return []
        if isinstance(item, Event):
            return [(_event_name(item.event), item.data or "")]
        if isinstance(item, str):
            return [(None, item)]
        if isinstance(item, bytes | bytearray | memoryview):
            return [(None, bytes(item).decode("utf-8"))]
        dump = getattr(item, "model_dump", None)  # a pydantic model: its JSON
        if dump is not None:
            return [(None, _json(dump(mode="json")))]
        return [(None, _json(item))]

    @property
    def text(self) -> str:
        """The answer's text so far (every step's)."""
        if len(self._pieces) > 1:
            self._pieces[:] = ["".join(self._pieces)]
        return self._pieces[0] if self._pieces else ""

    def _step(self) -> list[Stored]:
        """A ``step`` event when an LLM chunk begins a model call after the last one ended."""
        if self.steps == 0:
            self.steps = 1
            return []
        if not self._step_closed:
            return []
        self._step_closed = False
        self.steps += 1
        self._past_usage = self.usage
        self._step_usage = None
        payload = {"step": self.steps, "finish_reason": self.finish_reason}
        self.finish_reason = None
        return [("step", _json(payload))]

    @property
    def usage(self) -> Usage | None:
        """The usage of every step so far, added up (None when nothing was reported)."""
        if self._past_usage is None or self._step_usage is None:
            return self._step_usage or self._past_usage
        return _add(self._past_usage, self._step_usage)

    def _text(self, item: TextDelta, now: float) -> list[Stored]:
        out = self._step()
        self.output_tokens += 1
        self._pieces.append(item.text)
        payload: dict[str, Any] = {"text": item.text}
        if item.index:
            payload["index"] = item.index
        out.append(("token", _json(payload)))
        if self.partial_json:
            out.extend(self._partial(now, final=False))
        return out

    def _tool_call(self, item: ToolCallDelta) -> list[Stored]:
        out = self._step()
        key = (self.steps, item.index)
        call = self.tool_calls.setdefault(key, {"id": "", "name": "", "arguments": ""})
        call["id"] = item.id or call["id"]
        call["name"] = item.name or call["name"]
        call["arguments"] += item.arguments
        delta: dict[str, Any] = {"index": self._call_number(key), "arguments": item.arguments}
        if item.id is not None:
            delta["id"] = item.id
        if item.name is not None:
            delta["name"] = item.name
        out.append(("tool_call", _json(delta)))
        return out

    def _call_number(self, key: tuple[int, int]) -> int:
        """A tool call's index in the whole run (calls of later steps come after)."""
        return list(self.tool_calls).index(key)

    def _partial(self, now: float, *, final: bool) -> list[Stored]:
        if not final and now - self._last_partial < 1 / PARTIAL_EVENTS_PER_SECOND:
            return []
        value = parse_partial(self.text)
        if value is NOTHING or value == self._partial_sent:
            return []
        self._last_partial = now
        self._partial_sent = value
        return [("partial", _json({"value": value}))]

    def final(self) -> list[Stored]:
        """What is published before ``done`` (the last ``partial``)."""
        return self._partial(0.0, final=True) if self.partial_json else []

    def summary(self, state: str, **extra: Any) -> dict[str, Any]:
        """The ``done`` payload of a run that ended in ``state``: for an answer that was not
        complete, the finish reason is the state (``cancelled``, ``time_limit``...)."""
        reason = self.finish_reason or "stop"
        if state != "completed":
            reason = state
        summary: dict[str, Any] = {"state": state, "finish_reason": reason}
        if self.steps:
            completion = (self.usage and self.usage.completion_tokens) or self.output_tokens
            prompt = self.usage.prompt_tokens if self.usage else None
            total = prompt + completion if prompt is not None else None
            summary["usage"] = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": total,
            }
            summary["output_tokens"] = self.output_tokens
            if self.steps > 1:
                summary["steps"] = self.steps
            if self.tool_calls:
                summary["tool_calls"] = list(self.tool_calls.values())
        if self.partial_json:
            try:
                summary["value"] = parse_complete(self.text)
            except ValueError as exc:
                summary["parse_error"] = str(exc)
        summary.update(extra)
        return summary


def _event_name(name: str | None) -> str | None:
    if name is None or name == "message":
        return None
    if name.startswith(RESERVED_EVENT_PREFIX) or name in LIFECYCLE_EVENTS:
        raise ValueError(f"event type {name!r} is the run's own")
    if "\r" in name or "\n" in name:
        raise ValueError("an event type must not hold line breaks")
    return name


def _json(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError as exc:
        raise TypeError(f"a run's item must be JSON-serializable: {exc}") from None


def _add(total: Usage, more: Usage) -> Usage:
    """Usage of several model calls (steps) added up; a count unknown in one is unknown."""
    return Usage(
        _sum(total.prompt_tokens, more.prompt_tokens),
        _sum(total.completion_tokens, more.completion_tokens),
    )


def _sum(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else a + b


def as_mapping(data: str) -> Mapping[str, Any]:
    """A stored event's JSON data (the run's own events are objects)."""
    value = orjson.loads(data)
    return value if isinstance(value, dict) else {}
