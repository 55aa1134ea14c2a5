"""The official LLM SDKs' streams as typed chunks: a run of them is an LLM answer, served in
every client's format (:mod:`sluiceway.runs.formats`).

Give the SDK call itself, not awaited; the adapter makes the request when the run starts,
raises the SDK's errors as :class:`~sluiceway.llm.chunks.UpstreamError` (so that one before
the first token is the HTTP status the client gets: 429 with ``Retry-After``, 401, 502...), and
closes the SDK's stream — its HTTP connection to the provider — as soon as the run ends,
however it ends (a cancel included)::

    client = AsyncOpenAI()
    chunks = openai_chunks(client.chat.completions.create(model=m, messages=msgs, stream=True))
    return await runs.respond(chunks, owner=user, format="openai")

    anthropic = AsyncAnthropic()
    chunks = anthropic_chunks(anthropic.messages.stream(model=m, messages=msgs, max_tokens=1024))

Pass ``stream_options={"include_usage": True}`` to OpenAI to get token counts.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, NoReturn

from sluiceway.llm.chunks import Chunk, UpstreamError, status_kind
from sluiceway.llm.providers.anthropic import MessageEventReader
from sluiceway.llm.providers.openai import chunks_of

__all__ = ["SDKChunks", "anthropic_chunks", "openai_chunks", "upstream_error_of"]

#: The Anthropic stream's events that carry the answer (the SDK's helper events, ``text``,
#: ``input_json``..., repeat them).
ANTHROPIC_EVENTS = frozenset(
    {"message_start", "content_block_start", "content_block_delta", "message_delta", "error"}
)


class SDKChunks:
    """The chunks of one SDK call, read when the run starts. Closing it closes the SDK's
    stream, or, never started (a run refused), the call itself: no request is made."""

    def __init__(self, call: Any, read: Callable[[Any], AsyncGenerator[Chunk, None]]) -> None:
        self._call = call
        self._read = read
        self._chunks: AsyncGenerator[Chunk, None] | None = None

    def __aiter__(self) -> SDKChunks:
        return self

    async def __anext__(self) -> Chunk:
        if self._chunks is None:
            self._chunks = self._read(self._call)
        return await anext(self._chunks)

    async def aclose(self) -> None:
        if self._chunks is not None:
            await self._chunks.aclose()
        elif inspect.iscoroutine(self._call):
            self._call.close()


def openai_chunks(call: Awaitable[Any] | Any) -> SDKChunks:
    """The typed chunks of ``AsyncOpenAI().chat.completions.create(..., stream=True)``
    (the call, or the stream it returned)."""
    return SDKChunks(call, _openai_chunks)


def anthropic_chunks(call: Any) -> SDKChunks:
    """The typed chunks of ``AsyncAnthropic().messages.stream(...)`` (its manager, entered
    here) or of ``messages.create(..., stream=True)`` (the call, or its stream)."""
    return SDKChunks(call, _anthropic_chunks)


async def _openai_chunks(call: Any) -> AsyncGenerator[Chunk, None]:
    stream: Any = None
    try:
        stream = await call if isinstance(call, Awaitable) else call
        async for chunk in stream:
            for piece in chunks_of(chunk.model_dump()):
                yield piece
    except Exception as exc:
        _reraise(exc)
    finally:
        if stream is not None:
            with contextlib.suppress(Exception):
                await stream.close()  # its HTTP response: the provider stops generating


async def _anthropic_chunks(call: Any) -> AsyncGenerator[Chunk, None]:
    reader = MessageEventReader()
    async with contextlib.AsyncExitStack() as exits:
        try:
            if hasattr(call, "__aenter__") and not hasattr(call, "__aiter__"):
                stream = await exits.enter_async_context(call)  # messages.stream(...)
            else:
                stream = await call if isinstance(call, Awaitable) else call
                exits.push_async_callback(_close, stream)
            async for event in stream:
                kind = event.type
                if kind in ANTHROPIC_EVENTS:
                    for piece in reader.chunks_of(kind, event.model_dump()):
                        yield piece
        except Exception as exc:
            _reraise(exc)


def _reraise(exc: Exception) -> NoReturn:
    mapped = upstream_error_of(exc)
    if mapped is exc:
        raise exc
    raise mapped from exc


async def _close(stream: Any) -> None:
    with contextlib.suppress(Exception):
        await stream.close()


def upstream_error_of(exc: BaseException) -> BaseException:
    """An SDK's exception as :class:`UpstreamError` (anything else as it is). The provider's
    own message is kept for the errors a caller can fix (a bad request, a missing model);
    never for authentication, where it may quote the key."""
    if isinstance(exc, UpstreamError) or not _from_sdk(exc):
        return exc
    status = getattr(exc, "status_code", None)
    name = type(exc).__name__
    if isinstance(status, int):
        kind = status_kind(status)
        if kind in ("bad_request", "not_found"):
            message = f"the provider refused the request: {_provider_message(exc)}"
        else:
            message = f"the provider answered {status}"
        return UpstreamError(kind, message, retry_after=_retry_after(exc))
    if "Timeout" in name:
        return UpstreamError("timeout", "the provider did not answer in time")
    if "Connection" in name:
        return UpstreamError("upstream_unavailable", "cannot reach the provider")
    return UpstreamError("upstream_error", "the provider's stream failed")


def _from_sdk(exc: BaseException) -> bool:
    return type(exc).__module__.split(".", 1)[0] in ("openai", "anthropic")


def _provider_message(exc: BaseException) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:500]
    return str(getattr(exc, "message", "") or type(exc).__name__)[:500]


def _retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
