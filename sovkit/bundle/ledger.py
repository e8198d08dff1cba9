"""A verified-ledger: which files were already hashed and found right, so a resumed run skips them.

Append-only JSON lines, fsynced per record, so a kill loses at most the record
being written. A record counts only while the file still has the same size,
mtime and inode it had when it was verified; anything else is hashed again.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Seen:
    sha256: str
    size: int
    mtime_ns: int
    ino: int


class Ledger:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: dict[str, Seen] = {}
        try:
            lines = path.read_text().splitlines()
        except OSError:
            lines = []
        for line in lines:
            try:
                r = json.loads(line)
                self.records[r["file"]] = Seen(r["sha256"], r["size"], r["mtime_ns"], r["ino"])
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line from a kill: that file is simply hashed again

    def verified(self, name: str, file: Path) -> str | None:
        """The recorded sha256 of ``file`` if it is unchanged since it was verified, else None."""
        seen = self.records.get(name)
        if seen is None:
            return None
        try:
            st = file.lstat()
        except OSError:
            return None
        if (st.st_size, st.st_mtime_ns, st.st_ino) != (seen.size, seen.mtime_ns, seen.ino):
            return None
        return seen.sha256

    @staticmethod
    def format(name: str, sha256: str, size: int, mtime_ns: int, ino: int) -> str:
        return json.dumps({"file": name, "sha256": sha256, "size": size, "mtime_ns": mtime_ns, "ino": ino},
                          sort_keys=True)

    def line(self, name: str) -> str:
        """The record of ``name`` as one JSON line (for rewriting the whole file)."""
        s = self.records[name]
        return self.format(name, s.sha256, s.size, s.mtime_ns, s.ino)

    def record(self, name: str, file: Path, sha256: str) -> None:
        st = file.lstat()
        seen = Seen(sha256, st.st_size, st.st_mtime_ns, st.st_ino)
        self.records[name] = seen
        line = self.format(name, sha256, seen.size, seen.mtime_ns, seen.ino)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def by_digest(self) -> dict[str, str]:
        """``{sha256: name}`` for every record (which file holds a content)."""
        return {s.sha256: n for n, s in self.records.items()}

