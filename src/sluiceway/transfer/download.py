"""Serving a file: validators, conditional requests, byte ranges, constant memory.

:func:`file_response` turns a path into the right response for the request in front of it:

* ``200`` — the whole file, with ``Content-Length``, a strong ``ETag``, ``Last-Modified``,
  ``Accept-Ranges: bytes``, ``Content-Type`` (by extension), ``Content-Disposition``
  (``inline`` only for passive types), ``Content-Security-Policy: sandbox`` and
  ``X-Content-Type-Options: nosniff``;
* ``206`` — one range (``Content-Range``), or several as ``multipart/byteranges``;
* ``304`` — ``If-None-Match``/``If-Modified-Since`` say the client's copy is current;
* ``412`` — ``If-Match``/``If-Unmodified-Since`` fail;
* ``416`` — no range overlaps the file (``Content-Range: bytes */<size>``).

A malformed ``Range`` is ignored (``200``), as RFC 9110 asks; ``Range`` applies to ``GET`` only,
and only when ``If-Range`` (if sent) names this very version. The file is opened once and
``fstat``-ed: the validators, the length and the bytes sent all describe the same open file.

The body is read in ``chunk_size`` pieces with ``os.pread`` in a worker thread and sent under
the server's flow control, so memory per download stays about two chunks, whatever the size.
When the ASGI server offers the ``http.response.pathsend`` extension, a whole-file ``GET`` is
handed to it by path instead (zero-copy where the server uses ``sendfile``; uvicorn does not
offer it). A client that disconnects stops the transfer at once.

>>> from starlette.applications import Starlette
>>> from starlette.routing import Route
>>> async def report(request):
...     return await file_response(request, "/srv/reports/q3.pdf", attachment=True)
>>> app = Starlette(routes=[Route("/report", report)])

Raises ``FileNotFoundError`` when the path is missing or is not a regular file (a directory, a
device, a FIFO); render that as your 404. To serve client-chosen names from a directory,
resolve them first with :func:`sluiceway.transfer.paths.resolve_within`.
"""

from __future__ import annotations

import contextlib
import errno
import mimetypes
import os
import secrets
import stat
from collections.abc import Callable, Coroutine
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from sluiceway.transfer.conditional import Validators, check_preconditions, range_applies
from sluiceway.transfer.disposition import content_disposition
from sluiceway.transfer.ranges import RangeNotSatisfiable, parse_range

#: Bytes read and sent at a time; a download holds about two of them (one being read, one in
#: the transport's buffer). Server CPU per GiB sent through uvicorn (httptools, uvloop), page-
#: cached file, one curl client: 64 KiB (Starlette's FileResponse) 2.0 s, 256 KiB 0.65 s,
#: 512 KiB 0.40 s, 1 MiB 0.37 s — and os.sendfile, for scale, 0.08 s.
DEFAULT_CHUNK_SIZE = 512 * 1024

# A content coding guessed from the extension describes the bytes on disk, not a transfer
# coding: `x.tar.gz` is a gzip file to the client, never `Content-Encoding: gzip`.
_ENCODED_TYPES = {
    "gzip": "application/gzip",
    "bzip2": "application/x-bzip2",
    "xz": "application/x-xz",
    "br": "application/x-brotli",
    "compress": "application/x-compress",
}
#: What a browser may show inline: passive media that runs no script (images but not SVG,
#: audio, video, PDF, plain text). Every other type is sent as an attachment, so that an
#: uploaded page (HTML, XHTML, XML, SVG...) is never opened as a page of the server's origin.
PASSIVE_TYPES = frozenset({"application/pdf", "text/plain"})
_PASSIVE_FAMILIES = ("image/", "audio/", "video/")
_ACTIVE_IMAGES = frozenset({"image/svg+xml"})
#: Sent with every file: the response is its own sandboxed origin (no script, no cookies of
#: ours) and its type is never guessed from its bytes.
SANDBOX_HEADERS = {"content-security-policy": "sandbox", "x-content-type-options": "nosniff"}


def is_passive(media_type: str) -> bool:
    """May a file of this type be shown inline?

    >>> is_passive("image/png"), is_passive("image/svg+xml"), is_passive("text/html")
    (True, False, False)
    """
    essence = media_type.split(";", 1)[0].strip().lower()
    if essence in PASSIVE_TYPES:
        return True
    return essence.startswith(_PASSIVE_FAMILIES) and essence not in _ACTIVE_IMAGES


