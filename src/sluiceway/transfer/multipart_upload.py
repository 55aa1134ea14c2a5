"""Receiving ``multipart/form-data`` uploads as a stream, file parts straight to disk.

``request.form()`` spools every file to a temporary file and hands it over afterwards (a
second copy, in another directory). Here python-multipart's low-level ``MultipartParser`` is
fed the body chunk by chunk; its callbacks queue small events that are then acted on — the
bytes of a file part go into a :class:`~sluiceway.transfer.upload.PartialFile` beside their
destination, so memory stays one chunk plus one write buffer for any size.

The form:

* file fields (any name, one or more): each saved under ``<path>/<filename>``, where the
  filename is that of the part (a relative path such as ``dir/a.txt`` is accepted; it meets the
  same rules as a URL path);
* an optional text field ``path``: the directory (relative to the root) the files go to. It
  must come *before* the files — the body is a stream, and the files are already on their way
  to disk when it is read;
* any other text field is ignored (its value is not even kept in memory).

All or nothing: the files become visible only after the whole body has arrived and parsed;
if anything fails (a part too large, a bad name, a conflict, a disconnect, a malformed body)
no file of the request stays behind (except that a file which replaced another, with
``overwrite``, cannot be put back).

>>> boundary_of("multipart/form-data; boundary=----x")
b'----x'
>>> from starlette.responses import JSONResponse
>>> async def upload(request):
...     boundary = boundary_of(request.headers.get("content-type", ""))
...     saved = await save_multipart(request.stream(), boundary, Path("files"), max_bytes=2**30)
...     return JSONResponse([item.stored.sha256 for item in saved])
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from sluiceway.transfer.paths import resolve_within
from sluiceway.transfer.upload import PartialFile, StoredFile, UploadTooLarge

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

#: Most file parts in one request.
MAX_FILES = 100
#: Longest accepted value of the ``path`` field.
MAX_PATH_FIELD = 4096
#: What the multipart framing (boundaries, part headers, small fields) may add to the files'
#: own bytes: the raw body limit is ``max_bytes + FRAMING_ALLOWANCE``.
FRAMING_ALLOWANCE = 1024 * 1024


class FormError(ValueError):
    """A request that is not a usable upload form; ``status`` is 400 or 415."""

    def __init__(self, code: str, detail: str, status: int = 400) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.status = status


@dataclass(frozen=True, slots=True)
class UploadedFile:
    """One file of a form upload: the form field it came in and where it was stored."""

    field: str
    stored: StoredFile


def boundary_of(content_type: str) -> bytes:
    """The boundary of a ``multipart/form-data`` Content-Type; :class:`FormError` (415) for
    another media type, (400) when the boundary is missing or unusable."""
    media_type, params = parse_options_header(content_type)
    if media_type != b"multipart/form-data":
        raise FormError("unsupported_media_type", "expected multipart/form-data", 415)
    boundary = params.get(b"boundary", b"")
    if not boundary:
        raise FormError("missing_boundary", "the Content-Type has no boundary parameter")
    if len(boundary) > 70 or any(byte < 0x20 or byte > 0x7E for byte in boundary):
        raise FormError("invalid_boundary", "the boundary must be 1-70 printable characters")
    return boundary


#: What the parser reported: a part's headers (a dict), a piece of its data (bytes), its end.
_Event = dict[bytes, bytes] | bytes | None


class _Events:
    """The parser's callbacks, recorded as a list of events to act on after each chunk."""

    def __init__(self) -> None:
        self.items: list[_Event] = []
        self.ended = False
        self._field = bytearray()
        self._value = bytearray()
        self._headers: dict[bytes, bytes] = {}

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda d, s, e: self._field.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self._value.extend(d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": lambda: self.items.append(self._headers),
            "on_part_data": lambda d, s, e: self.items.append(d[s:e]),
            "on_part_end": lambda: self.items.append(None),
            "on_end": self._end,
        }

    def _part_begin(self) -> None:
        self._headers = {}

    def _header_end(self) -> None:
        self._headers[bytes(self._field).strip().lower()] = bytes(self._value).strip()
        self._field.clear()
        self._value.clear()

    def _end(self) -> None:
        self.ended = True


