"""What the HTTP providers share: opening a streaming POST, and turning failures into
:class:`UpstreamError` that never carry a secret."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from typing import Any

import httpx
import orjson

from sluiceway.client.policy import parse_retry_after
from sluiceway.llm.chunks import UpstreamError, status_kind

#: How much of an upstream error body is read for its message.
ERROR_BODY_LIMIT = 16 * 1024


def make_client(connect_timeout: float, read_timeout: float) -> httpx.AsyncClient:
    """A pooled client whose read timeout bounds the silence between two upstream chunks."""
    timeout = httpx.Timeout(
        connect=connect_timeout, read=read_timeout, write=connect_timeout, pool=connect_timeout
    )
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=100)
    return httpx.AsyncClient(timeout=timeout, limits=limits)


@asynccontextmanager
async def open_stream(
    http: httpx.AsyncClient,
    url: str,
    body: dict[str, Any],
    headers: Mapping[str, str],
    error_message: Callable[[Any], str | None],
) -> AsyncIterator[httpx.Response]:
    """POST ``body`` and yield the 200 streaming response; any other outcome raises
    :class:`UpstreamError` with the provider's own message (from ``error_message``)."""
    try:
        async with http.stream(
            "POST",
            url,
            content=orjson.dumps(body),
            headers={**headers, "content-type": "application/json"},
        ) as response:
            if response.status_code != 200:
                raise await _status_error(response, error_message)
            yield response
    except httpx.TimeoutException as exc:
        raise UpstreamError(
            "timeout", f"the provider did not answer in time ({type(exc).__name__})"
        ) from None
    except httpx.TransportError as exc:
        raise UpstreamError(
            "upstream_unavailable", f"cannot reach the provider ({type(exc).__name__})"
        ) from None


async def _status_error(
    response: httpx.Response, error_message: Callable[[Any], str | None]
) -> UpstreamError:
    body = bytearray()
    async for piece in response.aiter_bytes():
        body += piece
        if len(body) >= ERROR_BODY_LIMIT:
            break
    message = None
    with suppress(orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        message = error_message(orjson.loads(body))
    status = response.status_code
    return UpstreamError(
        status_kind(status),
        f"the provider answered {status}: {message or response.reason_phrase or 'error'}",
        retry_after=parse_retry_after(response.headers.get("retry-after")),
    )
