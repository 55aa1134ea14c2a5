"""Response compression that never holds an event back.

``CompressionMiddleware`` compresses responses (gzip; brotli when the ``brotli`` package is
installed and the client prefers it) for clients that accept it.  Every body message is
compressed and *flushed* on its own, so a streamed response — an SSE event, an export batch —
reaches the client when it is sent, not when the compressor's buffer fills.  It leaves alone
what must not be compressed: responses that already have a ``Content-Encoding``, partial
content (206, ``Content-Range``), small complete bodies, and media types that are compressed
already (images, audio, video, archives).

>>> app = CompressionMiddleware(app, minimum_size=500)     # doctest: +SKIP
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

try:  # optional: brotli compresses text better, when installed
    import brotli
except ImportError:  # pragma: no cover - exercised where brotli is absent
    brotli = None

#: Media types not worth compressing again (prefixes and exact types).
INCOMPRESSIBLE_PREFIXES = ("image/", "audio/", "video/", "font/woff")
INCOMPRESSIBLE_TYPES = frozenset(
    {
        "application/zip",
        "application/gzip",
        "application/x-gzip",
        "application/x-bzip2",
        "application/x-xz",
        "application/zstd",
        "application/x-7z-compressed",
        "application/x-rar-compressed",
        "application/pdf",
        "application/octet-stream",
    }
)
COMPRESSIBLE_EXCEPTIONS = frozenset({"image/svg+xml"})


def choose_encoding(accept_encoding: str) -> str | None:
    """The encoding to use for an ``Accept-Encoding`` header: ``br``, ``gzip`` or None.

    >>> choose_encoding("gzip, deflate, br"), choose_encoding("br;q=1, gzip;q=0.8")
    ('gzip', 'br')
    >>> choose_encoding("gzip;q=0, identity")
    """
    offered: dict[str, float] = {}
    for part in accept_encoding.lower().split(","):
        name, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if name:
            offered[name] = quality
    wildcard = offered.get("*", 0.0)
    # gzip first: on a tie it wins, since every client decodes it incrementally (httpx with
    # brotli 1.2 holds back all but 32 KiB per chunk of a brotli stream), and it costs less
    # CPU per flush; brotli is used when the client prefers it.
    candidates = [("gzip", offered.get("gzip", offered.get("x-gzip", wildcard)))]
    if brotli is not None:
        candidates.append(("br", offered.get("br", wildcard)))
    best = max(candidates, key=lambda c: c[1])  # max() keeps the first of equals
    return best[0] if best[1] > 0 else None


def compressible(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    if not media_type or media_type in COMPRESSIBLE_EXCEPTIONS:
        return bool(media_type)
    return media_type not in INCOMPRESSIBLE_TYPES and not media_type.startswith(
        INCOMPRESSIBLE_PREFIXES
    )


class _Compressor:
    """One response's compressor: ``chunk()`` returns compressed bytes flushed so far."""

    def __init__(self, encoding: str) -> None:
        self._flush: Callable[[], bytes]
        if encoding == "br":
            compressor = brotli.Compressor(quality=4)  # fast enough for streams, still good
            self._process: Callable[[bytes], bytes] = compressor.process
            self._flush = compressor.flush
            self._finish: Callable[[], bytes] = compressor.finish
        else:
            gzip = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: the gzip container
            self._process = gzip.compress
            self._flush = lambda: gzip.flush(zlib.Z_SYNC_FLUSH)
            self._finish = gzip.flush

    def chunk(self, data: bytes, last: bool) -> bytes:
        out = self._process(data) if data else b""
        return out + (self._finish() if last else self._flush())


class CompressionMiddleware:
    def __init__(self, app: ASGIApp, minimum_size: int = 500) -> None:
        self.app = app
        self.minimum_size = minimum_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") == "HEAD":
            await self.app(scope, receive, send)
            return
        encoding = choose_encoding(Headers(scope=scope).get("accept-encoding", ""))
        if encoding is None:
            await self.app(scope, receive, send)
            return
        await _Responder(encoding, self.minimum_size, send).run(self.app, scope, receive)


class _Responder:
    def __init__(self, encoding: str, minimum_size: int, send: Send) -> None:
        self.encoding = encoding
        self.minimum_size = minimum_size
        self.send = send
        self.start: Message | None = None
        self.compressor: _Compressor | None = None
        self.passthrough = False

    async def run(self, app: ASGIApp, scope: Scope, receive: Receive) -> None:
        await app(scope, receive, self.on_send)

    async def on_send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            headers = Headers(raw=message["headers"])
            self.passthrough = (
                "content-encoding" in headers
                or "content-range" in headers
                or message["status"] in (204, 206, 304)
                or message["status"] < 200
                or not compressible(headers.get("content-type", ""))
            )
            if self.passthrough:
                await self.send(message)
            elif headers.get("content-type", "").startswith("text/event-stream"):
                # An event stream's head must go now: its first event may be minutes away.
                await self.send(self._compressed_start(message))
                self.compressor = _Compressor(self.encoding)
            else:
                self.start = message  # held until the first body shows whether it is worth it
            return
        if self.passthrough:
            await self.send(message)
            return
        if kind == "http.response.pathsend":  # a file sent by path: compress it in chunks
            await self._send_file(message["path"])
            return
        if kind != "http.response.body":
            await self.send(message)
            return
        body: bytes = message.get("body", b"")
        more = bool(message.get("more_body", False))
        if self.start is not None:
            start, self.start = self.start, None
            if not more and len(body) < self.minimum_size:
                self.passthrough = True
                await self.send(start)
                await self.send(message)
                return
            await self.send(self._compressed_start(start))
            self.compressor = _Compressor(self.encoding)
        assert self.compressor is not None
        await self.send(
            {
                "type": "http.response.body",
                "body": self.compressor.chunk(body, not more),
                "more_body": more,
            }
        )

    def _compressed_start(self, start: Message) -> Message:
        headers = MutableHeaders(raw=list(start["headers"]))
        del headers["content-length"]
        headers["content-encoding"] = self.encoding
        etag = headers.get("etag")
        if etag and not etag.startswith("W/"):
            # Other bytes than the validator was made for: no longer a strong match.
            headers["etag"] = "W/" + etag
        headers.add_vary_header("Accept-Encoding")
        return {**start, "headers": headers.raw}

    async def _send_file(self, path: str) -> None:
        if self.start is not None:
            start, self.start = self.start, None
            await self.send(self._compressed_start(start))
        compressor = _Compressor(self.encoding)
        with open(path, "rb") as file:  # noqa: ASYNC230 - local disk reads, in 1 MiB steps
            while True:
                data = file.read(1024 * 1024)
                last = len(data) < 1024 * 1024
                await self.send(
                    {
                        "type": "http.response.body",
                        "body": compressor.chunk(data, last),
                        "more_body": not last,
                    }
                )
                if last:
                    return


__all__ = ["CompressionMiddleware", "choose_encoding", "compressible"]
