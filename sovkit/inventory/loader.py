"""Load an inventory (one YAML file or a directory of them) into a validated :class:`Site`.

Every problem — YAML syntax, schema, cross-reference — is collected with its
``file:line:col`` and field path into one :class:`InventoryError`.

A directory is read file by file in name order (``*.yaml`` and ``*.yml``, by
code point, so ``10-x.yaml`` sorts before ``2-x.yaml``: use zero-padded
prefixes; hidden files and subdirectories are skipped). Top-level lists
(``hosts``, ``models`` …) are concatenated in that order; every other top-level
section may appear in one file only. Each file carries ``apiVersion`` and ``kind``.
"""

from __future__ import annotations

import difflib
import gc
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from sovkit.errors import InventoryError, Problem
from sovkit.inventory.crossref import check_references
from sovkit.inventory.models import PATTERN_HINTS, Host, Site
from sovkit.inventory.yamlsource import Mark, SourceMap, YamlInputError, read_yaml, render_path
from sovkit.signing.canonical import canonical_json
from sovkit.signing.trust import TrustRoots

_LIST_SECTIONS = frozenset(
    name for name, f in Site.model_fields.items() if get_origin(f.annotation) is list
)
_HEADER_KEYS = ("apiVersion", "kind")


@dataclass(frozen=True)
class LoadedInventory:
    """A validated site with where it came from."""

    site: Site
    root: Path
    files: tuple[Path, ...]
    source_map: SourceMap

    @property
    def digest(self) -> str:
        """sha256 over the canonical JSON of the validated site (comments and layout do not count)."""
        return site_digest(self.site)

    @property
    def artifact_root(self) -> Path:
        return (self.root / self.site.artifact_store.path).resolve()

    def host_root(self, host: Host) -> str | None:
        """The host's install prefix as the host sees it (relative local roots resolve against the inventory)."""
        if host.root is None or host.root.startswith("/"):
            return host.root
        return str(self.resolve(host.root))

    def resolve(self, relative: str) -> Path:
        """A path written in the inventory (keys, signatures), relative to the inventory root."""
        return (self.root / relative).resolve()

    def trust_root_paths(self) -> dict[str, dict[str, Path]]:
        """``{section: {signer name: public key file}}`` for :class:`sovkit.signing.trust.TrustRoots`."""
        out: dict[str, dict[str, Path]] = {}
        for section in ("publishers", "vendors"):
            names = out.setdefault(section, {})
            for entry in getattr(self.site.trust_roots, section):
                names.setdefault(entry.name, self.resolve(entry.public_key))  # the first entry of a name wins
        return out

    def trust_roots(self) -> TrustRoots:
        """The trust roots with their validity windows and the keyring whose revocations apply to them."""
        windows: dict[str, dict[str, tuple[str | None, str | None]]] = {}
        for section in ("publishers", "vendors"):
            for entry in getattr(self.site.trust_roots, section):
                windows.setdefault(section, {}).setdefault(entry.name, (entry.not_before, entry.not_after))
        ring = self.site.trust_roots.keyring
        return TrustRoots(self.trust_root_paths(), windows, self.resolve(ring) if ring else None)


def site_digest(site: Site) -> str:
    data = site.model_dump(mode="json", by_alias=True)
    return hashlib.sha256(canonical_json(data)).hexdigest()


def inventory_files(path: Path) -> tuple[Path, tuple[Path, ...]]:
    """The inventory root directory and its YAML files in merge order."""
    if path.is_dir():
        files = tuple(sorted(
            (p for p in path.iterdir()
             if p.suffix in (".yaml", ".yml") and not p.name.startswith(".") and p.is_file()),
            key=lambda p: p.name,
        ))
        if not files:
            raise InventoryError(
                [Problem("directory holds no *.yaml or *.yml files", str(path))],
                summary="inventory not found",
            )
        return path, files
    if not path.exists():
        raise InventoryError(
            [Problem("file not found", str(path), hint="pass an inventory file or directory")],
            summary="inventory not found",
        )
    return path.parent, (path,)


