"""The SSE response, for any Starlette/FastAPI (ASGI) app.

``EventStreamResponse`` streams either an async iterable you provide (events, strings, dicts or
pre-encoded bytes) or a hub :class:`~sluiceway.hub.Subscription` (which starts with the client's
position: :meth:`~sluiceway.hub.Subscription.opening`). Either way it sends the right
headers, an optional initial ``retry:``, keep-alive comments when idle, notices a client that
left at once and closes the producer (its ``finally`` blocks run), and ends at an event
boundary when the server shuts down.

>>> from starlette.applications import Starlette
>>> from starlette.routing import Route
>>> from sluiceway.asgi import EventStreamResponse
>>> from sluiceway.sse import Event
>>> async def ticks(request):
...     async def produce():
...         for n in range(3):
...             yield Event(data=str(n), id=str(n))
...     return EventStreamResponse(produce(), ping_interval=15, retry=2000)
>>> app = Starlette(routes=[Route("/ticks", ticks)])
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from typing import Any

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from sluiceway.asgi.shutdown import abort_connection, peer_of, register
from sluiceway.control import ERROR_EVENT
from sluiceway.hub.core import to_data
from sluiceway.hub.subscription import CloseReason, StreamState, Subscription
from sluiceway.sse import Event, encode, encode_comment, encode_event, encode_retry

Item = Event | str | bytes | Mapping[str, Any]

SSE_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    # Tells nginx (and proxies that copy its convention) not to buffer the stream.
    (b"x-accel-buffering", b"no"),
]

_PING = encode_comment("ping")

#: Sent when a producer raises after the response has begun; then the stream ends.
PRODUCER_FAILED = encode_event('{"error":"producer_failed"}', event=ERROR_EVENT)

logger = logging.getLogger("sluiceway.asgi")


def encode_item(item: Item) -> bytes:
    """One item of a producer as SSE bytes.

    ``Event`` → encoded; ``str`` → one event with that data; ``bytes`` → sent as they are
    (already SSE); a mapping → ``Event(**mapping)``, non-string ``data`` sent as JSON.
    """
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return encode_event(item)
    if isinstance(item, Event):
        return encode(item)
    fields = dict(item)
    if "data" in fields and fields["data"] is not None:
        fields["data"] = to_data(fields["data"])
    return encode(Event(**fields))


class EventStreamResponse(Response):
    """A response streaming Server-Sent Events (a Starlette ``Response``: an endpoint of
    FastAPI or Starlette returns it as it is).

    ``content``: an async iterable of :data:`Item` or a hub :class:`Subscription`.
    ``ping_interval``: seconds of silence before a keep-alive comment (``None``: never; for a
    subscription the hub's ``ping_interval`` applies). ``retry``: reconnection delay in ms sent
    first. ``headers``: extra response headers; values may hold any text but line breaks
    (see :func:`header_value`). ``ends_at``: a Unix time at which the stream ends (cleanly,
    after what was already sent), e.g. when the access token it rests on expires; the client
    then reconnects, with a fresh token, and resumes. ``on_close``: called once the response
    is over, however it ended: the stream's end, the client gone, or a failure before its
    first byte (release there what the stream holds).
    """

    def __init__(
        self,
        content: AsyncIterable[Item] | Subscription,
        *,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        ping_interval: float | None = 15.0,
        retry: int | None = None,
        ends_at: float | None = None,
        on_close: Callable[[], object] | None = None,
    ) -> None:
        self.content = content
        self.ends_at = ends_at
        self.status_code = status_code
        self.ping_interval = ping_interval
        self.retry = retry
        self.on_close = on_close
        self.background = None  # FastAPI sets its background tasks here; run after the stream
        self.body = b""
        self.raw_headers = list(SSE_HEADERS)
        for name, value in (headers or {}).items():
            self.raw_headers.append((name.lower().encode("latin-1"), header_value(value)))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._stream(scope, receive, send)
        finally:
            if self.on_close is not None:
                self.on_close()
        if self.background is not None:
            await self.background()

    async def _stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                }
            )
            if scope.get("method") == "HEAD":
                await send({"type": "http.response.body", "body": b""})
                await self._discard()
                return
            sub = self.content if isinstance(self.content, Subscription) else None
            # A hub stream starts with the client's position, before any event.
            opening = sub.opening() if sub is not None else b""
            first = (encode_retry(self.retry) if self.retry is not None else b"") + opening
            if first:
                await send(_body(first))
            if sub is not None:
                sub.sent(len(opening), asyncio.get_running_loop().time())
        except BaseException:
            await self._discard()  # nothing streams: what the content holds is let go now
            raise
        if isinstance(self.content, Subscription):
            peer = peer_of(scope)
            await _stream_subscription(self.content, receive, send, self.ends_at, peer)
        else:
            await _stream_iterable(self.content, self.ping_interval, receive, send, self.ends_at)

    async def _discard(self) -> None:
        if isinstance(self.content, Subscription):
            self.content.release()
            return
        aclose = getattr(self.content, "aclose", None)
        if aclose is not None:
            await aclose()


def header_value(text: str) -> bytes:
    """A header value as bytes that every HTTP/1.1 parser takes: the text as UTF-8 (bytes over
    0x7F are field content, RFC 9110 5.5), with the control characters a header may not hold
    percent-escaped, so that a value that came from a client (a Mercure publisher's id) can
    never break the response it rides on.

    >>> header_value("urn:☃"), header_value("a\x01b")
    (b'urn:\xe2\x98\x83', b'a%01b')
    """
    raw = text.encode("utf-8", "backslashreplace")  # a lone surrogate: never an error
    if _CONTROL.search(raw) is None:
        return raw
    return _CONTROL.sub(lambda match: b"%%%02X" % match[0][0], raw)


# HTAB is the one control character a field value may hold.
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def _body(chunk: bytes, more: bool = True) -> Message:
    return {"type": "http.response.body", "body": chunk, "more_body": more}


async def _watch_disconnect(receive: Receive, on_disconnect: Callable[[], object]) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    on_disconnect()


def _at(ends_at: float | None, end: Callable[[], object]) -> asyncio.TimerHandle | None:
    if ends_at is None:
        return None
    return asyncio.get_running_loop().call_later(max(ends_at - time.time(), 0.0), end)


async def _stream_subscription(
    sub: Subscription,
    receive: Receive,
    send: Send,
    ends_at: float | None = None,
    client: tuple[str, int] | None = None,
) -> None:
    """The hub's hot path: one write per wake-up, whatever number of events is pending."""
    loop = asyncio.get_running_loop()
    deadline = _at(ends_at, lambda: sub.close(CloseReason.CLOSED))
    sub.attach_task(asyncio.current_task())
    listener = loop.create_task(
        _watch_disconnect(receive, lambda: sub.close(CloseReason.DISCONNECT))
    )
    forget = register(lambda: sub.close(CloseReason.SHUTDOWN, flush=True), hub_stream=True)
    try:
        while True:
            chunk = sub.next_chunk()
            if chunk is None:
                if sub.closed:
                    break
                await sub.wait()
                continue
            sub.blocked(loop.time())
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            sub.sent(len(chunk), loop.time())
        if sub.state is not StreamState.ABORTED and sub.close_reason is not CloseReason.DISCONNECT:
            await send(_body(b"", more=False))
    except asyncio.CancelledError:
        if sub.state is not StreamState.ABORTED:
            raise
        # We cancelled our own write to a socket that accepts nothing: end without the final
        # chunk (it could not be written either); the server drops the connection.
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        abort_connection(client)
    finally:
        forget()
        listener.cancel()
        if deadline is not None:
            deadline.cancel()
        sub.release()


async def _stream_iterable(
    content: AsyncIterable[Item],
    ping_interval: float | None,
    receive: Receive,
    send: Send,
    ends_at: float | None = None,
) -> None:
    """Any producer: a pump task writes its items, pings fill the silences, and a client that
    leaves (or a shutdown) cancels the pump, so the producer's ``finally`` runs at once."""
    loop = asyncio.get_running_loop()
    iterator: AsyncIterator[Item] = aiter(content)
    lock = asyncio.Lock()  # pump and pinger must not interleave their writes
    last_write = loop.time()

    async def write(chunk: bytes) -> None:
        nonlocal last_write
        async with lock:
            await send(_body(chunk))
        last_write = loop.time()

    async def pump() -> None:
        async for item in iterator:
            await write(encode_item(item))

    async def pinger(interval: float) -> None:
        while True:
            await asyncio.sleep(max(interval - (loop.time() - last_write), 0.0))
            if loop.time() - last_write >= interval:
                await write(_PING)

    pump_task = loop.create_task(pump())
    listener = loop.create_task(_watch_disconnect(receive, pump_task.cancel))
    ping_task = loop.create_task(pinger(ping_interval)) if ping_interval else None
    forget = register(pump_task.cancel)
    deadline = _at(ends_at, pump_task.cancel)
    try:
        await asyncio.wait({pump_task})  # unlike awaiting it, lets our own cancellation through
    finally:
        forget()
        if deadline is not None:
            deadline.cancel()
        for task in (listener, ping_task):
            if task is not None:
                task.cancel()
        if not pump_task.done():  # we ourselves are being cancelled
            pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump_task
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()  # runs the producer's finally if the pump stopped between items
    if listener.done():
        return  # the client left: there is nobody to send the end to
    failure = None if pump_task.cancelled() else pump_task.exception()
    async with lock:
        if failure is not None:
            # The response has begun, so the error travels in-band, without internals.
            logger.error("event stream producer failed", exc_info=failure)
            await send(_body(PRODUCER_FAILED))
        await send(_body(b"", more=False))