CRLF = "\r\n"

#: A part of a body: literal bytes, or the half-open interval of the file to send.
Piece = bytes | tuple[int, int]


class FileChanged(RuntimeError):
    """The file shrank while it was being sent; the response cannot be completed."""


def media_type_for(name: str) -> str:
    """The ``Content-Type`` for a file name.

    >>> media_type_for("a.csv"), media_type_for("a.tar.gz"), media_type_for("a")
    ('text/csv', 'application/gzip', 'application/octet-stream')
    """
    media_type, encoding = mimetypes.guess_type(name, strict=False)
    if encoding is not None:
        return _ENCODED_TYPES.get(encoding, "application/octet-stream")
    return media_type or "application/octet-stream"


def multipart_pieces(
    ranges: list[tuple[int, int]], size: int, media_type: str, boundary: str
) -> list[Piece]:
    """The body of a ``multipart/byteranges`` response, as literal and file pieces.

    >>> for piece in multipart_pieces([(0, 2), (8, 10)], 10, "text/plain", "B"):
    ...     print(piece)
    b'--B\\r\\nContent-Type: text/plain\\r\\nContent-Range: bytes 0-1/10\\r\\n\\r\\n'
    (0, 2)
    b'\\r\\n--B\\r\\nContent-Type: text/plain\\r\\nContent-Range: bytes 8-9/10\\r\\n\\r\\n'
    (8, 10)
    b'\\r\\n--B--\\r\\n'
    """
    pieces: list[Piece] = []
    for index, (start, stop) in enumerate(ranges):
        head = (
            f"{'' if index == 0 else CRLF}--{boundary}\r\n"
            f"Content-Type: {media_type}\r\n"
            f"Content-Range: bytes {start}-{stop - 1}/{size}\r\n\r\n"
        )
        pieces += [head.encode("latin-1"), (start, stop)]
    pieces.append(f"\r\n--{boundary}--\r\n".encode("latin-1"))
    return pieces


def _length(pieces: list[Piece]) -> int:
    return sum(len(p) if isinstance(p, bytes) else p[1] - p[0] for p in pieces)


def _open_regular(path: str) -> tuple[int, os.stat_result, Path]:
    # O_NONBLOCK: opening a FIFO must not hang a worker thread (it is refused below anyway).
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise FileNotFoundError(errno.ENOENT, "not a regular file", path)
    return fd, info, Path(os.path.abspath(path))  # absolute: what pathsend wants


def _error(status: int, code: str, detail: str, headers: dict[str, str]) -> Response:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


