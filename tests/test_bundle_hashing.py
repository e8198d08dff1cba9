"""Copy-while-hashing: the direct-I/O path, every kernel copy primitive and the fallbacks between them give the
same blob and digest.

``bundle create`` and ``bundle import`` write blobs with ``O_DIRECT`` from the
buffer they hash; where the file system refuses that, the kernel copies
(``copy_file_range``, else ``sendfile``, else read/write) and sovkit hashes
what landed in the destination. These tests run each path for real on files
of awkward sizes, force the fallbacks, and check that the digest describes the
destination's bytes.
"""

from __future__ import annotations

import errno
import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from sovkit.bundle import hashing
from sovkit.bundle.hashing import Job, digest_file

Copier = Callable[[int, int, int], int]
SMALL_CHUNK = 64 << 10
# empty, one byte, one short of a copy chunk, several chunks and a tail
SIZES = [0, 1, SMALL_CHUNK - 1, 5 * SMALL_CHUNK + 123]
CHAINS: dict[str, tuple[Copier, ...]] = {
    "copy_file_range": (hashing._copy_file_range,),
    "sendfile": (hashing._sendfile,),
    "read_write": (hashing._read_write,),
}


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hashing, "COPY_CHUNK", SMALL_CHUNK)


@pytest.fixture
def cached(monkeypatch: pytest.MonkeyPatch) -> None:
    """Take the page-cache path (as on a file system without O_DIRECT)."""
    monkeypatch.setattr(hashing, "O_DIRECT", 0)


def _source(path: Path, size: int) -> bytes:
    data = hashlib.shake_256(str(size).encode()).digest(size) if size else b""
    path.write_bytes(data)
    return data


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("chain", sorted(CHAINS))
@pytest.mark.usefixtures("cached")
def test_each_primitive_copies_and_hashes_exactly(chain: str, size: int, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hashing, "_COPIERS", CHAINS[chain])
    data = _source(tmp_path / "src", size)
    d = digest_file(Job(str(tmp_path / "src"), str(tmp_path / "dst")))
    assert d.error is None
    assert (d.size, d.sha256) == (size, hashlib.sha256(data).hexdigest())
    assert (tmp_path / "dst").read_bytes() == data


