"""What the SSE client raises: each error says what happened and carries the evidence."""

from __future__ import annotations


class SSEClientError(Exception):
    """Base class of the client's errors."""


class HTTPStatusError(SSEClientError):
    """The server answered with a status that retrying will not fix (e.g. 401, 404).

    Carries the status, the start of the body and the headers, so a caller can tell an expired
    token from a wrong URL without a packet capture.
    """

    def __init__(
        self, method: str, url: str, status: int, body: str, headers: dict[str, str]
    ) -> None:
        self.method = method
        self.url = url
        self.status = status
        self.body = body
        self.headers = headers
        detail = f": {body.strip()[:500]}" if body.strip() else ""
        super().__init__(f"{method} {url} answered {status}{detail}")


class ContentTypeError(SSEClientError):
    """A 2xx response that is not ``text/event-stream``: not an event stream at all."""

    def __init__(self, method: str, url: str, content_type: str, body: str) -> None:
        self.method = method
        self.url = url
        self.content_type = content_type
        self.body = body
        super().__init__(
            f"{method} {url} answered {content_type or 'no content type'}, "
            f"not text/event-stream: {body.strip()[:200]!r}"
        )


class ReconnectExhausted(SSEClientError):
    """Reconnection gave up: ``max_attempts`` or ``max_elapsed`` was reached.

    ``__cause__`` is the last failure (an ``httpx`` error or a retryable status).
    """

    def __init__(self, attempts: int, elapsed: float, last_failure: str) -> None:
        self.attempts = attempts
        self.elapsed = elapsed
        self.last_failure = last_failure
        super().__init__(
            f"gave up after {attempts} failed attempt(s) in {elapsed:.1f} s; "
            f"last failure: {last_failure}"
        )


class StreamInterrupted(SSEClientError):
    """A request with a body broke before the server gave an event id to resume from.

    Sending it again would start the work again (a second LLM generation, billed twice), so the
    client raises instead; ``__cause__`` is the network error.
    """


class DeltaMismatch(SSEClientError):
    """An event's delta (``delta: fossil``) could not be applied: no previous event on this
    connection, another format, or a checksum that does not match. The client never raises it
    to the caller: it reconnects from the last good event instead (see
    :class:`~sluiceway.client.EventSource`)."""
