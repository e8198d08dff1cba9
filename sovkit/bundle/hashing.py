"""Streaming sha256 (optionally copying while hashing), in parallel across cores.

Memory is constant whatever the file size: each thread owns two fixed,
page-aligned buffers. One file is hashed by one worker (sha256 is
sequential); many files spread over a process pool. A copy is written with
``O_DIRECT`` from the very buffer that was hashed, the write of one chunk
overlapping the read and hash of the next: no page-cache copy, nothing left to
flush, and the digest is of the bytes written. Where the file system has no
``O_DIRECT``, the kernel copies (``copy_file_range``, else ``sendfile``, else
read/write) in a helper thread while the calling thread hashes what landed in
the destination. Workers add the bytes they have done to a shared counter,
which the caller polls for a progress bar.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import mmap
import multiprocessing
import os
import queue
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
    errno: int | None = None  # so callers can tell "disk full" from "bad input"


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


def _buffers() -> tuple[mmap.mmap, mmap.mmap]:
    """Two chunk buffers per thread, allocated once (fresh 4 MiB buffers per file cost page faults), and
    page-aligned (anonymous maps), as ``O_DIRECT`` writes require."""
    bufs: tuple[mmap.mmap, mmap.mmap] | None = getattr(_local, "bufs", None)
    if bufs is None:
        bufs = (mmap.mmap(-1, CHUNK), mmap.mmap(-1, CHUNK))
        _local.bufs = bufs
    return bufs


def _writer() -> ThreadPoolExecutor:
    """One writer thread per calling thread, kept for the life of the process (not one per file)."""
    return _thread("writer")


def _copier() -> ThreadPoolExecutor:
    """One copying thread per calling thread, kept for the life of the process."""
    return _thread("copier")


def _thread(role: str) -> ThreadPoolExecutor:
    pool: ThreadPoolExecutor | None = getattr(_local, role, None)
    if pool is None:
        pool = ThreadPoolExecutor(1, thread_name_prefix=f"sovkit-blob-{role}")
        setattr(_local, role, pool)
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
            if job.dst is None:
                size, digest = digest_stream(src, None, on_bytes or _count)
            else:
                fd, direct = _create(job.dst)
                size, digest = _copy(src.fileno(), fd, direct, on_bytes or _count)
                if durable:
                    os.fsync(fd)
        return Digest(job, size, digest)
    except OSError as exc:
        return Digest(job, -1, "", f"{exc.strerror or exc}", exc.errno)
    finally:
        if fd is not None:
            os.close(fd)


O_DIRECT: int = getattr(os, "O_DIRECT", 0)
ALIGN = 4096  # O_DIRECT wants block-aligned buffers, offsets and lengths; 4 KiB covers the usual block sizes


def _create(dst: str) -> tuple[int, bool]:
    """Create ``dst`` (never an existing file) for writing, with ``O_DIRECT`` where the file system has it."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL
    if O_DIRECT:
        try:
            return os.open(dst, flags | O_DIRECT, 0o644), True
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            # no O_DIRECT here (tmpfs on older kernels, some FUSE): Linux may have created the file already
            return os.open(dst, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644), False
    return os.open(dst, flags, 0o644), False


def _copy(src: int, dst: int, direct: bool, on_bytes: OnBytes) -> tuple[int, str]:
    """Copy ``src`` into the new ``dst``: size and sha256 of exactly the bytes written."""
    if direct:
        reported = 0

        def count(n: int) -> None:
            nonlocal reported
            reported += n
            on_bytes(n)

        try:
            return _direct_copy(src, dst, count)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            # the file system took O_DIRECT at open but refuses these writes (larger blocks): start over cached
            fcntl.fcntl(dst, fcntl.F_SETFL, fcntl.fcntl(dst, fcntl.F_GETFL) & ~O_DIRECT)
            os.ftruncate(dst, 0)
            os.lseek(src, 0, os.SEEK_SET)
            on_bytes(-reported)  # the progress goes back to where this file started
    return _copy_and_hash(src, dst, on_bytes)


def _fill(src: int, view: memoryview) -> int:
    """Read until ``view`` is full or the file ends: direct writes need whole chunks at aligned offsets."""
    got = 0
    while got < len(view):
        n = os.readv(src, [view[got:]])
        if not n:
            break
        got += n
    return got


def _pwrite_all(fd: int, data: memoryview, off: int) -> None:
    done = 0
    while done < len(data):
        done += os.pwrite(fd, data[done:], off + done)


