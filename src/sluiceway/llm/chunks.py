"""What a provider yields: typed pieces of a model's answer, the same for every provider.

A provider's ``stream()`` is an async iterator of :data:`Chunk`; it raises
:class:`UpstreamError` for anything that went wrong upstream (before or during the stream).
Closing the iterator (``aclose()``) closes the upstream request at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the answer's text."""

    text: str
    #: The choice it belongs to (OpenAI's ``n``); 0 for everyone else.
    index: int = 0


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a tool call: its id and name come first, the JSON arguments in pieces."""

    #: Which tool call of the answer (OpenAI's ``tool_calls[].index``, Anthropic's block order).
    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts, as the provider reported them (None when it did not)."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    @property
    def total_tokens(self) -> int | None:
        if self.prompt_tokens is None or self.completion_tokens is None:
            return None
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What a tool call returned, when the code that runs a model also runs its tools (an
    agent loop): ``id`` is the call's; ``output`` is text or any JSON value. The model's next
    answer, in the same run, is a new step."""

    id: str
    output: object


#: Why an answer ended, in OpenAI's words (Anthropic's are mapped onto them).
FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


@dataclass(frozen=True, slots=True)
class Finish:
    """The answer is complete."""

    reason: FinishReason


Chunk = TextDelta | ToolCallDelta | ToolResult | Usage | Finish

#: Kinds of upstream failure, each with the HTTP status a gateway answers with before the
#: first token.
ERROR_STATUS: dict[str, int] = {
    "bad_request": 400,
    "unauthorized": 401,
    "not_found": 404,
    "rate_limited": 429,
    "upstream_error": 502,
    "upstream_unavailable": 502,
    "unavailable": 503,  # the provider cannot run here (e.g. the local model is not installed)
    "timeout": 504,
}


class UpstreamError(Exception):
    """The provider failed.  ``kind`` is a key of :data:`ERROR_STATUS`; ``message`` is safe to
    show a client (never a key or a header); ``retry_after`` comes from a 429."""

    def __init__(self, kind: str, message: str, *, retry_after: float | None = None) -> None:
        if kind not in ERROR_STATUS:
            raise ValueError(f"unknown upstream error kind: {kind}")
        self.kind = kind
        self.message = message
        self.retry_after = retry_after
        super().__init__(f"{kind}: {message}")

    @property
    def status(self) -> int:
        return ERROR_STATUS[self.kind]


def status_kind(status: int) -> str:
    """The error kind for an upstream HTTP status.

    >>> status_kind(401), status_kind(429), status_kind(503)
    ('unauthorized', 'rate_limited', 'upstream_unavailable')
    """
    if status in (401, 403):
        return "unauthorized"
    if status == 404:
        return "not_found"
    if status == 429:
        return "rate_limited"
    if status in (400, 413, 422):
        return "bad_request"
    if status in (502, 503, 529):  # 529: Anthropic's "overloaded"
        return "upstream_unavailable"
    if status in (408, 504):
        return "timeout"
    return "upstream_error"
