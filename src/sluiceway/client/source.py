"""``EventSource``: an SSE client that reconnects, resumes and says when it could not.

One class serves both worlds: ``async for`` uses an ``httpx.AsyncClient``, plain ``for`` an
``httpx.Client``; the decisions (what a response means, how long to wait, when to give up) live
in :mod:`sluiceway.client.policy` and are shared.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator, Mapping
from types import TracebackType
from typing import Any, Self

import httpx

import sluiceway.fossil as fossil
from sluiceway.client.errors import (
    ContentTypeError,
    DeltaMismatch,
    HTTPStatusError,
    ReconnectExhausted,
    StreamInterrupted,
)
from sluiceway.client.policy import ReconnectState, RetryInfo, Verdict, classify, parse_retry_after
from sluiceway.control import POSITION_EVENT, RESET_EVENT, Reset, is_control, parse_reset
from sluiceway.sse import Event

#: The delta format this client applies (``delta: fossil``).
FOSSIL = "fossil"

#: How much of an error response's body is kept for the exception.
ERROR_BODY_LIMIT = 64 * 1024

#: Statuses that mean "not now" before any work was done: safe to re-send a request with a body.
_NOT_NOW = frozenset({429, 503})

# Errors that say the request never reached the server: re-sending cannot repeat any work.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

# Errors that reconnecting cannot fix: a bad URL scheme, a request httpx cannot send.
_PERMANENT = (httpx.UnsupportedProtocol, httpx.LocalProtocolError)


class EventSource:
    """Read a ``text/event-stream`` with automatic reconnection and resume.

    >>> async def follow():                                    # doctest: +SKIP
    ...     async with EventSource("http://127.0.0.1:8000/topics/news") as source:
    ...         async for event in source:
    ...             print(event.id, event.data)

    The same object works synchronously (``with`` / ``for``).  On a network error, an idle
    connection (no byte, not even a keep-alive, for ``idle_timeout`` seconds), a retryable
    status (408, 429, 5xx) or the end of the stream, it reconnects, sending ``Last-Event-ID``,
    after the delay described in :class:`~sluiceway.client.policy.ReconnectState`.  A 204 ends
    the iteration; other statuses raise :class:`HTTPStatusError`; a response that is not an
    event stream raises :class:`ContentTypeError`.

    Requests with a body (``json=`` or ``content=``, e.g. an LLM endpoint) are re-sent only
    when that cannot repeat work: the server gave an event id to resume from, the request
    never reached the server, or it answered 429/503.  Otherwise :class:`StreamInterrupted`
    is raised.  By default they do not reconnect when the stream ends normally (the answer
    is complete); ``reconnect_on_end`` overrides that for either method.

    Hub reset events (``sluiceway.reset``: events were lost) are yielded like any other event,
    counted in :attr:`resets` and passed, parsed, to ``on_reset``. A hub position event
    (``sluiceway.position``, the first of a stream opened without an id) is not yielded: its id
    becomes :attr:`last_event_id`, so that a reconnect before any event resumes from there.

    With ``delta=True`` it asks a Sluiceway stream for deltas (``?delta=fossil``): an event
    that follows the one before comes as the difference from it, a few bytes for a small change
    to a large state. They are applied here: every event yielded has its whole data. A delta
    that does not apply (which a correct server never sends) drops the connection and resumes
    from the last good event, whose successor then comes whole.
    """

    def __init__(
        self,
        url: str,
        *,
        method: str = "GET",
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        content: bytes | None = None,
        last_event_id: str = "",
        delta: bool = False,
        retry_delay: float = 3.0,
        max_backoff: float = 30.0,
        max_attempts: int | None = None,
        max_elapsed: float | None = None,
        idle_timeout: float | None = 60.0,
        connect_timeout: float = 10.0,
        reconnect_on_end: bool | None = None,
        client: httpx.AsyncClient | httpx.Client | None = None,
        on_open: Callable[[httpx.Response], None] | None = None,
        on_retry: Callable[[RetryInfo], None] | None = None,
        on_reset: Callable[[Reset], None] | None = None,
    ) -> None:
        if max_attempts is not None and max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.url = url
        self.method = method.upper()
        if delta:
            params = {**(params or {}), "delta": FOSSIL}
        self._request_args: dict[str, Any] = {"params": params, "json": json, "content": content}
        self._headers = dict(headers or {})
        self._has_body = json is not None or content is not None
        self._position_only = False  # the last id taken came from a position event
        self._reconnect_on_end = (
            reconnect_on_end if reconnect_on_end is not None else not self._has_body
        )
        self._timeout = httpx.Timeout(
            connect=connect_timeout, read=idle_timeout, write=connect_timeout, pool=connect_timeout
        )
        self._state = ReconnectState(
            last_event_id=last_event_id,
            retry_delay=retry_delay,
            max_backoff=max_backoff,
            max_attempts=max_attempts,
            max_elapsed=max_elapsed,
        )
        self._client = client
        self._on_open = on_open
        self._on_retry = on_retry
        self._on_reset = on_reset
        #: Reset events seen so far.
        self.resets = 0
        #: The data of the last event of this connection: what its next delta applies to.
        self._delta_base: str | None = None
        self._async_iterator: AsyncGenerator[Event, None] | None = None
        self._sync_iterator: Generator[Event, None, None] | None = None

    @property
    def last_event_id(self) -> str:
        """The id to resume from: that of the last event yielded (or of a later position
        event or id-only block)."""
        return self._state.last_event_id

    @property
    def retry_delay(self) -> float:
        """The reconnection time in seconds (the server's ``retry:`` once it sent one)."""
        return self._state.retry_delay

    @property
    def reconnects(self) -> int:
        """Connections made after the first, successful or not."""
        return self._state.reconnects

    # -- the shared steps -------------------------------------------------------------------

    def _request(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "url": self.url,
            "headers": self._state.request_headers(self._headers),
            "timeout": self._timeout,
            **self._request_args,
        }

    def _opened(self, response: httpx.Response) -> None:
        self._state.opened()
        self._delta_base = None  # a new connection's first event comes whole
        if self._on_open is not None:
            self._on_open(response)

    def _delivered(self, event: Event) -> Event | None:
        """Take ``event`` in: what is yielded (``event`` with its delta applied), or None for
        a position event (it only says where the stream starts: its id is all there is to
        take from it). Raises :class:`DeltaMismatch` for a delta that does not apply."""
        if event.delta is not None:
            event = self._applied(event)
        elif not is_control(event):
            self._delta_base = event.data
        # event.id is the last event id in effect when it was dispatched.
        self._state.last_event_id = event.id or ""
        # A position alone does not let a request with a body be sent again: the endpoint
        # may not resume from it (a second generation would start); an event of its does.
        self._position_only = event.event == POSITION_EVENT
        if self._position_only:
            return None
        if event.event == RESET_EVENT and (reset := parse_reset(event)) is not None:
            self.resets += 1
            if self._on_reset is not None:
                self._on_reset(reset)
        return event

    def _applied(self, event: Event) -> Event:
        """``event`` with its data rebuilt from its delta and the previous event's data."""
        base = self._delta_base
        if event.delta != FOSSIL or base is None or event.data is None:
            raise DeltaMismatch(f"cannot apply a {event.delta!r} delta to event {event.id!r}")
        try:
            data = fossil.apply(base.encode(), event.data.encode()).decode()
        except (fossil.DeltaError, UnicodeDecodeError) as exc:
            raise DeltaMismatch(f"the delta of event {event.id!r} does not apply: {exc}") from exc
        self._delta_base = data
        return Event(data=data, event=event.event, id=event.id)

    def _may_resend(self) -> bool:
        """Whether the body may go again: there is an id to resume from, given by the caller
        or by an event the stream delivered (not by its position event alone)."""
        return bool(self.last_event_id) and not self._position_only

    def _retry(self, info: RetryInfo) -> float:
        if self._on_retry is not None:
            self._on_retry(info)
        return info.delay

    def _after_end(self) -> float | None:
        """Delay before reconnecting after a clean end, or None to stop."""
        if not self._reconnect_on_end:
            return None
        return self._retry(self._state.ended())

    def _after_status(self, response: httpx.Response) -> float:
        reason = f"HTTP {response.status_code}"
        if self._has_body and not self._may_resend() and response.status_code not in _NOT_NOW:
            raise StreamInterrupted(f"{self.method} {self.url} answered {response.status_code}")
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        return self._retry(self._state.failed(reason, retry_after))

    def _after_error(self, exc: httpx.TransportError) -> float:
        if isinstance(exc, _PERMANENT):
            raise exc
        if self._has_body and not self._may_resend() and not isinstance(exc, _NOT_SENT):
            raise StreamInterrupted(
                f"{self.method} {self.url} broke before any event id: {exc!r}"
            ) from exc
        try:
            return self._retry(self._state.failed(f"{type(exc).__name__}: {exc}".rstrip(": ")))
        except ReconnectExhausted as gave_up:
            raise gave_up from exc

    def _after_delta_mismatch(self, exc: DeltaMismatch) -> float:
        return self._retry(self._state.failed(str(exc)))

    def _refusal(self, verdict: Verdict, response: httpx.Response, body: bytes) -> Exception:
        text = body.decode("utf-8", "replace")
        if verdict is Verdict.NOT_SSE:
            content_type = response.headers.get("content-type", "")
            return ContentTypeError(self.method, self.url, content_type, text)
        headers = dict(response.headers)
        return HTTPStatusError(self.method, self.url, response.status_code, text, headers)

    # -- async ------------------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Event]:
        self._async_iterator = self._aevents()
        return self._async_iterator

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection now (call it from the task that iterates)."""
        iterator, self._async_iterator = self._async_iterator, None
        if iterator is not None:
            await iterator.aclose()

    async def _aevents(self) -> AsyncGenerator[Event, None]:
        client = self._client if isinstance(self._client, httpx.AsyncClient) else None
        owned = client is None
        if client is None:
            client = httpx.AsyncClient(follow_redirects=True)
        try:
            while True:
                delay: float | None
                try:
                    async with client.stream(**self._request()) as response:
                        verdict = classify(response.status_code, _content_type(response))
                        if verdict is Verdict.STOP:
                            return
                        if verdict is Verdict.RETRY:
                            delay = self._after_status(response)
                        elif verdict is not Verdict.OPEN:
                            body = await _aread_limited(response)
                            raise self._refusal(verdict, response, body)
                        else:
                            self._opened(response)
                            parser = self._state.new_parser()
                            async for chunk in response.aiter_bytes():
                                for event in parser.feed(chunk):
                                    if (delivered := self._delivered(event)) is not None:
                                        yield delivered
                                self._state.absorb(parser)
                            delay = self._after_end()
                except httpx.TransportError as exc:
                    delay = self._after_error(exc)
                except DeltaMismatch as exc:
                    delay = self._after_delta_mismatch(exc)
                if delay is None:
                    return
                await asyncio.sleep(delay)
        finally:
            if owned:
                await client.aclose()

    # -- sync -------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Event]:
        self._sync_iterator = self._events()
        return self._sync_iterator

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection now."""
        iterator, self._sync_iterator = self._sync_iterator, None
        if iterator is not None:
            iterator.close()

    def _events(self) -> Generator[Event, None, None]:
        client = self._client if isinstance(self._client, httpx.Client) else None
        owned = client is None
        if client is None:
            client = httpx.Client(follow_redirects=True)
        try:
            while True:
                delay: float | None
                try:
                    with client.stream(**self._request()) as response:
                        verdict = classify(response.status_code, _content_type(response))
                        if verdict is Verdict.STOP:
                            return
                        if verdict is Verdict.RETRY:
                            delay = self._after_status(response)
                        elif verdict is not Verdict.OPEN:
                            raise self._refusal(verdict, response, _read_limited(response))
                        else:
                            self._opened(response)
                            parser = self._state.new_parser()
                            for chunk in response.iter_bytes():
                                for event in parser.feed(chunk):
                                    if (delivered := self._delivered(event)) is not None:
                                        yield delivered
                                self._state.absorb(parser)
                            delay = self._after_end()
                except httpx.TransportError as exc:
                    delay = self._after_error(exc)
                except DeltaMismatch as exc:
                    delay = self._after_delta_mismatch(exc)
                if delay is None:
                    return
                time.sleep(delay)
        finally:
            if owned:
                client.close()


def _content_type(response: httpx.Response) -> str:
    return str(response.headers.get("content-type", ""))


async def _aread_limited(response: httpx.Response) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) >= ERROR_BODY_LIMIT:
            break
    return bytes(body[:ERROR_BODY_LIMIT])


def _read_limited(response: httpx.Response) -> bytes:
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) >= ERROR_BODY_LIMIT:
            break
    return bytes(body[:ERROR_BODY_LIMIT])
