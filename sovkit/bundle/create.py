"""Create a bundle: copy every source into content-addressed blobs while hashing, then sign the manifest.

The bundle is built in a hidden sibling directory and renamed into place at
the end, so ``OUT`` either is a complete signed bundle or does not exist.
A file whose digest differs from what the inventory pins is refused: a bundle
only ever carries the approved artifacts. With ``since`` (the manifest the
site already has), content the site has is listed but not carried.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sovkit import __version__
from sovkit.bundle.errors import BundleInvalid
from sovkit.bundle.events import BundleEvent, OnEvent, ignore
from sovkit.bundle.gather import Source
from sovkit.bundle.hashing import Digest, Job, digest_many
from sovkit.bundle.manifest import (
    BLOB_DIR,
    Entry,
    Manifest,
    Target,
    blob_path,
    merge_items,
    path_problem,
    write_manifest,
)
from sovkit.errors import BundleError
from sovkit.fsutil import fsync_dir
from sovkit.signing.keys import Signer


@dataclass(frozen=True)
class CreateReport:
    root: Path
    manifest: Manifest
    carried_files: int
    carried_bytes: int
    total_bytes: int


def _staging(out: Path) -> Path:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BundleError(f"{out} already exists", "choose a new output path or remove the old bundle")
    staging = out.parent / f".{out.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / BLOB_DIR).mkdir(parents=True)
    (staging / "blobs" / "tmp").mkdir()
    return staging


def create_bundle(
    out: Path,
    sources: list[Source],
    signer: Signer,
    site: str,
    inventory_digest: str,
    since: Manifest | None = None,
    on_event: OnEvent = ignore,
    workers: int | None = None,
    durable: bool = True,
    target: Target | None = None,
) -> CreateReport:
    """Write a signed bundle of ``sources`` to ``out`` (a new directory); ``target``: what the wheels are for."""
    out = out.absolute()
    staging = _staging(out)
    try:
        return _create(out, staging, sources, signer, site, inventory_digest, since, on_event, workers, durable,
                       target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _create(out: Path, staging: Path, sources: list[Source], signer: Signer, site: str, inventory_digest: str,
            since: Manifest | None, on_event: OnEvent, workers: int | None, durable: bool,
            target: Target | None) -> CreateReport:
    unsafe = [f"{src.path}: {why}" for src in sources if (why := path_problem(src.path))]
    if unsafe:
        raise BundleInvalid(unsafe, what="bundle sources",
                            hint="rename the file (or move it out of sovkit's reserved names) and update the inventory")
    have = since.all_digests() if since is not None else set()
    by_file: dict[Path, Job] = {}
    for i, src in enumerate(sources):
        f = src.file.absolute()
        if f in by_file:
            continue
        skip_copy = src.pinned_sha256 is not None and src.pinned_sha256 in have
        by_file[f] = Job(str(f), None if skip_copy else str(staging / "blobs" / "tmp" / str(i)), key=str(f))
    jobs = list(by_file.values())
    total = sum(os.stat(j.src).st_size for j in jobs)
    on_event(BundleEvent("start", phase="hash+copy", total=total))
    results: dict[str, Digest] = {}
    # no fsync per blob (thousands of journal commits): one sync of everything before the final rename
    for d in digest_many(jobs, lambda n: on_event(BundleEvent("bytes", n=n)), workers, durable=False):
        results[d.job.key] = d
    problems: list[str] = []
    entries: list[Entry] = []
    carried: dict[str, int] = {}
    for src in sources:
        d = results[str(src.file.absolute())]
        if d.error:
            problems.append(f"{src.path}: cannot read {src.file}: {d.error}")
            continue
        if src.pinned_sha256 is not None and (d.sha256 != src.pinned_sha256 or d.size != src.pinned_size):
            problems.append(f"{', '.join(src.items)}: {src.file} has sha256 {d.sha256[:16]}… ({d.size} bytes), "
                            f"the inventory pins {src.pinned_sha256[:16]}… ({src.pinned_size} bytes)")
            continue
        keep = d.sha256 not in have
        entries.append(Entry(path=src.path, size=d.size, sha256=d.sha256, kind=src.kind, items=list(src.items),
                             carried=keep))
        if keep:
            carried[d.sha256] = d.size
    if problems:
        raise BundleInvalid(problems, what="bundle sources",
                            hint="the files differ from what the inventory approves; fix them or the inventory")
    for d in results.values():
        if d.job.dst is None:
            continue
        blob = blob_path(staging, d.sha256)
        if d.sha256 in carried and not blob.exists():
            os.rename(d.job.dst, blob)
        else:
            os.unlink(d.job.dst)
    (staging / "blobs" / "tmp").rmdir()
    manifest = Manifest(
        site=site, inventory_digest=inventory_digest, created=datetime.now(UTC).isoformat(timespec="seconds"),
        sovkit_version=__version__, since=since.digest() if since is not None else None,
        entries=merge_items(entries), target=target,
    )
    write_manifest(staging, manifest, signer)
    if durable:
        os.sync()
        for directory in (staging / BLOB_DIR, staging):
            fsync_dir(directory)
    if out.exists():
        out.rmdir()
    os.rename(staging, out)
    if durable:
        fsync_dir(out.parent)
    return CreateReport(out, manifest, len(carried), sum(carried.values()), total)
