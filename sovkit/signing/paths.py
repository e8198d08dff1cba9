"""Path safety for paths read from signed (or unsigned) documents: the one check, used by the bundle (its
manifest entries are written on the site) and the audit pack (its manifest and report name files in the pack).

A path from a document is never trusted: it must be relative, made of plain segments (no ``..``, ``.`` or empty
segment, no backslash or control character), within the file-system limits, and -- where the path will be
written on a site -- outside sovkit's reserved names. :func:`escapes` is the matching check on disk: the nearest
existing ancestor of a target must resolve inside its root (no symlink leads out).

Host paths in the inventory (a stricter character set, absolute allowed) are identifier patterns:
:func:`sovkit.identifiers.safe_path`.
"""

from __future__ import annotations

import re
from pathlib import Path

NAME_MAX = 255
PATH_BUDGET = 1024  # leaves room under PATH_MAX (4096) for the store or site directory it is joined to

_BAD_CHARS = re.compile(r"[\x00-\x1f\\]")


def reserved(segment: str) -> bool:
    """sovkit's own names: ``.sovkit`` (state, operator keys, logs, locks), ``.sovkit-store.jsonl`` (the store
    index), ``.sovkit-import*`` (staging and its lock), and the commit step's ``*.sovkit-tmp`` files."""
    return segment.startswith(".sovkit") or segment.endswith(".sovkit-tmp")


def path_problem(path: str, *, refuse_reserved: bool = True) -> str | None:
    """Why ``path`` (relative, ``/``-separated) is unsafe to join to a directory, or None when it is fine.

    ``refuse_reserved``: the path is written on a site, so sovkit's own names (:func:`reserved`) are refused too.
    """
    if not path:
        return "empty path"
    if path.startswith("/"):
        return f"{path!r} is an absolute path"
    if _BAD_CHARS.search(path):
        return f"{path!r} contains a backslash or control character"
    parts = path.split("/")
    if any(p == ".." for p in parts):
        return f"{path!r} contains '..'"
    if any(p in ("", ".") for p in parts):
        return f"{path!r} has an empty or '.' segment"
    if refuse_reserved:
        bad = next((p for p in parts if reserved(p)), None)
        if bad is not None:
            return (f"{path!r} names {bad!r}, reserved for sovkit's own files (state, keys, locks, the store "
                    "index, import staging): a bundle never writes them")
    long = next((p for p in parts if len(p.encode()) > NAME_MAX), None)
    if long is not None:
        return f"{path!r} has a name of {len(long.encode())} bytes; file systems allow at most {NAME_MAX}"
    if len(path.encode()) > PATH_BUDGET:
        return f"{path!r} is {len(path.encode())} bytes long; at most {PATH_BUDGET} are allowed"
    return None


def escapes(root: Path, target: Path) -> Path | None:
    """The nearest existing ancestor of ``target`` when it resolves outside ``root`` (a symlink leads out)."""
    parent = target.parent
    while parent != root and not parent.exists():
        parent = parent.parent
    return None if parent.resolve().is_relative_to(root.resolve()) else parent
