"""Volumes for removable media: split a bundle into fixed-size parts and join them back.

The bundle's files (envelope, readable manifest, blobs) are concatenated in a
fixed order and cut into parts of ``part_size`` bytes (``part-0001.svb`` …).
``volumes.json`` lists every part and every file with its size and sha256, so
joining needs no archive format: each file is read back from the byte ranges
of the parts that hold it, hashed while written, and renamed into place.

Joining resumes: a verified-ledger in the output records each file once it is
whole and right; a later run (after a crash, or with the next disk's parts)
skips those without hashing them again. Files whose parts are not there yet
wait for the next run. The index itself is untrusted: names must match the
bundle layout, and the joined bundle is verified against its signature anyway.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from sovkit.bundle.errors import BundleIncomplete, BundleInvalid
from sovkit.bundle.events import BundleEvent, OnEvent, ignore
from sovkit.bundle.hashing import digest_stream
from sovkit.bundle.ledger import Ledger
from sovkit.bundle.manifest import BLOB_DIR, ENVELOPE, READABLE, Manifest, parse_manifest
from sovkit.errors import BundleError
from sovkit.fsutil import fsync_dir

INDEX = "volumes.json"
LEDGER = ".join-ledger.jsonl"
BOOTSTRAP = "sovkit-bootstrap.py"  # stdlib-only first install of sovkit from the parts (see bootstrap.py)
TMP = ".join-tmp"
FORMAT: Literal["sovkit.dev/bundle-volumes/v1"] = "sovkit.dev/bundle-volumes/v1"
_FILE_RE = r"^(manifest\.dsse\.json|manifest\.json|blobs/sha256/[0-9a-f]{64})$"
_PART_RE = r"^part-[0-9]{4}\.svb$"
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B?)?\s*$", re.IGNORECASE)


class VolumeFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Annotated[str, StringConstraints(pattern=_FILE_RE)]
    size: Annotated[int, Field(ge=0)]
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class VolumePart(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Annotated[str, StringConstraints(pattern=_PART_RE)]
    size: Annotated[int, Field(ge=0)]
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class VolumeIndex(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    format: Literal["sovkit.dev/bundle-volumes/v1"] = FORMAT
    manifest_sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    part_size: Annotated[int, Field(gt=0)]
    parts: list[VolumePart]
    files: list[VolumeFile]


def parse_size(text: str) -> int:
    """``4G``, ``700M``, ``1.5GiB``, ``1048576`` → bytes (binary multiples)."""
    m = _SIZE_RE.match(text)
    if not m:
        raise BundleError(f"volume size {text!r} is not a size", "write it like 4G, 700M or 1048576")
    value = float(m.group(1)) * (1 << (10 * " KMGT".index(m.group(2).upper() or " ")))
    if value < 1 << 20:
        raise BundleError(f"volume size {text!r} is below 1M", "use parts of at least 1M")
    return int(value)


@dataclass
class SplitReport:
    index: VolumeIndex
    out: Path


class _PartWriter:
    """Writes a byte stream into consecutive part files of a fixed size, hashing each part."""

    def __init__(self, out: Path, part_size: int) -> None:
        self.out = out
        self.part_size = part_size
        self.parts: list[VolumePart] = []
        self.fd: int | None = None
        self.used = 0
        self.hash = hashlib.sha256()

    def _roll(self) -> None:
        self.close()
        name = f"part-{len(self.parts) + 1:04d}.svb"
        self.fd = os.open(self.out / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self.used = 0
        self.hash = hashlib.sha256()
        self.parts.append(VolumePart(name=name, size=0, sha256="0" * 64))

    def readinto_from(self, data: memoryview) -> None:
        while data:
            if self.fd is None or self.used == self.part_size:
                self._roll()
            assert self.fd is not None
            n = os.write(self.fd, data[: self.part_size - self.used])
            self.hash.update(data[:n])
            self.used += n
            data = data[n:]

    def close(self) -> None:
        if self.fd is None:
            return
        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = None
        last = self.parts[-1]
        self.parts[-1] = VolumePart(name=last.name, size=self.used, sha256=self.hash.hexdigest())


def _bundle_files(bundle: Path) -> tuple[Manifest, list[str]]:
    manifest = parse_manifest((bundle / READABLE).read_bytes(), str(bundle / READABLE))
    blobs = sorted(manifest.carried_blobs())
    return manifest, [ENVELOPE, READABLE, *(f"{BLOB_DIR}/{d}" for d in blobs)]


def split_bundle(bundle: Path, out: Path, part_size: int, on_event: OnEvent = ignore) -> SplitReport:
    """Cut ``bundle`` into parts in ``out`` (a new directory) plus ``volumes.json``."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BundleError(f"{out} already exists", "choose a new directory for the volumes")
    manifest, names = _bundle_files(bundle)
    out.mkdir(parents=True, exist_ok=True)
    writer = _PartWriter(out, part_size)
    files: list[VolumeFile] = []
    on_event(BundleEvent("start", phase="split", total=sum((bundle / n).stat().st_size for n in names)))

    class _Tee:
        def readinto(self, buf: bytearray | memoryview) -> int:
            n = src.readinto(buf)
            if n:
                writer.readinto_from(memoryview(buf)[:n])
            return n or 0

    try:
        for name in names:
            with open(bundle / name, "rb", buffering=0) as src:
                size, digest = digest_stream(_Tee(), None, lambda n: on_event(BundleEvent("bytes", n=n)))
            files.append(VolumeFile(name=name, size=size, sha256=digest))
        writer.close()
    except BaseException:
        writer.close()
        shutil.rmtree(out, ignore_errors=True)
        raise
    index = VolumeIndex(manifest_sha256=manifest.digest(), part_size=part_size, parts=writer.parts, files=files)
    (out / INDEX).write_text(index.model_dump_json(indent=2) + "\n")
    shutil.copyfile(Path(__file__).with_name("bootstrap.py"), out / BOOTSTRAP)
    fsync_dir(out)
    return SplitReport(index, out)


