"""The native stream path of ``sluiceway serve``: hub streams written straight to the socket.

Through ASGI, every open stream needs a task parked in ``await send(...)`` and a second one
parked in ``await receive()`` to notice the client leaving; each delivery is a task switch.
Measured here (bench/), uvicorn itself costs about 9 KiB per connection, and the ASGI stream
on top of it about as much again. So uvicorn's httptools protocol is subclassed
(:mod:`sluiceway.uvicorn_adapter.http`): a ``GET /topics/{topic}`` or ``GET /events`` that
this module says it can serve (:class:`NativeStreams`) is attached to the hub from the
protocol callback itself, with no task at all. Publishing marks the subscribers ready; one
callback per loop iteration writes each one's pending events (already framed as HTTP chunks,
the same ``bytes`` object for everyone) with ``transport.write`` (:class:`TransportSink`).
Flow control is the transport's own ``pause_writing``/``resume_writing``; a client leaving is
``connection_lost``. Nothing here knows uvicorn.

Admission is the one check of :mod:`sluiceway.server.admission`, asked here exactly as the
ASGI route asks it: this path serves a request only when the answer is a plain yes (the host
and origin pass, the grants read every topic, nothing rests on a token that expires). Anything
else — a refusal, a token whose expiry must end the stream, a cross-origin request that CORS
must answer, another method or HTTP version, a bad id, a shutting-down hub — falls through to
the ASGI app, which answers it, errors included, with the same rules.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from starlette.datastructures import QueryParams

from sluiceway.asgi.eventstream import SSE_HEADERS
from sluiceway.auth import AuthError
from sluiceway.hub import Hub, HubError, InvalidEventId
from sluiceway.hub.subscription import CloseReason, StreamState, Subscription
from sluiceway.server.admission import Admission, RequestFacts, redact_tokens
from sluiceway.server.errors import APIError
from sluiceway.server.settings import Settings
from sluiceway.server.streams import read_stream_request, stream_topics_from_path
from sluiceway.sse import encode_retry
from sluiceway.uvicorn_adapter.http import StreamOwner

_HEAD = b"HTTP/1.1 200 OK\r\n" + b"".join(b"%s: %s\r\n" % header for header in SSE_HEADERS)
_END = b"0\r\n\r\n"
_ABORTED = StreamState.ABORTED
_DISCONNECT = CloseReason.DISCONNECT
_NO_QUERY = QueryParams()


class _LastChunk:
    """The last chunk written, and the same framed as an HTTP/1.1 chunk. A live event is the
    same ``bytes`` object (the topic's stored frame) for every subscriber: it is framed once,
    and every subscriber is written that one framed object, with no copy."""

    data: bytes = b""
    framed: bytes = b"0\r\n\r\n"


def as_http_chunk(data: bytes) -> bytes:
    """``data`` framed as one HTTP/1.1 chunk (``Transfer-Encoding: chunked``)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def native_subscription(
    scope: Any, hub: Hub, settings: Settings, admission: Admission
) -> Subscription | None:
    """The hub subscription that answers the request of ``scope``, if this path may serve it
    (see the module doc); None leaves it to the ASGI app."""
    if scope["method"] != "GET" or scope["http_version"] != "1.1" or hub.closing:
        return None
    path_topics = stream_topics_from_path(scope["path"])
    if path_topics is None:
        return None
    facts = RequestFacts.from_scope(scope)
    if facts.origin is not None and settings.cors_allow_origins:
        return None  # a cross-origin request: the CORS middleware answers it
    if admission.check_request(facts) is not None:
        return None  # refused: the ASGI gate answers with the same refusal
    headers: dict[str, str] = {}
    for name, value in scope["headers"]:
        if name == b"last-event-id":  # the first, as the ASGI route reads it
            headers["last-event-id"] = value.decode("latin-1")
            break
    query = QueryParams(scope["query_string"]) if scope["query_string"] else _NO_QUERY
    try:
        grants = admission.grants(facts)
        wanted = read_stream_request(settings, path_topics, query, headers)
        if grants.read_deadline is not None or not admission.may_read_topics(grants, wanted.topics):
            return None  # refused, or ends with its token: the ASGI route serves it
        return hub.subscribe_nowait(wanted.topics, wanted.last_event_id, delta=wanted.delta)
    except (AuthError, APIError, HubError, InvalidEventId, ValueError):
        return None  # the ASGI route answers with the proper error


def response_head(
    settings: Settings, server_headers: Iterable[tuple[bytes, bytes]], opening: bytes
) -> bytes:
    """The head of a native stream's response, with the headers the server adds to every
    response, then the ``retry`` field if one is configured and ``opening`` (the
    subscription's, :meth:`Subscription.opening`): one write, so that a client that gets
    the headers gets its position with them."""
    head = [_HEAD]
    head.extend(b"%s: %s\r\n" % header for header in server_headers)
    head.append(b"transfer-encoding: chunked\r\n\r\n")
    first = encode_retry(settings.retry_ms) if settings.retry_ms is not None else b""
    first += opening
    if first:
        head.append(as_http_chunk(first))
    return b"".join(head)


class NativeStreams:
    """The hub streams of ``sluiceway serve`` as the server's native path
    (:class:`sluiceway.uvicorn_adapter.http.NativePath`)."""

    def __init__(self, hub: Hub, settings: Settings, admission: Admission) -> None:
        self.hub = hub
        self.settings = settings
        self.admission = admission

    def open(
        self,
        scope: Any,
        *,
        server_headers: Iterable[tuple[bytes, bytes]],
        transport: asyncio.Transport,
        loop: asyncio.AbstractEventLoop,
        write_paused: bool,
        owner: StreamOwner,
    ) -> TransportSink | None:
        sub = native_subscription(scope, self.hub, self.settings, self.admission)
        if sub is None:
            return None
        opening = sub.opening()
        transport.write(response_head(self.settings, server_headers, opening))
        sub.sent(len(opening), loop.time())
        return TransportSink(owner, transport, loop, sub, paused=write_paused)

    def redact(self, target: str) -> str:
        return redact_tokens(target)


class TransportSink:
    """Writes one subscription to one socket, driven by callbacks (see the module doc): the
    hub's ``ready``, the transport's ``pause``/``resume`` (passed on by the connection)."""

    __slots__ = ("done", "loop", "owner", "paused", "sub", "transport")

    def __init__(
        self,
        owner: StreamOwner,
        transport: asyncio.Transport,
        loop: asyncio.AbstractEventLoop,
        sub: Subscription,
        *,
        paused: bool,
    ) -> None:
        self.owner = owner
        self.transport = transport
        self.sub = sub
        self.loop = loop
        self.paused = paused
        self.done = False

    def start(self) -> None:
        self.sub.attach(self)

    def ready(self) -> None:
        if self.done:
            return
        sub = self.sub
        reason = sub.close_reason
        if reason is not None and (reason is _DISCONNECT or sub.state is _ABORTED):
            self.finish()
            return
        write = self.transport.write
        sent = 0
        chunk: bytes | None = None
        # Paused, write nothing: resume_writing() calls us again. A write may call
        # pause_writing() (so pause()) synchronously: look again before each chunk. The loop
        # ends with a chunk in hand only when that happened.
        last = _LastChunk
        while not self.paused and (chunk := sub.next_chunk()) is not None:
            if chunk is not last.data:  # else: the same event as the previous subscriber's
                last.data = chunk
                last.framed = as_http_chunk(chunk)
            write(last.framed)
            sent += len(chunk)
        if sent:
            sub.sent(sent, self.loop.time())
        if chunk is not None:  # paused during a write: blocked again
            sub.blocked(self.loop.time())
        elif sub.close_reason is not None and not self.paused:
            self.finish()

    def pause(self) -> None:
        self.paused = True
        self.sub.blocked(self.loop.time())

    def resume(self) -> None:
        self.paused = False
        self.sub.sent(0, self.loop.time())
        self.ready()

    def finish(self) -> None:
        """End the response: cleanly after events were flushed, abruptly for a stuck socket."""
        if self.done:
            return
        self.done = True
        sub = self.sub
        if sub.state is StreamState.ABORTED:
            self.transport.abort()  # it accepts nothing: don't wait to flush
        elif sub.close_reason is not CloseReason.DISCONNECT and not self.transport.is_closing():
            self.transport.write(_END)
            self.transport.close()
        self.owner.stream_finished()
        sub.release()

    def disconnected(self) -> None:
        """The client left."""
        self.sub.close(CloseReason.DISCONNECT)
        self.finish()
