"""Gather the wheels of a runtime's staged artifacts into one directory for ``pip --find-links``:
wheelhouse.py STAGING OUT.

An artifact is a wheel (``*.whl``, copied) or a wheelhouse archive (``.tar``, ``.tar.gz``/``.tgz``,
``.tar.bz2``, ``.tar.xz`` or ``.zip`` of wheels, as vendors ship them; other files are ignored), whose ``*.whl`` members are extracted flat into OUT. The archive's digest was checked
before this runs; still, only regular-file members with a plain wheel file name are written (never a link,
a device, an absolute or ``..`` path), other members are skipped, and two different wheels of the same name
are refused. Prints the number of wheels; exit 1 with a message when an archive is unreadable or holds none.
"""

import hashlib
import re
import shutil
import sys
import tarfile
import zipfile
from pathlib import Path

WHEEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*\.whl")
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


def put(out: Path, name: str, data: bytes, origin: str) -> None:
    target = out / name
    if target.exists():
        if hashlib.sha256(target.read_bytes()).digest() != hashlib.sha256(data).digest():
            sys.exit(f"{origin}: a different {name} is already in the wheelhouse")
        return
    tmp = out / f".{name}.tmp"
    tmp.write_bytes(data)
    tmp.replace(target)


def from_tar(path: Path, out: Path) -> int:
    count = 0
    with tarfile.open(path) as tar:
        for member in tar:
            name = member.name.rsplit("/", 1)[-1]
            if not WHEEL.fullmatch(name):
                continue
            if not member.isreg():
                sys.exit(f"{path.name}: {member.name} is not a regular file (links are refused)")
            fh = tar.extractfile(member)
            assert fh is not None
            put(out, name, fh.read(), path.name)
            count += 1
    return count


def from_zip(path: Path, out: Path) -> int:
    count = 0
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            name = info.filename.rsplit("/", 1)[-1]
            if info.is_dir() or not WHEEL.fullmatch(name):
                continue
            if (info.external_attr >> 16) & 0o170000 not in (0, 0o100000):
                sys.exit(f"{path.name}: {info.filename} is not a regular file (links are refused)")
            put(out, name, zf.read(info), path.name)
            count += 1
    return count


def main(staging: Path, out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    total = 0
    for path in sorted(p for p in staging.iterdir() if p.is_file() and not p.is_symlink()):
        if WHEEL.fullmatch(path.name):
            shutil.copyfile(path, out / path.name)
            total += 1
            continue
        name = path.name.lower()
        try:
            # by name: a tar holding uncompressed wheels also "looks like" a zip (it contains zip directories)
            if name.endswith(TAR_SUFFIXES):
                found = from_tar(path, out)
            elif name.endswith(".zip"):
                found = from_zip(path, out)
            else:
                continue
        except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as exc:
            sys.exit(f"{path.name}: not a readable wheelhouse archive: {exc}")
        if found == 0:
            sys.exit(f"{path.name}: the archive holds no wheels")
        total += found
    if total == 0:
        sys.exit("no wheels among the runtime's artifacts")
    print(total)
    return 0


sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