@dataclass
class JoinReport:
    out: Path
    written: int = 0
    reused: int = 0
    pending: list[str] = field(default_factory=list)


def _read_index(inputs: list[Path]) -> tuple[VolumeIndex, dict[str, Path]]:
    indexes: list[Path] = []
    parts: dict[str, Path] = {}
    for p in inputs:
        if p.is_dir():
            if (p / INDEX).is_file():
                indexes.append(p / INDEX)
            parts.update({f.name: f for f in sorted(p.glob("part-*.svb"))})
        elif p.name == INDEX:
            indexes.append(p)
        elif p.is_file():
            parts[p.name] = p
        else:
            raise BundleError(f"{p} not found", "pass the part files or the directories holding them")
    if not indexes:
        raise BundleError(f"no {INDEX} among the inputs", f"pass the directory (or the {INDEX} file) of the volumes")
    texts = {i.read_bytes() for i in indexes}
    if len(texts) > 1:
        raise BundleError(f"the inputs hold different {INDEX} files", "these parts belong to different bundles")
    try:
        index = VolumeIndex.model_validate_json(texts.pop())
    except ValidationError as exc:
        problems = [f"{INDEX}: {'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise BundleInvalid(problems, what=INDEX) from None
    names = [f.name for f in index.files]
    if len(set(names)) != len(names):
        raise BundleInvalid([f"{INDEX} lists a file twice"], what=INDEX)
    return index, parts


class _RangeReader:
    """Reads ``[offset, offset+length)`` of the concatenated parts."""

    def __init__(self, index: VolumeIndex, paths: dict[str, Path], offset: int, length: int) -> None:
        self.index, self.paths, self.pos, self.end = index, paths, offset, offset + length

    def readinto(self, buf: bytearray | memoryview) -> int:
        if self.pos >= self.end:
            return 0
        part_no, within = divmod(self.pos, self.index.part_size)
        want = min(len(buf), self.end - self.pos, self.index.part_size - within)
        with open(self.paths[self.index.parts[part_no].name], "rb", buffering=0) as f:
            f.seek(within)
            n = f.readinto(memoryview(buf)[:want]) or 0
        self.pos += n
        return n


def join_volumes(inputs: list[Path], out: Path, on_event: OnEvent = ignore) -> JoinReport:
    """Rebuild the bundle directory ``out`` from the parts given; resumable, see the module docstring."""
    index, available = _read_index(inputs)
    problems: list[str] = []
    for part in index.parts:
        p = available.get(part.name)
        if p is not None and p.stat().st_size != part.size:
            problems.append(f"{part.name} is {p.stat().st_size} bytes, {INDEX} says {part.size} "
                            "(an incomplete copy: copy it again)")
            del available[part.name]
    out.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(out / LEDGER)
    tmp = out / TMP
    tmp.mkdir(exist_ok=True)
    report = JoinReport(out)
    offset = 0
    spans: list[tuple[VolumeFile, int]] = []
    for f in index.files:
        spans.append((f, offset))
        offset += f.size
    todo: list[tuple[VolumeFile, int]] = []
    for f, off in spans:
        dst = out / f.name
        if ledger.verified(f.name, dst) == f.sha256:
            report.reused += 1
            continue
        first, last = off // index.part_size, max(off, off + f.size - 1) // index.part_size
        needed = [p.name for p in index.parts[first:last + 1]]
        if len(needed) != last - first + 1:
            problems.append(f"{f.name} lies beyond the parts {INDEX} lists")
        elif any(n not in available for n in needed):
            report.pending.append(f.name)
        else:
            todo.append((f, off))
    on_event(BundleEvent("start", phase="join", total=sum(f.size for f, _ in todo)))
    for f, off in todo:
        dst = out / f.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        t = tmp / f.sha256
        t.unlink(missing_ok=True)
        fd = os.open(t, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            reader = _RangeReader(index, available, off, f.size)
            size, digest = digest_stream(reader, fd, lambda n: on_event(BundleEvent("bytes", n=n)), limit=f.size)
            os.fsync(fd)
        finally:
            os.close(fd)
        if (size, digest) != (f.size, f.sha256):
            first, last = off // index.part_size + 1, (off + max(f.size, 1) - 1) // index.part_size + 1
            problems.append(f"{f.name} read from part {first}{f'..{last}' if last != first else ''} has sha256 "
                            f"{digest[:16]}… ({size} bytes), {INDEX} says {f.sha256[:16]}… ({f.size} bytes)")
            t.unlink()
            continue
        os.rename(t, dst)
        ledger.record(f.name, dst, f.sha256)
        report.written += 1
    if problems:
        raise BundleInvalid(problems, what="volumes",
                            hint="copy the named parts again from the media and rerun join; verified files are kept")
    if report.pending:
        missing = sorted({p.name for p in index.parts} - set(available))
        raise BundleIncomplete(
            report,
            f"{len(report.pending)} file(s) still wait for part(s) {', '.join(missing)}",
            f"run join again with the remaining parts; the {report.reused + report.written} file(s) already "
            "verified are kept and not hashed again")
    shutil.rmtree(tmp, ignore_errors=True)
    (out / LEDGER).unlink(missing_ok=True)
    for d in {(out / f.name).parent for f in index.files}:
        fsync_dir(d)
    return report