async def file_response(
    request: Request,
    path: str | os.PathLike[str],
    *,
    attachment: bool = False,
    filename: str | None = None,
    media_type: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Response:
    """The response to ``request`` for the file at ``path`` (see the module doc).

    ``filename`` (default: the path's last name) is what ``Content-Disposition`` offers; with
    ``attachment`` a browser saves the file rather than showing it. Only passive types
    (:func:`is_passive`: images but not SVG, audio, video, PDF, plain text) are ever shown
    inline; every file is sent with :data:`SANDBOX_HEADERS`, so that a file a user uploaded
    never runs as a page of your origin.
    """
    fd, info, absolute = await anyio.to_thread.run_sync(_open_regular, os.fspath(path))
    try:
        return _respond(request, fd, info, absolute, attachment, filename, media_type, chunk_size)
    except BaseException:
        os.close(fd)
        raise


def _respond(
    request: Request,
    fd: int,
    info: os.stat_result,
    path: Path,
    attachment: bool,
    filename: str | None,
    media_type: str | None,
    chunk_size: int,
) -> Response:
    name = filename or path.name
    media_type = media_type or media_type_for(name)
    validators = Validators.of(info)
    headers = {
        "etag": validators.etag,
        "last-modified": validators.last_modified_header,
        # Files can be replaced by uploads: let caches keep them, but revalidate (cheap 304s).
        "cache-control": "no-cache",
    }
    method = request.method
    outcome = check_preconditions(method, request.headers, validators)
    if outcome is not None:
        os.close(fd)
        if outcome == 304:
            return Response(status_code=304, headers=headers)
        return _error(412, "precondition_failed", "a precondition of the request failed", headers)

    size = info.st_size
    ranges: list[tuple[int, int]] | None = None
    range_header = request.headers.get("range")
    if range_header is not None and method == "GET" and range_applies(request.headers, validators):
        try:
            ranges = parse_range(range_header, size)
        except RangeNotSatisfiable as exc:
            os.close(fd)
            headers["content-range"] = f"bytes */{size}"
            return _error(416, "range_not_satisfiable", str(exc), headers)

    headers["accept-ranges"] = "bytes"
    inline = not attachment and is_passive(media_type)
    headers["content-disposition"] = content_disposition(name, attachment=not inline)
    headers.update(SANDBOX_HEADERS)
    pieces: list[Piece]
    if ranges is None:
        status, pieces = 200, [(0, size)]
        headers["content-type"] = media_type
    elif len(ranges) == 1:
        (start, stop) = ranges[0]
        status, pieces = 206, [(start, stop)]
        headers["content-type"] = media_type
        headers["content-range"] = f"bytes {start}-{stop - 1}/{size}"
    else:
        boundary = secrets.token_hex(16)
        status, pieces = 206, multipart_pieces(ranges, size, media_type, boundary)
        headers["content-type"] = f"multipart/byteranges; boundary={boundary}"
    headers["content-length"] = str(_length(pieces))
    return FileDownload(fd, path, pieces, status, headers, chunk_size)


class FileDownload(Response):
    """Sends pieces of an open file descriptor (which it owns and closes) to one client.

    ``pieces`` are literal bytes or ``(start, stop)`` intervals of the file; the headers must
    already say everything (``Content-Length`` included). :func:`file_response` builds it.
    """

    def __init__(
        self,
        fd: int,
        path: Path,
        pieces: list[Piece],
        status_code: int,
        headers: dict[str, str],
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        self.fd = fd
        self.path = path
        self.pieces = pieces
        self.chunk_size = chunk_size
        self.status_code = status_code
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            start = {"status": self.status_code, "headers": self.raw_headers}
            await send({"type": "http.response.start", **start})
            if scope["method"] == "HEAD":
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            elif self._pathsend_possible(scope):
                await send({"type": "http.response.pathsend", "path": str(self.path)})
            else:
                await _until_disconnect(partial(self._send_pieces, send), scope, receive)
        finally:
            self._close()

    def _close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def __del__(self) -> None:  # a response built but never sent must not leak its descriptor
        self._close()

    def _pathsend_possible(self, scope: Scope) -> bool:
        # Only the whole file (200): the extension has no way to name a range.
        return self.status_code == 200 and "http.response.pathsend" in scope.get("extensions", {})

    async def _send_pieces(self, send: Send) -> None:
        for piece in self.pieces:
            if isinstance(piece, bytes):
                await send({"type": "http.response.body", "body": piece, "more_body": True})
                continue
            position, stop = piece
            while position < stop:
                wanted = min(self.chunk_size, stop - position)
                # In a thread: a cold or slow disk must not stall every other stream on the
                # loop (the hop costs about as much CPU as the read itself from page cache).
                data = await anyio.to_thread.run_sync(os.pread, self.fd, wanted, position)
                if len(data) < wanted:
                    raise FileChanged(f"{self.path} shrank while it was being sent")
                position += wanted
                await send({"type": "http.response.body", "body": data, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _until_disconnect(
    sender: Callable[[], Coroutine[Any, Any, None]], scope: Scope, receive: Receive
) -> None:
    """Run ``sender`` until it finishes or the client disconnects, whichever comes first.

    ASGI servers before spec 2.4 (uvicorn included) drop writes to a departed client silently,
    so without this a download would read the rest of the file for nobody.
    """
    spec = tuple(int(n) for n in scope.get("asgi", {}).get("spec_version", "2.0").split("."))
    if spec >= (2, 4):  # send() raises OSError once the client is gone
        with contextlib.suppress(OSError):
            await sender()
        return
    async with anyio.create_task_group() as group:

        async def send_all() -> None:
            await sender()
            group.cancel_scope.cancel()

        group.start_soon(send_all)
        while (await receive())["type"] != "http.disconnect":
            pass
        group.cancel_scope.cancel()
