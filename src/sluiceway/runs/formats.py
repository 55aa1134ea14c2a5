"""A run's events served in every client's format: the bytes of one response, batch by batch.

A run whose producer yields the typed LLM chunks (``start``, ``token``, ``tool_call``,
``tool_result``, ``step``, ``done``/``error`` events) is an LLM answer; each function here
encodes its events for one family of clients, with the sans-I/O encoders of
:mod:`sluiceway.llm` (one write per batch of events that became available together, not one
per token):

=========================  ===========================================  =====================
format                     clients                                      resumes
=========================  ===========================================  =====================
``sse``                    ``EventSource``, ``sluiceway.js``, any SSE   by ``Last-Event-ID``
                           client: the run's own events, with their ids
``openai``                 OpenAI's SDKs (``chat.completion.chunk``)    no (replays)
``responses``              OpenAI's SDKs (Responses API events)         by ``sequence_number``
``anthropic``              Anthropic's SDKs (Messages events)           no (replays)
``ai-sdk``                 the Vercel AI SDK's ``useChat``              replays from the start
=========================  ===========================================  =====================

Other items (a ``str``, a dict, an ``Event`` of the application's own type) are no part of
the LLM formats, except the AI SDK's, which carries them as data parts (``data-<type>``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Literal, Protocol

import orjson

from sluiceway.hub import Hub
from sluiceway.llm import anthropic_format, openai_format
from sluiceway.llm.ai_sdk_format import STREAM_HEADER, UIMessageEncoder, error_text
from sluiceway.llm.anthropic_format import MessageEncoder, sse_bytes
from sluiceway.llm.openai_format import ChunkEncoder
from sluiceway.llm.responses_format import ResponseInfo, ResponsesEncoder, response_info
from sluiceway.runs.follow import Followable, Record, run_records
from sluiceway.runs.items import TERMINAL_EVENTS

__all__ = [
    "FORMATS",
    "LLM_EVENTS",
    "Format",
    "ai_sdk_stream",
    "anthropic_stream",
    "error_body",
    "format_headers",
    "format_stream",
    "openai_stream",
    "payload_of",
    "responses_stream",
]

#: The formats a run can be served in (see the module doc).
Format = Literal["sse", "openai", "responses", "anthropic", "ai-sdk"]
FORMATS: tuple[Format, ...] = ("sse", "openai", "responses", "anthropic", "ai-sdk")
#: The events that make a run an LLM answer; their data is a JSON object.
LLM_EVENTS = frozenset(
    {"start", "token", "tool_call", "tool_result", "partial", "step", "done", "error"}
)
#: The last line of OpenAI's and the AI SDK's streams.
DONE = b"data: [DONE]\n\n"


def payload_of(record: Record) -> tuple[str, Any] | None:
    """(type, JSON data) of one of the run's LLM events; None for the application's own."""
    kind = record[0] or "message"
    if kind not in LLM_EVENTS:
        return None
    return kind, orjson.loads(record[1] or "null")


async def _encoded(
    hub: Hub, run: Followable, encode: Callable[[str, Any], list[bytes]]
) -> AsyncIterator[bytes]:
    """The run's LLM events through ``encode``, one write per batch, ending at its last event
    (the application's own events are no part of these formats)."""
    async for batch in run_records(hub, run):
        out: list[bytes] = []
        for record in batch:
            found = payload_of(record)
            if found is None:
                continue
            out.extend(encode(*found))
            if found[0] in TERMINAL_EVENTS:
                yield b"".join(out)
                return
        if out:
            yield b"".join(out)


def openai_stream(hub: Hub, run: Followable, encoder: ChunkEncoder) -> AsyncIterator[bytes]:
    """``chat.completion.chunk`` objects, then ``data: [DONE]``."""

    def encode(kind: str, payload: Any) -> list[bytes]:
        out = [b"data: " + orjson.dumps(chunk) + b"\n\n" for chunk in encoder.chunks(kind, payload)]
        if kind == "done":
            out.append(DONE)
        return out

    return _encoded(hub, run, encode)


def anthropic_stream(hub: Hub, run: Followable, encoder: MessageEncoder) -> AsyncIterator[bytes]:
    """Anthropic's Messages events, ``message_start`` to ``message_stop``."""

    def encode(kind: str, payload: Any) -> list[bytes]:
        return [sse_bytes(name, data) for name, data in encoder.events(kind, payload)]

    return _encoded(hub, run, encode)


def responses_stream(
    hub: Hub, run: Followable, info: ResponseInfo, starting_after: int = -1
) -> AsyncIterator[bytes]:
    """The Responses API's events encoded from the start, sent from ``starting_after + 1``
    on, each with its ``sequence_number`` as the SSE id (so ``Last-Event-ID`` resumes too)."""
    encoder = ResponsesEncoder(info)

    def encode(kind: str, payload: Any) -> list[bytes]:
        return [
            b"event: %b\ndata: %b\nid: %d\n\n"
            % (event["type"].encode(), orjson.dumps(event), event["sequence_number"])
            for event in encoder.feed(kind, payload)
            if event["sequence_number"] > starting_after
        ]

    return _encoded(hub, run, encode)


async def responses_replay(
    hub: Hub, run: Followable, info: ResponseInfo, *, wait: bool
) -> ResponsesEncoder:
    """The Responses encoder fed with the run's events: all of them (``wait``), or what
    has happened so far (for a snapshot)."""
    encoder = ResponsesEncoder(info)
    if wait:
        async for batch in run_records(hub, run):
            for stored in batch:
                if (found := payload_of(stored)) is not None:
                    encoder.feed(*found)
        return encoder
    page = await hub.history(run.topic, None, 1_000_000)
    for event in page.events:
        if (found := payload_of((event.event, event.data))) is not None:
            encoder.feed(*found)
    return encoder


async def ai_sdk_stream(hub: Hub, run: Followable, message_id: str) -> AsyncIterator[bytes]:
    """The AI SDK's UI message stream, from the run's first event (a reconnect replays it
    all: the SDK resets the message on a replay's ``start``); the application's own events
    as data parts."""
    encoder = UIMessageEncoder(message_id)
    async for batch in run_records(hub, run):
        out: list[bytes] = []
        for record in batch:
            found = payload_of(record)
            if found is None:
                out.append(encoder.encode_data(record[0] or "message", record[1]))
            else:
                out.append(encoder.encode(*found))
        if out:
            yield b"".join(out)
        if encoder.ended:
            return


class Described(Followable, Protocol):
    """A run here or elsewhere, as the formats name it: its id, creation time and meta
    (``model``), and what a format needs to describe it again (``annotations``)."""

    @property
    def id(self) -> str: ...

    @property
    def created(self) -> float: ...

    @property
    def meta(self) -> dict[str, Any]: ...

    @property
    def annotations(self) -> dict[str, Any]: ...


def format_stream(
    hub: Hub, run: Described, format: Format, *, starting_after: int = -1
) -> AsyncIterator[bytes]:
    """The bytes of ``run`` in an LLM client's ``format`` (not ``sse``: its own events are
    served as stored), from its first event (``responses``: after ``starting_after``)."""
    model = str(run.meta.get("model", ""))
    if format == "openai":
        include_usage = bool(run.annotations.get("include_usage"))
        encoder = ChunkEncoder(run.id, model, int(run.created), include_usage)
        return openai_stream(hub, run, encoder)
    if format == "anthropic":
        return anthropic_stream(hub, run, MessageEncoder(run.id, model))
    if format == "responses":
        fields = run.annotations.get("responses") or {}
        info = response_info(run.id, model, run.created, fields)
        return responses_stream(hub, run, info, starting_after)
    if format == "ai-sdk":
        return ai_sdk_stream(hub, run, run.id)
    raise ValueError(f"no such LLM format: {format!r}")


def format_headers(format: Format) -> dict[str, str]:
    """The response headers a format's clients look for."""
    return {STREAM_HEADER[0]: STREAM_HEADER[1]} if format == "ai-sdk" else {}


def error_body(format: Format, status: int, code: str, message: str) -> dict[str, Any]:
    """An HTTP error's JSON body in the shape ``format``'s clients parse: the OpenAI and
    Anthropic SDKs raise their own exception types for theirs; the AI SDK's transport raises
    ``new Error(body)``, the same JSON as its in-band ``errorText``; everyone else gets
    ``{"error": code, "detail": ...}``, as from every endpoint of Sluiceway's server.

    >>> error_body("sse", 429, "too_many_runs", "wait")
    {'error': 'too_many_runs', 'detail': 'wait'}
    >>> error_body("anthropic", 429, "too_many_runs", "wait")["error"]["type"]
    'rate_limit_error'
    """
    if format in ("openai", "responses"):
        return openai_format.error_body(status, code, message)
    if format == "anthropic":
        kind = anthropic_format.error_type(status, code)
        return anthropic_format.error_body(kind, message)
    if format == "ai-sdk":
        body: dict[str, Any] = orjson.loads(error_text(code, message))
        return body
    return {"error": code, "detail": message}
