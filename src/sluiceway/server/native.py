"""The native stream path of ``sluiceway serve``: hub streams written straight to the socket.

Through ASGI, every open stream needs a task parked in ``await send(...)`` and a second one
parked in ``await receive()`` to notice the client leaving; each delivery is a task switch.
Measured here (bench/), uvicorn itself costs about 9 KiB per connection, and the ASGI stream
on top of it about as much again. This module subclasses uvicorn's httptools protocol: a
``GET /topics/{topic}`` or ``GET /events`` that it can serve is attached to the hub from the
protocol callback itself, with no task at all. Publishing marks the subscribers ready; one
callback per loop iteration writes each one's pending events (already framed as HTTP chunks,
the same ``bytes`` object for everyone) with ``transport.write``. Flow control is the
transport's own ``pause_writing``/``resume_writing``; a client leaving is ``connection_lost``.

Admission is the one check of :mod:`sluiceway.server.admission`, asked here exactly as the
ASGI route asks it: this path serves a request only when the answer is a plain yes (the host
and origin pass, the grants read every topic, nothing rests on a token that expires). Anything
else — a refusal, a token whose expiry must end the stream, a cross-origin request that CORS
must answer, another method or HTTP version, a bad id, a shutting-down hub — falls through to
the ASGI app, which answers it, errors included, with the same rules.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.datastructures import QueryParams
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

from sluiceway.asgi.eventstream import SSE_HEADERS
from sluiceway.auth import AuthError
from sluiceway.hub import Hub, HubError, InvalidEventId
from sluiceway.hub.subscription import CloseReason, StreamState, Subscription
from sluiceway.server.admission import Admission, RequestFacts, redact_tokens
from sluiceway.server.errors import APIError
from sluiceway.server.settings import Settings
from sluiceway.server.streams import read_stream_request, stream_topics_from_path
from sluiceway.sse import encode_retry

#: False if the installed uvicorn lacks the hook we use; ``serve`` then stays on pure ASGI.
AVAILABLE = hasattr(HttpToolsProtocol, "_start_asgi_task")

_HEAD = b"HTTP/1.1 200 OK\r\n" + b"".join(b"%s: %s\r\n" % header for header in SSE_HEADERS)
_END = b"0\r\n\r\n"
_CRLF = b"\r\n"
_NO_QUERY = QueryParams()


def as_http_chunk(data: bytes) -> bytes:
    """``data`` framed as one HTTP/1.1 chunk (``Transfer-Encoding: chunked``)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


class TransportSink:
    """Writes one subscription to one socket, driven by callbacks (see the module doc)."""

    __slots__ = ("done", "loop", "paused", "protocol", "sub", "transport")

    def __init__(self, protocol: StreamingHttpProtocol, sub: Subscription) -> None:
        self.protocol = protocol
        self.transport = protocol.transport
        self.sub = sub
        self.loop = protocol.loop
        self.paused = protocol.flow.write_paused
        self.done = False

    def ready(self) -> None:
        if self.done:
            return
        sub = self.sub
        if sub.state is StreamState.ABORTED or sub.close_reason is CloseReason.DISCONNECT:
            self.finish()
            return
        if self.paused:
            return  # resume_writing() calls us again
        # One writev per chunk, the frame itself not copied: with a single event that is the
        # same bytes object for every subscriber (the topic's stored frame).
        writelines = self.transport.writelines
        sent = 0
        # A write may call pause_writing() synchronously: look again before each chunk.
        while not self.paused and (chunk := sub.next_chunk()) is not None:
            writelines((b"%x\r\n" % len(chunk), chunk, _CRLF))
            sent += len(chunk)
        if sent:
            sub.sent(sent, self.loop.time())
        if self.protocol.flow.write_paused:  # paused during a write: blocked again
            sub.blocked(self.loop.time())
        elif sub.closed:
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
        cycle = self.protocol.cycle
        if cycle is not None:
            cycle.response_complete = True
        self.protocol.sink = None
        sub.release()


class StreamingHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with hub streams served natively (see the module doc).

    Bound to a hub and settings with :func:`protocol_for`.
    """

    hub: Hub
    settings: Settings
    admission: Admission
    sink: TransportSink | None = None

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        if self.sink is None and self._serve_natively(cycle):
            return
        super()._start_asgi_task(cycle, app)

    def _serve_natively(self, cycle: RequestResponseCycle) -> bool:
        scope = cycle.scope
        if scope["method"] != "GET" or scope["http_version"] != "1.1" or self.hub.closing:
            return False
        path_topics = stream_topics_from_path(scope["path"])
        if path_topics is None:
            return False
        facts = RequestFacts.from_scope(scope)
        if facts.origin is not None and self.settings.cors_allow_origins:
            return False  # a cross-origin request: the CORS middleware answers it
        admission = self.admission
        if admission.check_request(facts) is not None:
            return False  # refused: the ASGI gate answers with the same refusal
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            if name == b"last-event-id":  # the first, as the ASGI route reads it
                headers["last-event-id"] = value.decode("latin-1")
                break
        query = QueryParams(scope["query_string"]) if scope["query_string"] else _NO_QUERY
        try:
            grants = admission.grants(facts)
            wanted = read_stream_request(self.settings, path_topics, query, headers)
            if grants.read_deadline is not None or not admission.may_read_topics(
                grants, wanted.topics
            ):
                return False  # refused, or ends with its token: the ASGI route serves it
            sub = self.hub.subscribe_nowait(wanted.topics, wanted.last_event_id)
        except (AuthError, APIError, HubError, InvalidEventId, ValueError):
            return False  # the ASGI route answers with the proper error
        head = [_HEAD]
        head.extend(b"%s: %s\r\n" % header for header in self.server_state.default_headers)
        head.append(b"transfer-encoding: chunked\r\n\r\n")
        if self.settings.retry_ms is not None:
            head.append(as_http_chunk(encode_retry(self.settings.retry_ms)))
        self.transport.write(b"".join(head))
        cycle.response_started = True
        if self.access_log and self.access_logger.isEnabledFor(logging.INFO):
            self.access_logger.info(
                '%s - "%s %s HTTP/%s" %d',
                get_client_addr(scope),
                scope["method"],
                redact_tokens(get_path_with_query_string(scope)),
                scope["http_version"],
                200,
            )
        self.sink = TransportSink(self, sub)
        sub.attach(self.sink)
        return True

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.sink is not None:
            self.sink.pause()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.sink is not None:
            self.sink.resume()

    def connection_lost(self, exc: Exception | None) -> None:
        sink = self.sink
        if sink is not None:
            sink.sub.close(CloseReason.DISCONNECT)
            sink.finish()
        super().connection_lost(exc)


def protocol_for(hub: Hub, settings: Settings, admission: Admission) -> type[asyncio.Protocol]:
    """A protocol class bound to ``hub``, ``settings`` and the app's ``admission``, for
    ``uvicorn.Config(http=...)``."""
    return type(
        "BoundStreamingHttpProtocol",
        (StreamingHttpProtocol,),
        {"hub": hub, "settings": settings, "admission": admission},
    )
