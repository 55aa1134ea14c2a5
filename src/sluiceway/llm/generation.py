"""One generation: a provider's answer, produced once, detached from any connection, written
into a hub topic that any number of clients can follow, leave and resume."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import secrets
import time
from typing import Any

from sluiceway.hub import Hub, HubError
from sluiceway.llm.chunks import Chunk, Finish, TextDelta, ToolCallDelta, UpstreamError, Usage
from sluiceway.llm.directory import GenerationDirectory
from sluiceway.llm.limits import GenerationLimits
from sluiceway.llm.partial import NOTHING, parse_complete, parse_partial
from sluiceway.llm.providers.base import Provider
from sluiceway.llm.request import ChatRequest
from sluiceway.llm.stats import GenerationMetrics

logger = logging.getLogger("sluiceway.llm")

#: The hub topic of generation ``id`` is ``TOPIC_PREFIX + id``.
TOPIC_PREFIX = "sluiceway.gen:"

#: Structured output: at most this many ``partial`` events per second (and one at the end).
PARTIAL_EVENTS_PER_SECOND = 10


class State(enum.StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"  # the provider finished (stop, length, tool_calls...)
    CANCELLED = "cancelled"  # POST .../cancel
    ABANDONED = "abandoned"  # nobody watched for the grace period
    TIME_LIMIT = "time_limit"  # ran for max_duration
    FAILED = "failed"  # the provider failed (an ``error`` event says how)


def new_generation_id() -> str:
    return "gen_" + secrets.token_hex(12)


class Generation:
    """Runs ``request`` on ``provider`` and publishes, to the internal topic
    ``sluiceway.gen:<id>`` (read through the generation endpoints, never the topic API):

    ``start`` ``{"id", "model", "provider", "created"}``, then ``token`` ``{"text"}`` (and
    ``tool_call`` ``{"index", "id", "name", "arguments"}``, and ``partial`` ``{"value"}`` with
    ``partial_json``), then ``done`` ``{"finish_reason", "usage", "ttft_ms", "tokens_per_s",
    "duration_ms", "output_tokens"}`` (plus ``value`` or ``parse_error`` with ``partial_json``)
    or ``error`` ``{"error", "message"}``.  Then the topic is finished: streams end.
    """

    def __init__(
        self,
        request: ChatRequest,
        provider: Provider,
        hub: Hub,
        limits: GenerationLimits,
        metrics: GenerationMetrics,
        *,
        partial_json: bool = False,
        background: bool = False,
        annotations: dict[str, Any] | None = None,
        directory: GenerationDirectory | None = None,
        owner: str | None = None,
    ) -> None:
        self.id = new_generation_id()
        #: Who started it (a token's ``sub``; None without one): it is theirs to follow and
        #: cancel (see :func:`sluiceway.auth.resources.may_act_on_run`).
        self.owner = owner
        #: Keeps running with nobody watching (the abandon policy does not apply).
        self.background = background
        #: What a wire format needs to describe this generation again (e.g. the Responses
        #: API's request fields), by format name.
        self.annotations: dict[str, Any] = annotations or {}
        self.directory = directory or GenerationDirectory()
        self.topic = TOPIC_PREFIX + self.id
        self.request = request
        self.provider = provider
        self.model = request.model or provider.default_model
        self.hub = hub
        self.limits = limits
        self.partial_json = partial_json
        self.created = time.time()
        self.started_at = time.monotonic()
        self.state = State.RUNNING
        self.first_token_at: float | None = None
        self.finished_at: float | None = None
        self.text = ""
        self.tool_calls: dict[int, dict[str, str]] = {}
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self.error: UpstreamError | None = None
        self.output_tokens = 0
        self.value: Any = NOTHING
        #: Resolved when the provider's first chunk arrives; raises its error if it failed first.
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.done = asyncio.Event()
        self._stop_as: State | None = None
        self._labels = {"provider": provider.name, "model": self.model}
        self._metrics = metrics
        # Looked up once: labels() costs microseconds, and this one is observed per token.
        self._inter_token = metrics.inter_token.labels(**self._labels)
        self._last_partial = 0.0
        self._last_chunk_at: float | None = None
        self._partial_sent: Any = NOTHING
        self.task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self.state is State.RUNNING

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run(), name=self.id)

    def stop(self, state: State) -> bool:
        """Cancel the provider's stream (its HTTP request is closed at once); False when the
        generation had already ended."""
        if not self.running or self.task is None:
            return False
        if self._stop_as is None:
            self._stop_as = state
            self.task.cancel()
        return True

    def describe(self) -> dict[str, Any]:
        """A JSON summary for ``GET /v1/generations/{id}``."""
        return {
            "id": self.id,
            "state": self.state.value,
            "model": self.model,
            "provider": self.provider.name,
            "created": int(self.created),
            "finish_reason": self.finish_reason,
            "usage": _usage(self.usage, self.output_tokens),
            "text": self.text,
            "watchers": self.hub.subscriber_count(self.topic),
        }

    # -- running -----------------------------------------------------------------------------

    async def _run(self) -> None:
        metrics, labels = self._metrics, self._labels
        metrics.active.labels(**labels).inc()
        # Described before its first event, so that any process can answer for it.
        await self.directory.register(self)
        await self._publish(
            "start",
            {
                "id": self.id,
                "model": self.model,
                "provider": self.provider.name,
                "created": int(self.created),
            },
        )
        stream = self.provider.stream(self.request)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.limits.first_token_timeout) as deadline:
                async for chunk in stream:
                    if self.first_token_at is None:
                        self.first_token_at = time.monotonic()
                        deadline.reschedule(loop.time() + self._time_left())
                        metrics.first_token.labels(**labels).observe(
                            self.first_token_at - self.started_at
                        )
                        self.opened.set_result(None)
                    await self._take(chunk)
                    if self.output_tokens >= self.request.max_tokens:
                        self.finish_reason = self.finish_reason or "length"
                        break
            self.state = State.COMPLETED
        except TimeoutError:
            if self.first_token_at is None:
                waited = self.limits.first_token_timeout
                self._fail(UpstreamError("timeout", f"no answer from the provider in {waited} s"))
            else:
                self.state = State.TIME_LIMIT
        except UpstreamError as exc:
            self._fail(exc)
        except asyncio.CancelledError:
            self.state = self._stop_as or State.CANCELLED
        except Exception as exc:  # a provider bug must not leave clients waiting forever
            logger.exception("generation %s failed", self.id)
            self._fail(
                UpstreamError("upstream_error", f"the provider failed: {type(exc).__name__}")
            )
        finally:
            await stream.aclose()  # closes the upstream request now, whatever happened
        await self._finish()

    def _time_left(self) -> float:
        return max(0.0, self.started_at + self.limits.max_duration - time.monotonic())

    def _fail(self, error: UpstreamError) -> None:
        self.state = State.FAILED
        self.error = error
        self._metrics.errors.labels(**self._labels, kind=error.kind).inc()
        if not self.opened.done():
            self.opened.set_exception(error)

    async def _take(self, chunk: Chunk) -> None:
        if isinstance(chunk, TextDelta):
            self.output_tokens += 1
            self.text += chunk.text
            payload: dict[str, Any] = {"text": chunk.text}
            if chunk.index:
                payload["index"] = chunk.index
            await self._publish("token", payload)
            if self.partial_json:
                await self._maybe_partial(final=False)
        elif isinstance(chunk, ToolCallDelta):
            call = self.tool_calls.setdefault(chunk.index, {"id": "", "name": "", "arguments": ""})
            call["id"] = chunk.id or call["id"]
            call["name"] = chunk.name or call["name"]
            call["arguments"] += chunk.arguments
            delta = {
                "index": chunk.index,
                "id": chunk.id,
                "name": chunk.name,
                "arguments": chunk.arguments,
            }
            await self._publish("tool_call", {k: v for k, v in delta.items() if v is not None})
        elif isinstance(chunk, Usage):
            self.usage = chunk
        elif isinstance(chunk, Finish):
            self.finish_reason = chunk.reason
        previous = self._last_chunk_at
        self._last_chunk_at = now = time.monotonic()
        if previous is not None and isinstance(chunk, TextDelta | ToolCallDelta):
            self._inter_token.observe(now - previous)

    async def _maybe_partial(self, *, final: bool) -> None:
        now = time.monotonic()
        if not final and now - self._last_partial < 1 / PARTIAL_EVENTS_PER_SECOND:
            return
        value = parse_partial(self.text)
        if value is NOTHING or value == self._partial_sent:
            return
        self._last_partial = now
        self._partial_sent = value
        await self._publish("partial", {"value": value})

    async def _finish(self) -> None:
        self.finished_at = time.monotonic()
        metrics, labels = self._metrics, self._labels
        if self.error is not None:
            await self.directory.ended(self)  # before the last event: a reader then sees both
            await self._publish("error", {"error": self.error.kind, "message": self.error.message})
        else:
            if self.partial_json:
                await self._maybe_partial(final=True)
            if self.state is not State.COMPLETED:
                self.finish_reason = self.state.value
            if not self.opened.done():  # stopped before the first token: not an error
                self.opened.set_result(None)
            await self.directory.ended(self)
            await self._publish("done", self._summary())
        with contextlib.suppress(HubError):
            self.hub.finish(self.topic)
        metrics.active.labels(**labels).dec()
        outcome = "error" if self.state is State.FAILED else self.state.value
        metrics.finished.labels(**labels, outcome=outcome).inc()
        metrics.output_tokens.labels(**labels).inc(self.output_tokens)
        rate = self._tokens_per_second()
        if rate is not None:
            metrics.tokens_per_second.labels(**labels).observe(rate)
        self.done.set()

    def _summary(self) -> dict[str, Any]:
        assert self.finished_at is not None
        ttft = self.first_token_at - self.started_at if self.first_token_at is not None else None
        rate = self._tokens_per_second()
        summary: dict[str, Any] = {
            "finish_reason": self.finish_reason or "stop",
            "usage": _usage(self.usage, self.output_tokens),
            "ttft_ms": round(ttft * 1000, 1) if ttft is not None else None,
            "tokens_per_s": round(rate, 1) if rate is not None else None,
            "duration_ms": round((self.finished_at - self.started_at) * 1000, 1),
            "output_tokens": self.output_tokens,
        }
        if self.tool_calls:
            summary["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        if self.partial_json:
            try:
                self.value = parse_complete(self.text)
                summary["value"] = self.value
            except ValueError as exc:
                summary["parse_error"] = str(exc)
        return summary

    def _tokens_per_second(self) -> float | None:
        if self.first_token_at is None or self.finished_at is None:
            return None
        elapsed = self.finished_at - self.first_token_at
        tokens = (self.usage and self.usage.completion_tokens) or self.output_tokens
        return tokens / elapsed if elapsed > 0 and tokens > 1 else None

    async def _publish(self, event: str, payload: dict[str, Any]) -> None:
        try:
            await self.hub.publish(self.topic, payload, event=event)
        except HubError:  # shutting down: the generation is being stopped anyway
            logger.debug("generation %s: could not publish %s", self.id, event)


def _usage(usage: Usage | None, output_tokens: int) -> dict[str, int | None]:
    completion = usage.completion_tokens if usage and usage.completion_tokens else output_tokens
    prompt = usage.prompt_tokens if usage else None
    total = prompt + completion if prompt is not None else None
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}