@pytest.mark.parametrize("code", [errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL])
@pytest.mark.usefixtures("cached")
def test_unsupported_primitive_falls_back_to_the_next(code: int, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def refuses(src: int, dst: int, off: int) -> int:
        calls.append(off)
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(hashing, "_COPIERS", (refuses, hashing._sendfile, hashing._read_write))
    data = _source(tmp_path / "src", 3 * SMALL_CHUNK)
    d = digest_file(Job(str(tmp_path / "src"), str(tmp_path / "dst")))
    assert d.error is None and d.sha256 == hashlib.sha256(data).hexdigest()
    assert calls == [0]  # asked once, then never again for this file
    assert (tmp_path / "dst").read_bytes() == data


@pytest.mark.usefixtures("cached")
def test_fallback_in_the_middle_of_a_file_resumes_at_the_same_offset(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []

    def stops_after_two_chunks(src: int, dst: int, off: int) -> int:
        seen.append(off)
        if off >= 2 * SMALL_CHUNK:
            raise OSError(errno.EXDEV, "cross-device")
        return hashing._copy_file_range(src, dst, off)

    monkeypatch.setattr(hashing, "_COPIERS", (stops_after_two_chunks, hashing._read_write))
    data = _source(tmp_path / "src", 4 * SMALL_CHUNK + 7)
    d = digest_file(Job(str(tmp_path / "src"), str(tmp_path / "dst")))
    assert d.sha256 == hashlib.sha256(data).hexdigest()
    assert seen == [0, SMALL_CHUNK, 2 * SMALL_CHUNK]
    assert (tmp_path / "dst").read_bytes() == data


@pytest.mark.usefixtures("cached")
def test_a_real_io_error_is_reported_not_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    failures: list[int] = []

    def fails(src: int, dst: int, off: int) -> int:
        if off and not failures:  # once, in the middle of the first file
            failures.append(off)
            raise OSError(errno.EIO, "Input/output error")
        return hashing._read_write(src, dst, off)

    monkeypatch.setattr(hashing, "_COPIERS", (fails, hashing._read_write))
    _source(tmp_path / "src", 3 * SMALL_CHUNK)
    d = digest_file(Job(str(tmp_path / "src"), str(tmp_path / "dst")))
    assert d.error == "Input/output error" and d.size == -1 and d.sha256 == ""
    # the copying thread is free again: the next file goes through
    data = _source(tmp_path / "src2", 10)
    assert digest_file(Job(str(tmp_path / "src2"), str(tmp_path / "dst2"))).sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.usefixtures("cached")
def test_digest_describes_the_bytes_that_landed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """If the copy differs from the source (a source rewritten mid-copy, a bad disk), the name follows the copy."""

    def flips_first_byte(src: int, dst: int, off: int) -> int:
        n = hashing._read_write(src, dst, off)
        if off == 0 and n:
            first = os.pread(dst, 1, 0)
            os.pwrite(dst, bytes([first[0] ^ 0xFF]), 0)
        return n

    monkeypatch.setattr(hashing, "_COPIERS", (flips_first_byte,))
    data = _source(tmp_path / "src", 2 * SMALL_CHUNK)
    d = digest_file(Job(str(tmp_path / "src"), str(tmp_path / "dst")))
    landed = (tmp_path / "dst").read_bytes()
    assert landed != data
    assert d.sha256 == hashlib.sha256(landed).hexdigest() != hashlib.sha256(data).hexdigest()


def test_copy_across_filesystems(tmp_path: Path) -> None:
    """tmpfs to the test's filesystem: whichever primitive the kernel accepts, the copy is exact."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on another filesystem than the test's tmp dir")
    src = shm / f"sovkit-test-{os.getpid()}"
    try:
        data = _source(src, 3 * SMALL_CHUNK + 1)
        d = digest_file(Job(str(src), str(tmp_path / "dst")))
    finally:
        src.unlink(missing_ok=True)
    assert d.sha256 == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "dst").read_bytes() == data


def test_destination_that_exists_is_never_overwritten(tmp_path: Path) -> None:
    _source(tmp_path / "src", 100)
    (tmp_path / "dst").write_bytes(b"keep me")
    d = digest_file(Job(str(tmp_path / "src"), str(tmp_path / "dst")))
    assert d.error is not None and "exists" in d.error
    assert (tmp_path / "dst").read_bytes() == b"keep me"


def _direct_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = hashing._direct_copy

    def spy(src: int, dst: int, on_bytes: hashing.OnBytes) -> tuple[int, str]:
        calls.append(dst)
        return real(src, dst, on_bytes)

    monkeypatch.setattr(hashing, "_direct_copy", spy)
    return calls


@pytest.mark.parametrize("size", [0, 1, hashing.ALIGN - 1, hashing.ALIGN, hashing.CHUNK,
                                  2 * hashing.CHUNK + hashing.ALIGN + 5])
def test_direct_io_writes_exactly_the_hashed_bytes(size: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not hashing.O_DIRECT:
        pytest.skip("no O_DIRECT on this platform")
    calls = _direct_calls(monkeypatch)
    data = _source(tmp_path / "src", size)
    d = digest_file(Job(str(tmp_path / "src"), str(tmp_path / "dst")))
    assert d.error is None and calls, "the direct path was not taken"
    assert (d.size, d.sha256) == (size, hashlib.sha256(data).hexdigest())
    assert (tmp_path / "dst").read_bytes() == data  # the padded tail was cut back


def test_direct_write_refused_starts_over_through_the_page_cache(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A file system that opens with O_DIRECT but refuses the writes (e.g. bigger blocks): same blob, cached."""
    if not hashing.O_DIRECT:
        pytest.skip("no O_DIRECT on this platform")
    refused: list[int] = []

    def refuse(fd: int, data: memoryview, off: int) -> None:
        refused.append(off)
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(hashing, "_pwrite_all", refuse)
    data = _source(tmp_path / "src", hashing.CHUNK + 77)
    progress: list[int] = []
    d = digest_file(Job(str(tmp_path / "src"), str(tmp_path / "dst")), progress.append)
    assert refused == [0]
    assert sum(progress) == len(data)  # the bytes of the abandoned direct attempt are taken back
    assert d.error is None and d.sha256 == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "dst").read_bytes() == data


def test_no_direct_io_at_open_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Like tmpfs on older kernels: open with O_DIRECT fails with EINVAL after creating the file."""
    if not hashing.O_DIRECT:
        pytest.skip("no O_DIRECT on this platform")
    real_open = os.open

    def open_without_direct(path: str, flags: int, mode: int = 0o777) -> int:
        if flags & hashing.O_DIRECT:
            os.close(real_open(path, flags & ~hashing.O_DIRECT, mode))
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, mode)

    monkeypatch.setattr(hashing.os, "open", open_without_direct)
    calls = _direct_calls(monkeypatch)
    data = _source(tmp_path / "src", 3 * SMALL_CHUNK + 9)
    d = digest_file(Job(str(tmp_path / "src"), str(tmp_path / "dst")))
    assert calls == [] and d.error is None and d.sha256 == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "dst").read_bytes() == data


def test_short_reads_are_gathered_into_whole_chunks(tmp_path: Path) -> None:
    """A source that returns odd-sized pieces (a FIFO here) still gives block-aligned direct writes."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    data = hashlib.shake_256(b"fifo").digest(hashing.CHUNK + 5000)

    def feed() -> None:
        with open(fifo, "wb", buffering=0) as w:
            for i in range(0, len(data), 12_345):
                w.write(data[i:i + 12_345])

    t = threading.Thread(target=feed)
    t.start()
    d = digest_file(Job(str(fifo), str(tmp_path / "dst")))
    t.join(timeout=30)
    assert d.error is None and (d.size, d.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert (tmp_path / "dst").read_bytes() == data


def test_copying_gets_one_worker_more_than_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hashing.os, "cpu_count", lambda: 2)
    assert hashing.workers_for(100) == 2
    assert hashing.workers_for(100, copying=True) == 3
    assert hashing.workers_for(2, copying=True) == 2  # never more workers than files