def _merge(files: tuple[Path, ...], smap: SourceMap) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    owner: dict[str, str] = {}
    problems: list[Problem] = []
    for file in files:
        file_map = SourceMap()
        try:
            data = read_yaml(file, file_map, str(file))
        except YamlInputError as exc:
            problems.append(exc.problem)
            continue
        if not isinstance(data, dict):
            problems.append(Problem("top level must be a mapping (apiVersion, kind, metadata, …)", str(file), 1, 1,
                                    hint="start the file with `apiVersion: sovkit.dev/v1` and `kind: Site`"))
            continue
        smap.record((), Mark(str(file), 1, 1))
        for key in _HEADER_KEYS:
            if key not in data:
                near = [k for k in data if k.lower() == key.lower()]
                near = near or difflib.get_close_matches(key, list(data), 1, 0.8)
                mark = file_map.find((near[0],)) if near else None
                problems.append(Problem(
                    f"missing {key!r}" + (f" (found {near[0]!r})" if near else ""), str(file),
                    mark.line if mark else 1, mark.column if mark else 1, near[0] if near else key,
                    f"did you mean {key!r}?" if near else
                    "every inventory file starts with apiVersion: sovkit.dev/v1 and kind: Site"))
        offsets: dict[str, int] = {}
        for key, value in data.items():
            mark = file_map.find((key,))
            line, col = (mark.line, mark.column) if mark else (None, None)
            if key in _LIST_SECTIONS and isinstance(value, list):
                if key in merged and not isinstance(merged[key], list):
                    problems.append(Problem(f"section {key!r} must be a list (it is not one in {owner[key]})",
                                            str(file), line, col, key))
                    continue
                offsets[key] = len(merged.setdefault(key, []))
                merged[key].extend(value)
                owner.setdefault(key, str(file))
                continue
            if key in merged and key in _LIST_SECTIONS:
                problems.append(Problem(f"section {key!r} must be a list", str(file), line, col, key,
                                        f"write it as `{key}:` followed by `- ...` items"))
                continue
            if key in merged and key not in _HEADER_KEYS:
                problems.append(Problem(
                    f"section {key!r} is already defined in {owner[key]}",
                    str(file), line, col, key,
                    "define each non-list section in one file only (list sections are concatenated)",
                ))
                continue
            if key in _HEADER_KEYS and key in merged and merged[key] != value:
                problems.append(Problem(f"{key} {value!r} differs from {merged[key]!r} in {owner[key]}",
                                        str(file), line, col, key))
                continue
            merged[key] = value
            owner.setdefault(key, str(file))
            offsets[key] = 0
        _copy_marks(file_map, smap, offsets)
    if problems:
        raise InventoryError(problems, summary="inventory cannot be read")
    return merged


def _copy_marks(src: SourceMap, dst: SourceMap, offsets: dict[str, int]) -> None:
    """Move one file's marks into the merged map, shifting list indices by where the file's items landed.

    Works on the recorded marks (what was written), never by walking the values,
    so aliased subtrees are not expanded again.
    """
    for path, mark in src.items():
        if not path or path[0] not in offsets:
            continue
        offset = offsets[path[0]]
        if offset and len(path) > 1 and isinstance(path[1], int):
            dst.record((path[0], path[1] + offset, *path[2:]), mark)
        else:
            dst.record(path, mark)


def _fields_at(loc: tuple[int | str, ...]) -> list[str]:
    """The field names allowed at ``loc`` (for "did you mean" on unknown keys)."""
    model: Any = Site
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
        field = model.model_fields.get(part) or next(
            (f for f in model.model_fields.values() if f.alias == part), None
        )
        if field is None:
            return []
        model = _unwrap(field.annotation)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return [f.alias or n for n, f in model.model_fields.items()]
    return []


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = get_origin(annotation)
        args = [a for a in get_args(annotation) if a is not type(None)]
        if origin is None or not args:
            return annotation
        if origin is dict:
            annotation = args[-1]
            continue
        model_args = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        annotation = model_args[0] if model_args else args[0]


_HINTS = {
    "string_type": "quote the value, e.g. version: \"1.2\"",
    "missing": "add the field",
    "literal_error": None,
}


def _located(loc: tuple[int | str, ...], data: Any, kind: str) -> tuple[int | str, ...]:
    """Trim pydantic's location to what exists in the input (drops union-member tags like ``.float``).

    For a missing field the field's own name is kept.
    """
    kept: list[int | str] = []
    node = data
    for part in loc:
        present = (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node))
        if present:
            node = node[part]
        else:
            if kind in ("missing", "extra_forbidden"):
                kept.append(part)
            break
        kept.append(part)
    return tuple(kept)


