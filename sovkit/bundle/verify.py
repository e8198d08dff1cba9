"""Verify a bundle directory and report every problem: signature, paths, listing, sizes, digests.

The directory is walked without following links. Allowed are exactly the
envelope, the readable manifest (equal to the signed payload) and one regular,
singly-linked file per carried blob. Anything else — an extra or missing file,
a symlink, a hard link, a device node, an unsafe manifest path, a wrong size
or digest — is a problem, and all of them are collected before failing.
"""

from __future__ import annotations

import os
import stat
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from sovkit.bundle.errors import BundleInvalid
from sovkit.bundle.events import BundleEvent, OnEvent, ignore
from sovkit.bundle.hashing import Job, digest_many
from sovkit.bundle.manifest import BLOB_DIR, ENVELOPE, READABLE, Manifest, path_problem, read_signed
from sovkit.errors import BundleError
from sovkit.signing.keys import PublicKey
from sovkit.signing.steps import Step, Verification

STEPS = ("manifest-signature", "file-set", "file-digests")


@dataclass
class Inspection:
    """What can be learnt without reading blob contents; problems by verification step."""

    root: Path
    manifest: Manifest | None
    by_step: dict[str, list[str]] = field(default_factory=lambda: {s: [] for s in STEPS})
    blobs: dict[str, Path] = field(default_factory=dict)  # carried blobs present with the right size

    def add(self, step: str, problem: str) -> None:
        self.by_step[step].append(problem)

    @property
    def problems(self) -> list[str]:
        return [p for s in STEPS for p in self.by_step[s]]

    def paths_of(self, digest: str) -> str:
        if self.manifest is None:
            return digest
        return ", ".join(e.path for e in self.manifest.entries if e.sha256 == digest)


def _kind(mode: int) -> str:
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _walk(root: Path, rel: str, expected: dict[str, int], out: Inspection) -> None:
    allowed_dirs = {"": {"blobs"}, "blobs": {"sha256"}}
    allowed_files = {"": {ENVELOPE, READABLE}, BLOB_DIR: set(expected)}
    base = root / rel if rel else root
    for entry in sorted(os.scandir(base), key=lambda e: e.name):
        name = f"{rel}/{entry.name}" if rel else entry.name
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(entry.path)
            resolved = (Path(entry.path).parent / target).resolve()
            where = "outside the bundle" if not resolved.is_relative_to(root.resolve()) else "inside the bundle"
            out.add("file-set", f"{name} is a symlink to {target} ({where}); links are not allowed")
        elif stat.S_ISDIR(st.st_mode):
            if entry.name in allowed_dirs.get(rel, set()):
                _walk(root, name, expected, out)
            else:
                out.add("file-set", f"{name}/ is an extra directory")
        elif stat.S_ISREG(st.st_mode):
            if st.st_nlink > 1:
                out.add("file-set", f"{name} is a hard link ({st.st_nlink} links); links are not allowed")
            elif entry.name not in allowed_files.get(rel, set()):
                out.add("file-set", f"{name} is an extra file the manifest does not list")
            elif rel == BLOB_DIR:
                want = expected[entry.name]
                if st.st_size != want:
                    out.add("file-digests", f"{name} ({out.paths_of(entry.name)}) is {st.st_size} bytes, the manifest "
                                        f"says {want} (truncated or altered)")
                else:
                    out.blobs[entry.name] = Path(entry.path)
        else:
            out.add("file-set", f"{name} is {_kind(st.st_mode)}; only regular files are allowed")


