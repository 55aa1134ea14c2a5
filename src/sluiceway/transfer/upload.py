"""Receiving a file: streamed to disk, hashed on the way, visible only once complete.

:class:`PartialFile` is one file being received. It writes to a hidden temporary name in the
target's own directory (``.<name>.upload-<tag>-<random>``, ``<tag>`` naming the process that
writes it: see :mod:`sluiceway.transfer.leftovers`), computes SHA-256 as the bytes go by, and
on :meth:`~PartialFile.commit` fsyncs, renames it into place (atomically: a reader sees the old
file or the whole new one, never a part) and fsyncs the directory. Until then nothing is
visible under the target name, and :meth:`~PartialFile.discard` — also run on any error, a
client that disconnects, or cancellation — removes the temporary file.

An existing file is never replaced unless asked (``overwrite=True``); without it the final
step is ``link()``, which fails if the name was taken meanwhile, so two uploads racing for one
name cannot clobber each other either. Memory per upload is one write buffer
(:data:`WRITE_BUFFER` bytes) whatever the file's size; writes and hashing run in a worker
thread. :func:`with_read_timeout` drops a body that stalls (:class:`UploadStalled`), so that a
client that stops sending mid-upload does not hold a file and a connection forever.

:func:`save_stream` is the whole thing for a raw body (``PUT``):

>>> from starlette.responses import JSONResponse
>>> from sluiceway.transfer.paths import resolve_within
>>> async def put(request):
...     target = resolve_within(Path("files"), request.path_params["name"])
...     stored = await save_stream(request.stream(), target, max_bytes=2**30)
...     return JSONResponse({"size": stored.size, "sha256": stored.sha256})
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import secrets
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread

#: Bytes gathered before one write to disk (fewer, larger writes; fewer thread hops).
WRITE_BUFFER = 1024 * 1024

# Filesystems without hard links answer link() with one of these; then fall back to a check
# and a rename (which loses only the no-clobber guarantee against a simultaneous upload).
_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS}


class UploadTooLarge(Exception):
    """The upload is larger than the limit (declared up front, or counted as it arrived)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the upload exceeds {limit} bytes")
        self.limit = limit


class PathConflict(Exception):
    """The target is a directory, or one of its parents is a file."""


class UploadStalled(Exception):
    """Nothing of the body arrived for ``timeout`` seconds (see :func:`with_read_timeout`)."""

    def __init__(self, timeout: float) -> None:
        super().__init__(f"no byte of the upload arrived for {timeout:g} s")
        self.timeout = timeout


class _TimedChunks:
    # A class, not an async generator: one left unfinished (the upload failed) needs no
    # finalizing.
    def __init__(self, chunks: AsyncIterable[bytes], timeout: float) -> None:
        self._chunks = aiter(chunks)
        self._timeout = timeout

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        try:
            async with asyncio.timeout(self._timeout):
                return await anext(self._chunks)
        except TimeoutError:
            raise UploadStalled(self._timeout) from None


