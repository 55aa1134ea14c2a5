"""What the HTTP providers share: opening a streaming POST to their API, and turning failures
into :class:`UpstreamError` that never carry a secret.

The bytes come through :class:`~sluiceway.llm.providers.stream_client.StreamClient`, the
gateway's hot path; through httpx when a proxy applies (``HTTPS_PROXY``, ``HTTP_PROXY``,
``ALL_PROXY``, minus ``NO_PROXY``), which that client does not speak, or when a provider is
given an httpx client of its own.
"""

from __future__ import annotations

import urllib.request
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from sluiceway.client.policy import parse_retry_after
from sluiceway.llm.chunks import UpstreamError, status_kind
from sluiceway.llm.providers.stream_client import (
    ConnectError,
    ReadTimeout,
    StreamClient,
    StreamClientError,
)

#: How much of an upstream error body is read for its message.
ERROR_BODY_LIMIT = 16 * 1024

ErrorMessage = Callable[[Any], "str | None"]


class Upstream:
    """How a provider reaches its API: ``open_stream`` POSTs and yields the body's pieces.

    ``read_timeout`` bounds the silence between two pieces (a stalled upstream)."""

    def __init__(
        self,
        connect_timeout: float,
        read_timeout: float,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._fast = StreamClient(connect_timeout=connect_timeout, read_timeout=read_timeout)
        self._given = client
        self._httpx = client
        self._timeouts = (connect_timeout, read_timeout)
        self._proxied: dict[str, bool] = {}

    @asynccontextmanager
    async def open_stream(
        self,
        url: str,
        body: dict[str, Any],
        headers: Mapping[str, str],
        error_message: ErrorMessage,
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """POST ``body`` as JSON; yields the 200 response's body as it arrives. Any other
        outcome raises :class:`UpstreamError` with the provider's own message (from
        ``error_message``). Leaving the block before the end closes the connection."""
        content = orjson.dumps(body)
        all_headers = {**headers, "content-type": "application/json"}
        if self._given is not None or self._needs_proxy(url):
            async with self._open_httpx(url, content, all_headers, error_message) as pieces:
                yield pieces
            return
        try:
            async with self._fast.post(url, content, all_headers) as response:
                if response.status != 200:
                    raw = await response.read(ERROR_BODY_LIMIT)
                    raise _status_error(
                        response.status, response.reason, raw, response.headers, error_message
                    )
                yield response.pieces()
        except ReadTimeout:
            raise UpstreamError("timeout", "the provider did not answer in time") from None
        except ConnectError as exc:
            raise UpstreamError(
                "upstream_unavailable", f"cannot reach the provider: {exc}"
            ) from None
        except StreamClientError as exc:
            raise UpstreamError("upstream_error", f"the provider's stream broke: {exc}") from None

    def _needs_proxy(self, url: str) -> bool:
        """Whether the environment routes ``url`` through a proxy (cached per origin)."""
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        found = self._proxied.get(origin)
        if found is None:
            proxies = urllib.request.getproxies()
            proxy = proxies.get(parts.scheme) or proxies.get("all")
            found = bool(proxy) and not urllib.request.proxy_bypass(parts.hostname or "")
            self._proxied[origin] = found
        return found

    @asynccontextmanager
    async def _open_httpx(
        self,
        url: str,
        content: bytes,
        headers: Mapping[str, str],
        error_message: ErrorMessage,
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        if self._httpx is None:
            self._httpx = _httpx_client(*self._timeouts)
        try:
            async with self._httpx.stream(
                "POST", url, content=content, headers=headers
            ) as response:
                if response.status_code != 200:
                    raw = bytearray()
                    async for piece in response.aiter_bytes():
                        raw += piece
                        if len(raw) >= ERROR_BODY_LIMIT:
                            break
                    raise _status_error(
                        response.status_code,
                        response.reason_phrase,
                        bytes(raw),
                        response.headers,
                        error_message,
                    )
                yield response.aiter_bytes()
        except httpx.TimeoutException as exc:
            raise UpstreamError(
                "timeout", f"the provider did not answer in time ({type(exc).__name__})"
            ) from None
        except httpx.TransportError as exc:
            raise UpstreamError(
                "upstream_unavailable", f"cannot reach the provider ({type(exc).__name__})"
            ) from None

    async def aclose(self) -> None:
        await self._fast.aclose()
        if self._httpx is not None:
            await self._httpx.aclose()


def _httpx_client(connect_timeout: float, read_timeout: float) -> httpx.AsyncClient:
    """A pooled client whose read timeout bounds the silence between two upstream chunks."""
    timeout = httpx.Timeout(
        connect=connect_timeout, read=read_timeout, write=connect_timeout, pool=connect_timeout
    )
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=100)
    return httpx.AsyncClient(timeout=timeout, limits=limits)


def _status_error(
    status: int,
    reason: str,
    raw: bytes,
    headers: Mapping[str, str],
    error_message: ErrorMessage,
) -> UpstreamError:
    message = None
    with suppress(orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        message = error_message(orjson.loads(raw))
    return UpstreamError(
        status_kind(status),
        f"the provider answered {status}: {message or reason or 'error'}",
        retry_after=parse_retry_after(headers.get("retry-after")),
    )