class _FormReceiver:
    """Acts on the events: which part is open, the ``path`` field, the files so far."""

    def __init__(
        self,
        root: Path,
        max_bytes: int,
        overwrite: bool,
        authorize: Callable[[str, Path], None] | None = None,
        tag: str | None = None,
    ) -> None:
        self.root = root
        self.tag = tag
        self.authorize = authorize
        self.max_bytes = max_bytes
        self.overwrite = overwrite
        self.directory = ""
        self.file_bytes = 0
        self.files: list[tuple[str, PartialFile]] = []
        self._targets: set[Path] = set()
        self._current: PartialFile | None = None
        self._path_value: bytearray | None = None

    async def on_part(self, headers: dict[bytes, bytes]) -> None:
        disposition, params = parse_options_header(headers.get(b"content-disposition", b""))
        if disposition != b"form-data" or b"name" not in params:
            raise FormError("invalid_multipart", "a part has no form-data Content-Disposition")
        name = _text(params[b"name"], "invalid_field", "a field name is not UTF-8")
        if b"filename" not in params:
            if name == "path":
                if self.files:
                    raise FormError("invalid_form", "the path field must come before the files")
                self._path_value = bytearray()
            return
        filename = _text(params[b"filename"], "invalid_filename", "a filename is not UTF-8")
        if not filename:
            raise FormError("missing_filename", f"the file field {name!r} has an empty filename")
        if len(self.files) >= MAX_FILES:
            raise FormError("too_many_files", f"at most {MAX_FILES} files per request")
        relative = f"{self.directory}/{filename}" if self.directory else filename
        target = resolve_within(self.root, relative)
        if self.authorize is not None:
            self.authorize(relative, target)
        if target in self._targets:
            raise FormError("duplicate_path", f"two files of the request go to {relative!r}")
        self._targets.add(target)
        self._current = await PartialFile.create(target, overwrite=self.overwrite, tag=self.tag)
        self.files.append((name, self._current))

    async def on_data(self, data: bytes) -> None:
        if self._current is not None:
            self.file_bytes += len(data)
            if self.file_bytes > self.max_bytes:
                raise UploadTooLarge(self.max_bytes)
            await self._current.write(data)
        elif self._path_value is not None:
            self._path_value += data
            if len(self._path_value) > MAX_PATH_FIELD:
                raise FormError("invalid_path", f"the path field exceeds {MAX_PATH_FIELD} bytes")

    async def on_end(self) -> None:
        if self._current is not None:
            await self._current.finish()  # one file descriptor open at a time
            self._current = None
        elif self._path_value is not None:
            value = _text(bytes(self._path_value), "invalid_path", "the path is not UTF-8")
            self.directory = value.rstrip("/")  # a leading one is refused, as in URLs
            if self.directory:
                resolve_within(self.root, self.directory)  # refuse a bad one before any file
            self._path_value = None

    def roll_back(self) -> None:
        """Remove every file of the request, in reverse order (so that directories made for
        the first file are empty when its turn comes)."""
        for _, partial in reversed(self.files):
            partial.roll_back()


def _text(raw: bytes, code: str, detail: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FormError(code, detail) from None


async def save_multipart(
    chunks: AsyncIterable[bytes],
    boundary: bytes,
    root: Path,
    *,
    max_bytes: int,
    overwrite: bool = False,
    authorize: Callable[[str, Path], None] | None = None,
    tag: str | None = None,
) -> list[UploadedFile]:
    """Receive a ``multipart/form-data`` body into files under ``root`` (see the module doc).

    ``max_bytes`` bounds the files' bytes together; the raw body may add
    :data:`FRAMING_ALLOWANCE`. Raises :class:`FormError`, :class:`UploadTooLarge`,
    :class:`~sluiceway.transfer.paths.UnsafePath`, ``FileExistsError``,
    :class:`~sluiceway.transfer.upload.PathConflict`, or what the stream raises.

    ``authorize(relative_path, resolved_path)`` is called before each file is created (the
    path as named, and where it leads once symlinks are resolved); what it raises ends the
    upload (every file of the request removed). ``tag``: the writing process's, in the
    temporary names (see :meth:`~sluiceway.transfer.upload.PartialFile.create`).
    """
    events = _Events()
    parser = MultipartParser(boundary, events.callbacks())
    receiver = _FormReceiver(root, max_bytes, overwrite, authorize, tag)
    body_limit = max_bytes + FRAMING_ALLOWANCE
    received = 0
    try:
        async for chunk in chunks:
            received += len(chunk)
            if received > body_limit:
                raise UploadTooLarge(max_bytes)
            try:
                parser.write(chunk)
            except MultipartParseError as exc:
                raise FormError("invalid_multipart", f"malformed multipart body: {exc}") from None
            await _dispatch(events, receiver)
        if not events.ended:
            raise FormError("invalid_multipart", "the body ended before the closing boundary")
        if not receiver.files:
            raise FormError("no_files", "the form has no file field")
        return [UploadedFile(field, await partial.commit()) for field, partial in receiver.files]
    except BaseException:
        receiver.roll_back()
        raise


async def _dispatch(events: _Events, receiver: _FormReceiver) -> None:
    items, events.items = events.items, []
    for event in items:
        if isinstance(event, bytes):
            await receiver.on_data(event)
        elif event is None:
            await receiver.on_end()
        else:
            await receiver.on_part(event)