def with_read_timeout(chunks: AsyncIterable[bytes], timeout: float) -> AsyncIterator[bytes]:
    """``chunks`` (a request's body), raising :class:`UploadStalled` when the next one takes
    more than ``timeout`` seconds to come: an idle bound, not a bound on the whole upload
    (a large file over a slow link takes as long as it takes, as long as it keeps coming)."""
    return _TimedChunks(chunks, timeout)


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A file received and in place."""

    path: Path
    size: int
    sha256: str
    #: False when an existing file was replaced (``overwrite``).
    created: bool


def check_declared_length(headers: Mapping[str, str], limit: int) -> None:
    """:class:`UploadTooLarge` when ``Content-Length`` already says the body is too large,
    before a byte of it is read."""
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise UploadTooLarge(limit)


def _temporary_name(target: Path, tag: str | None) -> Path:
    stem = target.name.encode()[:100].decode(errors="ignore")  # stays under NAME_MAX
    owner = f"{tag}-" if tag else ""
    return target.with_name(f".{stem}.upload-{owner}{secrets.token_hex(8)}")


def _make_parents(directory: Path) -> list[Path]:
    """``mkdir -p``, returning the directories it created (outermost first)."""
    missing: list[Path] = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    created: list[Path] = []
    try:
        for path in reversed(missing):
            try:
                path.mkdir()
            except FileExistsError:
                if not path.is_dir():
                    raise
                continue  # a simultaneous upload made it: not ours to remove
            created.append(path)
    except (FileExistsError, NotADirectoryError):
        _remove_empty(created)
        raise PathConflict("a parent of the path is a file, not a directory") from None
    if not directory.is_dir():
        raise PathConflict("a parent of the path is a file, not a directory")
    return created


def _remove_empty(directories: list[Path]) -> None:
    """Remove the directories an upload created, innermost first, while they are empty (one
    that another upload is using is not empty, and stays)."""
    for directory in reversed(directories):
        try:
            directory.rmdir()
        except OSError:
            return


def _prepare(target: Path, overwrite: bool, tag: str | None) -> tuple[Path, int, list[Path]]:
    if target.is_dir():
        raise PathConflict(f"{target.name!r} is a directory")
    if not overwrite and target.exists():
        raise FileExistsError(errno.EEXIST, "the file exists", str(target))
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _attempt in range(3):  # a failed upload may remove an empty directory meanwhile
        created = _make_parents(target.parent)
        temporary = _temporary_name(target, tag)
        try:
            return temporary, os.open(temporary, flags, 0o644), created
        except FileNotFoundError:
            continue
    raise FileNotFoundError(errno.ENOENT, "the directory keeps disappearing", str(target.parent))


def _write_all(fd: int, data: bytes, hasher: hashlib._Hash) -> None:
    hasher.update(data)  # releases the GIL for large buffers
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)  # makes the rename itself durable
    finally:
        os.close(fd)


def _publish(temporary: Path, target: Path, overwrite: bool) -> bool:
    """Move the finished temporary file to ``target``; True if the name was new."""
    if overwrite:
        created = not target.exists()
        try:
            os.replace(temporary, target)
        except IsADirectoryError:
            raise PathConflict(f"{target.name!r} is a directory") from None
        return created
    try:
        os.link(temporary, target)
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
        if target.exists():
            raise FileExistsError(errno.EEXIST, "the file exists", str(target)) from None
        os.replace(temporary, target)
        return True
    os.unlink(temporary)
    return True


class PartialFile:
    """One file being received (see the module doc). Use as an async context manager, or call
    :meth:`discard` yourself when :meth:`commit` was not reached."""

    def __init__(
        self, target: Path, temporary: Path, fd: int, overwrite: bool, created_dirs: list[Path]
    ) -> None:
        self.target = target
        self.temporary = temporary
        self.overwrite = overwrite
        self.created_dirs = created_dirs
        self.size = 0
        self._fd: int | None = fd
        self._hasher = hashlib.sha256()
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._stored: StoredFile | None = None
        self._removed = False

    @classmethod
    async def create(
        cls, target: Path, *, overwrite: bool = False, tag: str | None = None
    ) -> PartialFile:
        """Start receiving ``target`` (creating its directories). Raises ``FileExistsError``
        (it exists and ``overwrite`` is false) or :class:`PathConflict`. ``tag``: the writing
        process's (:class:`~sluiceway.transfer.leftovers.UploadOwner`), so that its file is
        removed at the next start should the process die; None: an untagged name, which no
        cleanup ever touches."""
        temporary, fd, created_dirs = await anyio.to_thread.run_sync(
            _prepare, target, overwrite, tag
        )
        return cls(target, temporary, fd, overwrite, created_dirs)

    async def __aenter__(self) -> PartialFile:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.discard()

    async def write(self, data: bytes) -> None:
        """Append ``data``; it reaches the disk in :data:`WRITE_BUFFER`-sized writes."""
        self.size += len(data)
        self._buffer.append(data)
        self._buffered += len(data)
        if self._buffered >= WRITE_BUFFER:
            await self._flush()

    async def _flush(self) -> None:
        if not self._buffered:
            return
        data = b"".join(self._buffer)
        self._buffer.clear()
        self._buffered = 0
        assert self._fd is not None
        # Not abandoned on cancellation: the thread finishes before the fd can be closed.
        await anyio.to_thread.run_sync(_write_all, self._fd, data, self._hasher)

    async def finish(self) -> None:
        """Write what is buffered, fsync and close; the name stays temporary until commit."""
        if self._fd is None:
            return
        await self._flush()
        fd = self._fd
        await anyio.to_thread.run_sync(os.fsync, fd)
        self._fd = None
        os.close(fd)

    async def commit(self) -> StoredFile:
        """Finish, then make the file visible under its target name (see the module doc)."""
        await self.finish()
        created = await anyio.to_thread.run_sync(
            _publish, self.temporary, self.target, self.overwrite
        )
        self._stored = StoredFile(self.target, self.size, self._hasher.hexdigest(), created)
        await anyio.to_thread.run_sync(_sync_directory, self.target.parent)
        return self._stored

    def discard(self) -> None:
        """Close and remove the temporary file (unless committed) and the directories made for
        it (if empty). Idempotent, synchronous: it also runs in a cancelled task's cleanup."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
        if self._stored is None and not self._removed:
            self._removed = True
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.temporary)
            _remove_empty(self.created_dirs)

    def roll_back(self) -> None:
        """Undo a commit that created a new name (a replaced file cannot be restored), then
        :meth:`discard`."""
        if self._stored is not None and self._stored.created:
            self.target.unlink(missing_ok=True)
            self._stored = None
        self.discard()


async def save_stream(
    chunks: AsyncIterable[bytes],
    target: Path,
    *,
    max_bytes: int,
    overwrite: bool = False,
    tag: str | None = None,
) -> StoredFile:
    """Receive ``chunks`` (e.g. ``request.stream()``) as the file ``target`` (``tag``: see
    :meth:`PartialFile.create`).

    Raises :class:`UploadTooLarge` past ``max_bytes``, ``FileExistsError``,
    :class:`PathConflict`, and whatever the stream raises (a disconnect, a stall); in every
    such case nothing is left on disk.
    """
    async with await PartialFile.create(target, overwrite=overwrite, tag=tag) as partial:
        async for chunk in chunks:
            if partial.size + len(chunk) > max_bytes:
                raise UploadTooLarge(max_bytes)
            await partial.write(chunk)
        return await partial.commit()
