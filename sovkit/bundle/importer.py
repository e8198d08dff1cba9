"""Import a verified bundle into a site's artifact store (and optionally a site directory).

Two phases, so a failed import leaves the store as it was:

1. *Stage*: every carried blob is copied into ``<store>/.sovkit-import/<id>/``
   while it is hashed (in parallel), fsynced, and recorded in a verified-ledger.
   A resumed import skips blobs the ledger already has; a digest mismatch
   discards the staging area entirely and nothing else is touched.
2. *Commit*: per target file, the old file (if any) is moved aside and the
   staged blob renamed into place (temp file + fsync + rename when the target
   is on another file system); the directory is fsynced. Any failure rolls
   every step back in reverse.

The store keeps an index of what was imported (``.sovkit-store.jsonl``), which
differential bundles use to find content the site already has. It is rewritten
whole (temp file + fsync + rename) as the last step of the commit, never
appended or truncated in place; a failure there rolls the commit back too.

Disk full: the free space is checked before staging (the carried blobs, the
copies the commit makes, the new index), and ENOSPC at any later step (another
writer took the space) discards the staging area, rolls the commit back and is
reported as one message naming the directory and the bytes needed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sovkit.bundle.errors import BundleInvalid
from sovkit.bundle.events import BundleEvent, OnEvent, ignore
from sovkit.bundle.hashing import Job, digest_file, digest_many, sha256_path
from sovkit.bundle.ledger import Ledger
from sovkit.bundle.manifest import Entry, Manifest
from sovkit.bundle.verify import check_digests, inspect
from sovkit.errors import BundleError
from sovkit.flock import Held, exclusive
from sovkit.fsutil import fsync_dir
from sovkit.signing import paths
from sovkit.signing.keys import PublicKey

WORK = ".sovkit-import"
LOCK = ".sovkit-import.lock"
INDEX = ".sovkit-store.jsonl"
Fault = Callable[[str, str], None]


def _no_fault(stage: str, name: str) -> None:
    """Production default; tests pass a hook that raises to simulate a crash at a given step."""


@dataclass
class ImportReport:
    manifest: Manifest
    hashed: int = 0
    reused: int = 0
    committed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Target:
    entry: Entry
    root: Path
    rel: str

    @property
    def path(self) -> Path:
        return self.root / self.rel


def _targets(manifest: Manifest, store: Path, site_dir: Path | None) -> list[_Target]:
    out: list[_Target] = []
    for e in manifest.entries:
        ns, rest = e.path.split("/", 1)
        if ns == "artifacts":
            out.append(_Target(e, store, rest))
        elif site_dir is not None:
            out.append(_Target(e, site_dir, e.path))
    return out


class _Indexes:
    """The per-root index of verified files (lazily read)."""

    def __init__(self) -> None:
        self.by_root: dict[Path, Ledger] = {}

    def __call__(self, root: Path) -> Ledger:
        if root not in self.by_root:
            self.by_root[root] = Ledger(root / INDEX)
        return self.by_root[root]

    def holds(self, t: _Target) -> bool:
        return self(t.root).verified(t.rel, t.path) == t.entry.sha256

    def find(self, root: Path, digest: str) -> Path | None:
        ledger = self(root)
        for name, seen in ledger.records.items():
            if seen.sha256 == digest and ledger.verified(name, root / name) == digest:
                return root / name
        return None


def _safe_parent(t: _Target) -> str | None:
    parent = paths.escapes(t.root, t.path)
    if parent is not None:
        return f"{t.entry.path}: {parent} leads outside {t.root} through a symlink"
    if t.path.is_symlink() or t.path.is_dir():
        return f"{t.entry.path}: {t.path} exists and is not a regular file"
    return None


def import_bundle(
    bundle: Path,
    store: Path,
    keys: list[PublicKey],
    site_dir: Path | None = None,
    on_event: OnEvent = ignore,
    workers: int | None = None,
    fault: Fault = _no_fault,
) -> ImportReport:
    """Verify ``bundle`` and commit it into ``store``; raises and leaves the store unchanged on any failure."""
    ins = inspect(bundle, keys)
    if ins.problems or ins.manifest is None:
        check_digests(ins, on_event, workers)  # so the report names every problem, not only the first kind
        raise BundleInvalid(ins.problems or ["the manifest could not be read"])
    manifest = ins.manifest
    store = store.absolute()
    site_dir = site_dir.absolute() if site_dir is not None else None
    for root in (store, site_dir):
        if root is not None and root.exists() and not root.is_dir():
            raise BundleError(f"{root} exists and is not a directory", "pass the artifact store directory")
    created = [r for r in (store, site_dir) if r is not None and not r.exists()]
    work = store / WORK / manifest.digest()[:16]
    with _one_import_at_a_time(store):
        # what the store holds is read under the lock: another import may have just changed it
        targets = _targets(manifest, store, site_dir)
        indexes = _Indexes()
        sources, problems = _sources_for_uncarried(targets, indexes, manifest)
        problems += [p for t in targets if (p := _safe_parent(t))]
        if problems:
            _discard(work, store, created)
            raise BundleInvalid(problems, what="import", hint="nothing was imported")
        report = ImportReport(manifest)
        wanted = {t.entry.sha256 for t in targets if t.entry.carried and not indexes.holds(t)}
        need = _space_needed(targets, wanted, manifest, indexes)
        try:
            _check_space(need)
            staged = _stage(ins.blobs, wanted, work, report, on_event, workers, fault, ins.paths_of)
            staged.update(sources)
            _commit(targets, staged, work, indexes, report, fault, on_event)
        except NoSpace as exc:
            _discard(work, store, created)
            raise exc.error(need) from None
        except BundleInvalid:
            _discard(work, store, created)
            raise
        except BaseException:
            shutil.rmtree(work / "tmp", ignore_errors=True)
            raise
        _discard(work, store, [])
    return report


class NoSpace(Exception):
    """ENOSPC/EDQUOT somewhere under ``path``; turned into one BundleError once the store is restored."""

    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self.path = path

    def error(self, need: dict[Path, int]) -> BundleError:
        root = next((r for r in need if self.path == r or self.path.is_relative_to(r)), self.path)
        free = _free(root)
        wanted = need.get(root)
        return BundleError(
            f"no space left on {root}: the import needs {wanted if wanted is not None else '?'} bytes there, "
            f"{free if free is not None else '?'} are free; nothing was imported, the store is as it was",
            "free space (or pass a store on a larger file system) and run the import again")


_FULL = (errno.ENOSPC, errno.EDQUOT)


def _free(path: Path) -> int | None:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def _space_needed(targets: list[_Target], wanted: set[str], manifest: Manifest, indexes: _Indexes) -> dict[Path, int]:
    """Bytes each root needs: staged blobs (in the store), copies beyond the first use, and the new index."""
    store = next((t.root for t in targets if t.entry.path.startswith("artifacts/")), None)
    need: dict[Path, int] = {}
    sizes = {e.sha256: e.size for e in manifest.entries}
    if store is not None:
        need[store] = sum(sizes[d] for d in wanted)
    first_use: set[str] = set()
    for t in targets:
        need.setdefault(t.root, 0)
        if t.entry.sha256 in first_use or t.root != store:
            need[t.root] += t.entry.size
        first_use.add(t.entry.sha256)
    for root in need:
        index = root / INDEX
        need[root] += (index.stat().st_size if index.is_file() else 0) + 256 * len(targets)
    return need


def _check_space(need: dict[Path, int]) -> None:
    for root, n in need.items():
        free = _free(root)
        if free is not None and free < n:
            raise NoSpace(root)


@contextlib.contextmanager
def _one_import_at_a_time(store: Path) -> Iterator[None]:
    """Two imports into one store would share staging areas and interleave their commits: refuse the second."""
    try:
        with exclusive(store / LOCK, wait=False, remove=True):
            yield
    except Held as held:
        raise BundleError(f"another import into {store} is running ({held.holder or 'pid unknown'})",
                          "wait for it to finish, then run this import again") from None


def _sources_for_uncarried(targets: list[_Target], indexes: _Indexes,
                           manifest: Manifest) -> tuple[dict[str, Path], list[str]]:
    """Where the site already holds the content a differential bundle does not carry."""
    found: dict[str, Path] = {}
    problems: list[str] = []
    for t in targets:
        if t.entry.carried or t.entry.sha256 in found:
            continue
        src = t.path if indexes.holds(t) else indexes.find(t.root, t.entry.sha256)
        if src is None:
            base = manifest.since[:16] if manifest.since else "?"
            problems.append(f"{t.entry.path}: not carried by this differential bundle and not in {t.root} "
                            f"(import the bundle with manifest sha256 {base}… first)")
        else:
            found[t.entry.sha256] = src
    return found, problems


def _stage(blobs: dict[str, Path], wanted: set[str], work: Path, report: ImportReport, on_event: OnEvent,
           workers: int | None, fault: Fault, paths_of: Callable[[str], str]) -> dict[str, Path]:
    """Copy the ``wanted`` blobs into staging while hashing; only hash the others (the whole bundle is checked)."""
    (work / "blobs").mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work / "tmp", ignore_errors=True)
    (work / "tmp").mkdir()
    ledger = Ledger(work / "ledger.jsonl")
    staged: dict[str, Path] = {}
    jobs: list[Job] = []
    for digest, src in sorted(blobs.items()):
        dst = work / "blobs" / digest
        if digest not in wanted:
            if ledger.verified(f"bundle:{digest}", src) == digest:
                report.reused += 1
            else:
                jobs.append(Job(str(src), None, key=digest))
        elif ledger.verified(digest, dst) == digest:
            report.reused += 1
            staged[digest] = dst
        else:
            jobs.append(Job(str(src), str(work / "tmp" / digest), key=digest))
    on_event(BundleEvent("start", phase="stage", total=sum(os.stat(j.src).st_size for j in jobs)))
    problems: list[str] = []
    full = False
    for d in digest_many(jobs, lambda n: on_event(BundleEvent("bytes", n=n)), workers):
        if d.errno in _FULL:
            full = True
            continue
        if d.error or d.sha256 != d.job.key:
            why = d.error or f"content has sha256 {d.sha256[:16]}… (blob altered)"
            problems.append(f"blobs/sha256/{d.job.key[:16]}… ({paths_of(d.job.key)}): {why}")
            continue
        report.hashed += 1
        if d.job.dst is None:
            ledger.record(f"bundle:{d.job.key}", Path(d.job.src), d.job.key)
        else:
            dst = work / "blobs" / d.job.key
            os.replace(d.job.dst, dst)
            ledger.record(d.job.key, dst, d.job.key)
            staged[d.job.key] = dst
        fault("staged", d.job.key)
    if full:
        raise NoSpace(work)
    if problems:
        raise BundleInvalid(problems)
    fsync_dir(work / "blobs")
    shutil.rmtree(work / "tmp", ignore_errors=True)
    return staged


def _discard(work: Path, store: Path, created: list[Path]) -> None:
    shutil.rmtree(work, ignore_errors=True)
    parent = store / WORK
    if parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
    for root in created:
        shutil.rmtree(root, ignore_errors=True)


def _place(src: Path, dst: Path, digest: str, move: bool) -> bool:
    """Put ``src`` at ``dst`` atomically. Returns True when it was moved (so rollback can move it back)."""
    if move and src.stat().st_dev == dst.parent.stat().st_dev:
        os.rename(src, dst)
        return True
    tmp = dst.with_name(f".{dst.name}.sovkit-tmp")
    tmp.unlink(missing_ok=True)
    d = digest_file(Job(str(src), str(tmp)))
    if d.error or d.sha256 != digest:
        tmp.unlink(missing_ok=True)
        raise BundleError(f"{src} changed while importing ({d.error or 'digest differs'})", "run the import again")
    os.rename(tmp, dst)
    return False


def _commit(targets: list[_Target], staged: dict[str, Path], work: Path, indexes: _Indexes, report: ImportReport,
            fault: Fault, on_event: OnEvent) -> None:
    todo: list[_Target] = []
    for t in targets:
        if indexes.holds(t) or (t.path.is_file() and t.path.stat().st_size == t.entry.size
                                and sha256_path(t.path) == t.entry.sha256):
            report.unchanged.append(t.entry.path)
        else:
            todo.append(t)
    last_use = {t.entry.sha256: t for t in todo if str(staged[t.entry.sha256]).startswith(str(work))}
    on_event(BundleEvent("note", message=f"committing {len(todo)} file(s)"))
    journal: list[tuple[_Target, Path | None, bool]] = []
    made_dirs: list[Path] = []
    old = work / "old"
    try:
        for i, t in enumerate(todo):
            fault("commit", t.entry.path)
            missing = [p for p in [t.path.parent, *t.path.parent.parents] if not p.exists()]
            for p in reversed(missing):
                p.mkdir()
                made_dirs.append(p)
            backup: Path | None = None
            if t.path.exists():
                old.mkdir(exist_ok=True)
                backup = old / str(i)
                os.rename(t.path, backup)
            journal.append((t, backup, False))
            moved = _place(staged[t.entry.sha256], t.path, t.entry.sha256, last_use.get(t.entry.sha256) is t)
            journal[-1] = (t, backup, moved)
            fsync_dir(t.path.parent)
            report.committed.append(t.entry.path)
        fault("index", "")
        _write_indexes(targets, indexes)
    except BaseException as exc:
        _rollback(journal, made_dirs, staged)
        if isinstance(exc, OSError) and exc.errno in _FULL:
            raise NoSpace(Path(exc.filename) if exc.filename else targets[0].root) from exc
        if isinstance(exc, Exception):
            raise BundleError(f"import failed while committing: {exc}; the store was rolled back",
                              "fix the cause and run the import again (verified blobs are kept)") from exc
        raise


def _write_indexes(targets: list[_Target], indexes: _Indexes) -> None:
    """Rewrite each root's index whole (old records + this import's) via temp + rename: old or new, never torn."""
    by_root: dict[Path, list[_Target]] = {}
    for t in targets:
        by_root.setdefault(t.root, []).append(t)
    written: list[tuple[Path, Path]] = []
    try:
        for root, ts in by_root.items():
            ledger = indexes(root)
            lines = {name: ledger.line(name) for name in ledger.records}
            for t in ts:
                st = t.path.lstat()
                lines[t.rel] = Ledger.format(t.rel, t.entry.sha256, st.st_size, st.st_mtime_ns, st.st_ino)
            tmp = root / f"{INDEX}.{os.getpid()}.tmp"
            written.append((tmp, root / INDEX))
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            with os.fdopen(fd, "w") as fh:
                fh.write("".join(line + "\n" for line in lines.values()))
                fh.flush()
                os.fsync(fh.fileno())
    except BaseException:
        for tmp, _ in written:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, final in written:
        os.replace(tmp, final)
        fsync_dir(final.parent)


def _rollback(journal: list[tuple[_Target, Path | None, bool]], made_dirs: list[Path],
              staged: dict[str, Path]) -> None:
    for t, backup, moved in reversed(journal):
        if t.path.exists() or t.path.is_symlink():
            if moved:
                os.rename(t.path, staged[t.entry.sha256])
            else:
                t.path.unlink()
        if backup is not None:
            os.rename(backup, t.path)
    for d in reversed(made_dirs):
        with contextlib.suppress(OSError):
            d.rmdir()
