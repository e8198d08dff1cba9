"""Exclusive advisory locks on a lock file (``flock``), for read-modify-write sections and one-at-a-time runs.

The kernel drops an ``flock`` when its holder dies, so a killed process
never leaves a stale lock behind; a forked child (a hashing pool worker)
closes its copy of the lock at once, so it cannot keep its parent's lock
alive after the parent is killed. With ``remove``, the lock file is deleted
on release (so it leaves no trace in a directory it guards); a waiter that
locked the file just before it was deleted notices and locks the new one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

_held: set[int] = set()


def _drop_in_child() -> None:
    for fd in _held:
        with contextlib.suppress(OSError):
            os.close(fd)  # only this process's reference: the parent keeps its lock
    _held.clear()


os.register_at_fork(after_in_child=_drop_in_child)


class Held(Exception):
    """Raised by a non-waiting :func:`exclusive` when another process holds the lock."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path} is locked by {holder or 'another process'}")
        self.path = path
        self.holder = holder


@contextlib.contextmanager
def exclusive(lock_file: Path, *, wait: bool = True, remove: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_file`` (created if missing) for the ``with`` block.

    ``wait=False`` raises :class:`Held` at once, naming the holder's pid as it wrote it.
    """
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
            os.close(fd)
            raise Held(lock_file, holder) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock_file).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder removed this file after we opened it: lock the new one
    _held.add(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)
        yield
    finally:
        _held.discard(fd)
        if remove:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock_file)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