def inspect(root: Path, keys: list[PublicKey]) -> Inspection:
    """Check everything but blob contents; never stops at the first problem."""
    if not root.is_dir():
        raise BundleError(f"{root} is not a bundle directory",
                          "pass the directory written by `sovkit bundle create` or `sovkit bundle join`")
    manifest, problems = read_signed(root, keys)
    out = Inspection(root, manifest)
    out.by_step["manifest-signature"] = problems
    expected: dict[str, int] = {}
    if manifest is not None:
        seen: set[str] = set()
        for e in manifest.entries:
            bad = path_problem(e.path)
            if bad:
                out.add("file-set", f"manifest entry {bad}")
            if e.path in seen:
                out.add("file-set", f"manifest lists {e.path!r} twice")
            seen.add(e.path)
            if e.carried:
                if expected.get(e.sha256, e.size) != e.size:
                    out.add("file-set", f"manifest gives two sizes for blob {e.sha256[:16]}…")
                expected[e.sha256] = e.size
    _walk(root, "", expected, out)
    present = _present_names(root)
    for digest in sorted(set(expected) - present):
        out.add("file-set", f"missing blob {BLOB_DIR}/{digest[:16]}… for {out.paths_of(digest)}")
    return out


def _present_names(root: Path) -> set[str]:
    d = root / BLOB_DIR
    try:
        return {e.name for e in os.scandir(d)} if d.is_dir() and not d.is_symlink() else set()
    except OSError:
        return set()


def check_digests(ins: Inspection, on_event: OnEvent = ignore, workers: int | None = None) -> int:
    """Hash every present blob in parallel; add a problem per mismatch. Returns the bytes read."""
    jobs = [Job(str(p), key=digest) for digest, p in sorted(ins.blobs.items())]
    total = sum(p.stat().st_size for p in ins.blobs.values())
    on_event(BundleEvent("start", phase="verify", total=total))
    by_digest: dict[str, list[str]] = defaultdict(list)
    for d in digest_many(jobs, lambda n: on_event(BundleEvent("bytes", n=n)), workers):
        if d.error:
            by_digest[d.job.key].append(f"cannot read ({d.error})")
        elif d.sha256 != d.job.key:
            by_digest[d.job.key].append(f"content has sha256 {d.sha256[:16]}…, not its name (blob altered)")
    for digest, msgs in sorted(by_digest.items()):
        ins.by_step["file-digests"] += [f"{BLOB_DIR}/{digest[:16]}… ({ins.paths_of(digest)}): {m}" for m in msgs]
        ins.blobs.pop(digest, None)
    return total


@dataclass(frozen=True)
class VerifyReport:
    manifest: Manifest
    files: int
    bytes: int


def verify_bundle(root: Path, keys: list[PublicKey], on_event: OnEvent = ignore,
                  workers: int | None = None) -> VerifyReport:
    """Full verification, fail-closed: raises :class:`BundleInvalid` listing every problem."""
    ins = inspect(root, keys)
    total = check_digests(ins, on_event, workers)
    if ins.problems or ins.manifest is None:
        raise BundleInvalid(ins.problems or ["the manifest could not be read"])
    return VerifyReport(ins.manifest, len(ins.blobs), total)


def check_bundle(root: Path, keys: list[PublicKey], on_event: OnEvent = ignore,
                 workers: int | None = None) -> Verification:
    """Full verification in named steps (``sovkit bundle verify``); never raises for a bad bundle."""
    ins = inspect(root, keys)
    total = check_digests(ins, on_event, workers)
    m = ins.manifest
    facts: dict[str, str | int] = {}
    if m is not None:
        facts = {"manifest_sha256": m.digest(), "entries": len(m.entries), "blobs": len(ins.blobs), "bytes": total}
    details = {
        "manifest-signature": f"signed manifest sha256:{m.digest()}, {len(m.entries)} entries" if m else "",
        "file-set": "entry paths safe; only the envelope, manifest.json and the listed blobs, no links",
        "file-digests": f"{len(ins.blobs)} blob(s), {total} bytes: sizes and sha256 match",
    }
    steps = [Step.of(name, ins.by_step[name], details[name]) for name in STEPS]
    if m is None and not ins.by_step["manifest-signature"]:
        steps[0] = Step.failed_with("manifest-signature", ["the manifest could not be read"])
    return Verification(subject=str(root), steps=steps, facts=facts)