def _direct_copy(src: int, dst: int, on_bytes: OnBytes) -> tuple[int, str]:
    """Read a chunk, hash it, and write that same buffer with ``O_DIRECT`` while the next chunk is read.

    The write bypasses the page cache: no kernel copy, no dirty pages to flush later, and a bundle of
    hundreds of GB does not push everything else out of memory. The last chunk is padded to the block
    size and the file truncated back to its length.
    """
    h = hashlib.sha256()
    bufs = _buffers()
    writer = _writer()
    pending: Future[None] | None = None
    size = k = 0
    try:
        while True:
            view = memoryview(bufs[k])
            n = _fill(src, view)
            if not n:
                break
            h.update(view[:n])
            padded = -(-n // ALIGN) * ALIGN
            view[n:padded] = bytes(padded - n)
            if pending is not None:
                pending.result()
            pending = writer.submit(_pwrite_all, dst, view[:padded], size)
            size += n
            on_bytes(n)
            k ^= 1
            if n < len(view):
                break
    finally:
        if pending is not None:
            pending.result()
    if size % ALIGN:
        os.ftruncate(dst, size)
    return size, h.hexdigest()


COPY_CHUNK = 16 << 20
# errnos by which a kernel copy primitive says "not between these two files": try the next one
_UNSUPPORTED = {errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL}


def _copy_file_range(src: int, dst: int, off: int) -> int:
    return os.copy_file_range(src, dst, COPY_CHUNK, off, off)


def _sendfile(src: int, dst: int, off: int) -> int:
    os.lseek(dst, off, os.SEEK_SET)  # sendfile writes at the destination's file position
    return os.sendfile(dst, src, off, COPY_CHUNK)


def _read_write(src: int, dst: int, off: int) -> int:
    view = memoryview(_buffers()[1])
    n = os.preadv(src, [view], off)
    done = 0
    while done < n:
        done += os.pwrite(dst, view[done:n], off + done)
    return n


_COPIERS: tuple[Callable[[int, int, int], int], ...] = tuple(
    f for f in (_copy_file_range, _sendfile, _read_write) if f is _read_write or hasattr(os, f.__name__[1:]))


def _kernel_copy(src: int, dst: int, copied: queue.SimpleQueue[int | OSError | None],
                 stop: threading.Event) -> None:
    """Copy ``src`` to ``dst`` chunk by chunk, posting each new end offset, then None (or the OSError)."""
    copiers = list(_COPIERS)
    off = 0
    try:
        while not stop.is_set():
            try:
                n = copiers[0](src, dst, off)
            except OSError as exc:
                if exc.errno in _UNSUPPORTED and len(copiers) > 1:
                    copiers.pop(0)  # a failed call copied nothing: retry the same offset with the next primitive
                    continue
                raise
            if not n:
                break
            off += n
            copied.put(off)
        copied.put(None)
    except OSError as exc:
        copied.put(exc)


def _copy_and_hash(src: int, dst: int, on_bytes: OnBytes) -> tuple[int, str]:
    """Copy ``src`` into the empty ``dst`` (opened read-write); sha256 and size of what landed in ``dst``."""
    h = hashlib.sha256()
    view = memoryview(_buffers()[0])
    copied: queue.SimpleQueue[int | OSError | None] = queue.SimpleQueue()
    stop = threading.Event()
    copier = _copier().submit(_kernel_copy, src, dst, copied, stop)
    off = 0
    try:
        while (end := copied.get()) is not None:
            if isinstance(end, OSError):
                raise end
            while off < end:
                n = os.preadv(dst, [view[:min(CHUNK, end - off)]], off)
                if not n:
                    raise OSError(errno.EIO, f"{n} bytes read back at offset {off} of the copy")
                h.update(view[:n])
                off += n
                on_bytes(n)
    finally:
        stop.set()
        copier.result()
    return off, h.hexdigest()


def _advise_sequential(f: BinaryIO) -> None:
    with contextlib.suppress(AttributeError, OSError):  # not on every platform
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)


def _init_worker(counter: Synchronized[int]) -> None:
    global _counter
    _counter = counter


def _work(job: Job, durable: bool) -> Digest:
    return digest_file(job, durable=durable)


def workers_for(n_jobs: int, copying: bool = False) -> int:
    """One worker per core; one more when copying, so a core is not idle while a worker waits on a write."""
    return max(1, min(n_jobs, (os.cpu_count() or 1) + (1 if copying else 0)))


def digest_many(jobs: Sequence[Job], on_bytes: OnBytes | None = None, workers: int | None = None,
                durable: bool = True) -> Iterator[Digest]:
    """Hash (and copy) ``jobs`` over a process pool; yields results as they finish.

    ``on_bytes`` gets the bytes done since its last call, a few times a second
    from a helper thread while workers run (single-file runs call it inline).
    """
    n = workers or workers_for(len(jobs), copying=any(job.dst is not None for job in jobs))
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
