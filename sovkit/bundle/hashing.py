"""Streaming sha256 (optionally copying while hashing), in parallel across cores.

Memory is constant whatever the file size: each worker owns two fixed
buffers. One file is hashed by one worker (sha256 is sequential); many files
spread over a process pool. When copying, the write of one chunk overlaps the
read and hash of the next (both release the GIL). Workers add the bytes they
have done to a shared counter, which the caller polls for a progress bar.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import BinaryIO, Protocol

CHUNK = 4 << 20
INLINE_BELOW = 64 << 20
_counter: Synchronized[int] | None = None

OnBytes = Callable[[int], None]


class Readable(Protocol):
    def readinto(self, buffer: bytearray | memoryview, /) -> int | None: ...


@dataclass(frozen=True)
class Job:
    """Hash ``src``; when ``dst`` is set, also copy it there (created exclusively, fsynced)."""

    src: str
    dst: str | None = None
    key: str = ""


@dataclass(frozen=True)
class Digest:
    job: Job
    size: int
    sha256: str
    error: str | None = None


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        n = os.write(fd, data)
        data = data[n:]


_local = threading.local()


def _reset_after_fork() -> None:
    """A forked worker inherits the writer executor but not its thread: start afresh."""
    global _local
    _local = threading.local()


os.register_at_fork(after_in_child=_reset_after_fork)


def _buffers() -> tuple[bytearray, bytearray]:
    """Two chunk buffers per thread, allocated once: fresh 4 MiB buffers per file cost page faults."""
    bufs: tuple[bytearray, bytearray] | None = getattr(_local, "bufs", None)
    if bufs is None:
        bufs = (bytearray(CHUNK), bytearray(CHUNK))
        _local.bufs = bufs
    return bufs


def _writer() -> ThreadPoolExecutor:
    """One writer thread per calling thread, kept for the life of the process (not one per file)."""
    pool: ThreadPoolExecutor | None = getattr(_local, "writer", None)
    if pool is None:
        pool = ThreadPoolExecutor(1, thread_name_prefix="sovkit-blob-writer")
        _local.writer = pool
    return pool


def digest_stream(reader: Readable, dst_fd: int | None = None, on_bytes: OnBytes | None = None,
                  limit: int | None = None) -> tuple[int, str]:
    """sha256 and size of everything ``reader`` yields (up to ``limit`` bytes), copying to ``dst_fd``."""
    h = hashlib.sha256()
    bufs = _buffers()
    size = 0
    k = 0
    pending: Future[None] | None = None
    writer = _writer() if dst_fd is not None else None
    try:
        while limit is None or size < limit:
            buf = bufs[k]
            want = CHUNK if limit is None else min(CHUNK, limit - size)
            view = memoryview(buf)[:want]
            n = reader.readinto(view)
            if not n:
                break
            chunk = view[:n]
            h.update(chunk)
            size += n
            if writer is not None and dst_fd is not None:
                if pending is not None:
                    pending.result()
                pending = writer.submit(_write_all, dst_fd, chunk)
            if on_bytes is not None:
                on_bytes(n)
            k ^= 1
    finally:
        if pending is not None:
            pending.result()
    return size, h.hexdigest()


def _count(n: int) -> None:
    if _counter is not None:
        with _counter.get_lock():
            _counter.value += n


def digest_file(job: Job, on_bytes: OnBytes | None = None, durable: bool = True) -> Digest:
    """Hash (and copy) one file. I/O errors come back in ``Digest.error``, never as exceptions."""
    fd: int | None = None
    try:
        with open(job.src, "rb", buffering=0) as src:
            _advise_sequential(src)
            if job.dst is not None:
                fd = os.open(job.dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            size, digest = digest_stream(src, fd, on_bytes or _count)
            if fd is not None and durable:
                os.fsync(fd)
        return Digest(job, size, digest)
    except OSError as exc:
        return Digest(job, -1, "", f"{exc.strerror or exc}")
    finally:
        if fd is not None:
            os.close(fd)


def _advise_sequential(f: BinaryIO) -> None:
    with contextlib.suppress(AttributeError, OSError):  # not on every platform
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)


def _init_worker(counter: Synchronized[int]) -> None:
    global _counter
    _counter = counter


def _work(job: Job, durable: bool) -> Digest:
    return digest_file(job, durable=durable)


def workers_for(n_jobs: int) -> int:
    return max(1, min(n_jobs, os.cpu_count() or 1))


def digest_many(jobs: Sequence[Job], on_bytes: OnBytes | None = None, workers: int | None = None,
                durable: bool = True) -> Iterator[Digest]:
    """Hash (and copy) ``jobs`` over a process pool; yields results as they finish.

    ``on_bytes`` gets the bytes done since its last call, a few times a second
    from a helper thread while workers run (single-file runs call it inline).
    """
    n = workers or workers_for(len(jobs))
    if workers is None and _total(jobs) < INLINE_BELOW:
        n = 1  # starting a pool costs more than hashing a few MiB
    if n <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield digest_file(job, on_bytes, durable)
        return
    # fork: workers start in milliseconds and do not re-import the CLI (spawn/forkserver re-run __main__'s
    # imports in each worker). Workers touch only os/hashlib, never locks another thread may hold.
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    counter: Synchronized[int] = ctx.Value("q", 0)
    stop = threading.Event()
    poller = threading.Thread(target=_poll, args=(counter, on_bytes, stop), daemon=True) if on_bytes else None
    with ProcessPoolExecutor(n, mp_context=ctx, initializer=_init_worker, initargs=(counter,)) as pool:
        if poller is not None:
            poller.start()
        try:
            futures = [pool.submit(_work, job, durable) for job in jobs]
            for fut in as_completed(futures):
                yield fut.result()
        finally:
            stop.set()
            if poller is not None:
                poller.join()
    if on_bytes is not None:
        on_bytes(_take(counter))


def _total(jobs: Sequence[Job]) -> int:
    total = 0
    for job in jobs:
        with contextlib.suppress(OSError):
            total += os.stat(job.src).st_size
    return total


def _take(counter: Synchronized[int]) -> int:
    with counter.get_lock():
        n = counter.value
        counter.value = 0
    return n


def _poll(counter: Synchronized[int], on_bytes: OnBytes | None, stop: threading.Event) -> None:
    while not stop.wait(0.2):
        n = _take(counter)
        if n and on_bytes is not None:
            on_bytes(n)


def sha256_path(path: Path) -> str:
    with open(path, "rb", buffering=0) as f:
        return digest_stream(f)[1]
