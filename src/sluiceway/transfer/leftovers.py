"""Temporary upload files of processes that died, found and removed at the next start.

An upload writes to a hidden temporary name beside its target and removes it on every
failure it sees (:mod:`sluiceway.transfer.upload`); only a process that dies (SIGKILL, the
OOM killer, a power cut) leaves one behind. Its name carries the writing process's *tag*:
``.<name>.upload-<tag>-<random>``.

Which leftovers are dead: a process that writes uploads under a directory holds an exclusive
``flock`` on a lock file of its own, ``<root>/.sluiceway-uploads/<tag>.lock``, for as long as
it lives (:class:`UploadOwner`). The kernel releases that lock when the process dies, however
it dies. So :func:`remove_leftovers` removes a temporary file when its tag's lock can be
taken, or its lock file is gone (a live owner keeps it until it stops); while the lock is
held the file is a live sibling's upload (another worker on the same directory) and stays.

Why not the pid in the name, or the file's age: pids are reused (a restarted container is
pid 1 again) and belong to a namespace (two containers sharing a volume each count their
own), so "no process has this pid" may be a live sibling; and an upload's file is not written
continuously (writes are buffered, and a form's first files wait, complete, while the later
ones arrive), so an old modification time does not mean a dead upload either.

The lock file is made under another name and renamed into place only once locked, so a
cleaner never finds a live process's lock file unlocked. Lock files are hidden names, which
the file routes never serve nor let anyone upload.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path

import anyio.to_thread

logger = logging.getLogger("sluiceway.transfer")

#: Where the lock files live, under the uploads' root.
LOCK_DIR = ".sluiceway-uploads"
#: A tagged temporary name (see :func:`sluiceway.transfer.upload.PartialFile.create`).
_TAGGED = re.compile(r"^\..*\.upload-([0-9a-f]{16})-[0-9a-f]{16}$", re.DOTALL)
_LOCK = re.compile(r"^([0-9a-f]{16})\.lock$")
_STAGING = ".lock.new"
#: A lock file still under its staging name after this long was left by a process that
#: died while claiming (it is renamed within microseconds).
STAGING_STALE_AFTER = 60.0


class UploadOwner:
    """This process's tag for the temporary files it writes under ``root``, claimed on first
    use; and the removal of dead processes' leftovers.

    >>> owner = UploadOwner(Path("files"))                        # doctest: +SKIP
    >>> await save_stream(body, target, max_bytes=..., tag=await owner.tag())  # doctest: +SKIP
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._tag: str | None = None
        self._fd: int | None = None
        self._failed = False
        self._guard = threading.Lock()
        self._stop = threading.Event()

    async def tag(self) -> str | None:
        """This process's tag (its lock taken on first use); None where no lock can be made
        (a read-only directory): uploads then use untagged names, which no cleanup touches."""
        if self._tag is not None or self._failed:
            return self._tag
        return await anyio.to_thread.run_sync(self._claim)

    def _claim(self) -> str | None:
        with self._guard:
            if self._tag is None and not self._failed:
                try:
                    self._tag, self._fd = claim(self.root)
                except OSError as exc:
                    self._failed = True
                    logger.warning(
                        "uploads under %s cannot take a lock (%s): a killed process's "
                        "temporary files will not be removed at the next start",
                        self.root,
                        exc,
                    )
            return self._tag

    async def remove_leftovers(self) -> int:
        """Remove the temporary files of processes that died (see the module doc), in a
        worker thread; how many. Stops early when :meth:`release` is called."""
        if not self.root.is_dir():
            return 0
        try:
            removed = await anyio.to_thread.run_sync(
                remove_leftovers, self.root, self._tag, self._stop
            )
        except OSError as exc:  # housekeeping: it never stops the server
            logger.warning("could not look for leftover uploads under %s: %s", self.root, exc)
            return 0
        if removed:
            logger.warning("removed %d temporary upload file(s) left by stopped processes", removed)
        return removed

    def release(self) -> None:
        """Stop a cleanup under way, and give the tag up (this process writes no more)."""
        self._stop.set()
        with self._guard:
            if self._fd is not None and self._tag is not None:
                with contextlib.suppress(OSError):
                    os.unlink(self.root / LOCK_DIR / f"{self._tag}.lock")
                os.close(self._fd)  # after the unlink: the file is never seen unlocked
                self._fd = None
            self._failed = True  # no new claim while shutting down


def claim(root: Path) -> tuple[str, int]:
    """A new tag and the file descriptor holding its lock (keep it open for as long as the
    process writes uploads under ``root``). Raises OSError."""
    directory = root / LOCK_DIR
    directory.mkdir(parents=True, exist_ok=True)
    tag = secrets.token_hex(8)
    staging = directory / f"{tag}{_STAGING}"
    fd = os.open(staging, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(staging, directory / f"{tag}.lock")
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(staging)
        raise
    return tag, fd


def held(lock: Path) -> bool:
    """Whether a live process holds ``lock``. A missing lock file: nobody does. Unreadable:
    assumed held (its files stay)."""
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # BlockingIOError: its owner lives
        return True
    finally:
        os.close(fd)  # releases the lock if we took it: its owner is gone for good
    return False


def remove_leftovers(
    root: Path, own_tag: str | None = None, stop: threading.Event | None = None
) -> int:
    """Remove the tagged temporary files under ``root`` whose process is dead, then the lock
    files of dead processes; returns how many temporary files were removed. Blocking (a walk
    of the whole tree): run it in a thread."""
    locks = root / LOCK_DIR
    alive: dict[str, bool] = {}

    def is_alive(tag: str) -> bool:
        if tag not in alive:
            alive[tag] = tag == own_tag or held(locks / f"{tag}.lock")
        return alive[tag]

    removed = 0
    for directory, subdirectories, names in os.walk(root):  # symlinks are not followed
        if stop is not None and stop.is_set():
            return removed
        if directory == str(root):
            subdirectories[:] = [name for name in subdirectories if name != LOCK_DIR]
        for name in names:
            found = _TAGGED.match(name)
            if found is not None and not is_alive(found.group(1)):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(directory, name))
                    removed += 1
    _remove_dead_locks(locks, is_alive)
    return removed


def _remove_dead_locks(locks: Path, is_alive: Callable[[str], bool]) -> None:
    try:
        names = os.listdir(locks)
    except OSError:
        return
    now = time.time()
    for name in names:
        path = locks / name
        found = _LOCK.match(name)
        with contextlib.suppress(OSError):
            if found is not None:
                dead = not is_alive(found.group(1))
            else:
                dead = name.endswith(_STAGING) and now - path.stat().st_mtime > STAGING_STALE_AFTER
            if dead:
                path.unlink()


__all__ = ["LOCK_DIR", "UploadOwner", "claim", "held", "remove_leftovers"]