def _problem_from(err: ErrorDetails, smap: SourceMap, data: Any) -> Problem:
    loc = _located(tuple(err["loc"]), data, err["type"])
    mark = smap.find(loc)
    message = err["msg"]
    hint = _HINTS.get(err["type"])
    if err["type"] == "extra_forbidden":
        key = str(loc[-1])
        message = f"unknown field {key!r}"
        close = difflib.get_close_matches(key, _fields_at(loc[:-1]), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else "remove it; see `sovkit schema` for the allowed fields"
    elif err["type"] == "missing":
        message = f"missing required field {str(loc[-1])!r}"
    elif err["type"] == "string_pattern_mismatch":
        message = f"{_short(err.get('input'))} is not valid here"
        hint = PATTERN_HINTS.get(str((err.get("ctx") or {}).get("pattern")), message)
    elif err["type"] == "sovkit_value":
        hint = str((err.get("ctx") or {}).get("hint") or "") or None
    elif err["type"].endswith("_type") or err["type"] in ("greater_than", "greater_than_equal", "less_than_equal",
                                                          "less_than", "too_short", "too_long"):
        message = f"{message} (got {_short(err.get('input'))})"
    elif message.startswith("Value error, "):
        message = message[len("Value error, "):]
    if isinstance(err.get("input"), str) and str(err.get("input")).startswith("TODO"):
        # a placeholder `sovkit init --discover` wrote: say so, whatever the field's own error is
        message = f"{_short(err.get('input'))} is a TODO left to fill in"
    return Problem(
        message,
        mark.file if mark else None,
        mark.line if mark else None,
        mark.column if mark else None,
        render_path(loc),
        hint,
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building a large acyclic structure.

    Each full collection walks every live object, so with the GC running the
    cost of loading grows faster than the inventory (10k/1k CPU-time ratio
    ~12.5 measured; ~10.6 paused). The data built here has no cycles (recursive
    aliases are refused), so reference counting frees it all.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _todo_problems(data: Any, smap: SourceMap, flagged: set[str]) -> list[Problem]:
    """Strings still starting with ``TODO`` that the schema let through (free text: a URL, a location).

    `sovkit init --discover` writes such placeholders and promises that `sovkit validate` names every one left;
    fields whose own check already failed on a TODO (``flagged`` paths) are reported once, by that check.
    """
    out: list[Problem] = []
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), data)]
    while stack:
        loc, value = stack.pop()
        if isinstance(value, dict):
            stack.extend(((*loc, k), v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend(((*loc, i), v) for i, v in enumerate(value))
        elif isinstance(value, str) and value.startswith("TODO") and render_path(loc) not in flagged:
            mark = smap.find(loc)
            out.append(Problem(f"{_short(value)} is a TODO left to fill in", mark.file if mark else None,
                               mark.line if mark else None, mark.column if mark else None, render_path(loc)))
    return sorted(out, key=lambda p: (p.file or "", p.line or 0))


def load_inventory(path: Path | str, check_files: bool = True) -> LoadedInventory:
    """Read, merge, validate and cross-check an inventory. Raises :class:`InventoryError`."""
    with _gc_paused():
        return _load(Path(path), check_files)


def _load(path: Path, check_files: bool) -> LoadedInventory:
    root, files = inventory_files(path)
    smap = SourceMap()
    data = _merge(files, smap)
    try:
        site = Site.model_validate(data)
    except ValidationError as exc:
        problems = [_problem_from(e, smap, data) for e in exc.errors(include_url=False)]
        todos = _todo_problems(data, smap, {p.path for p in problems})
        raise InventoryError(sorted(problems + todos, key=lambda p: (p.file or "", p.line or 0))) from None
    todos = _todo_problems(data, smap, set())
    if todos:
        raise InventoryError(todos)
    loaded = LoadedInventory(site=site, root=root.resolve(), files=files, source_map=smap)
    ref_problems = check_references(loaded, check_files=check_files)
    if ref_problems:
        raise InventoryError(ref_problems)
    return loaded
