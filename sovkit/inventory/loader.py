"""Load an inventory (one YAML file or a directory of them) into a validated :class:`Site`.

Every problem — YAML syntax, schema, cross-reference — is collected with its
``file:line:col`` and field path into one :class:`InventoryError`.

A directory is read file by file in name order (``*.yaml`` and ``*.yml``, not
recursive). Top-level lists (``hosts``, ``models`` …) are concatenated in that
order; every other top-level section may appear in one file only. Each file
carries ``apiVersion`` and ``kind``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from sovkit.errors import InventoryError, Problem
from sovkit.inventory.crossref import check_references
from sovkit.inventory.models import Host, Site
from sovkit.inventory.yamlsource import Path_, SourceMap, YamlInputError, read_yaml, render_path

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


def site_digest(site: Site) -> str:
    data = site.model_dump(mode="json", by_alias=True)
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def inventory_files(path: Path) -> tuple[Path, tuple[Path, ...]]:
    """The inventory root directory and its YAML files in merge order."""
    if path.is_dir():
        files = tuple(sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()))
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
            problems.append(Problem("top level must be a mapping (apiVersion, kind, metadata, …)", str(file), 1, 1))
            continue
        for key in _HEADER_KEYS:
            if key not in data:
                problems.append(Problem(f"missing {key!r}", str(file), 1, 1, key,
                                        "every inventory file starts with apiVersion: sovkit.dev/v1 and kind: Site"))
        for key, value in data.items():
            if key in _LIST_SECTIONS and isinstance(value, list):
                offset = len(merged.setdefault(key, []))
                merged[key].extend(value)
                smap.record((key,), file_map.find((key,)))  # type: ignore[arg-type]
                for i in range(len(value)):
                    _copy_marks(file_map, smap, (key, i), (key, offset + i), value[i])
                continue
            if key in merged and key not in _HEADER_KEYS:
                mark = file_map.find((key,))
                problems.append(Problem(
                    f"section {key!r} is already defined in {owner[key]}",
                    str(file), mark.line if mark else None, mark.column if mark else None, key,
                    "define each non-list section in one file only",
                ))
                continue
            if key in _HEADER_KEYS and key in merged and merged[key] != value:
                mark = file_map.find((key,))
                problems.append(Problem(f"{key} {value!r} differs from {merged[key]!r} in {owner[key]}",
                                        str(file), mark.line if mark else None, 1, key))
                continue
            merged[key] = value
            owner.setdefault(key, str(file))
            _copy_marks(file_map, smap, (key,), (key,), value)
    if problems:
        raise InventoryError(problems, summary="inventory cannot be read")
    return merged


def _copy_marks(src: SourceMap, dst: SourceMap, old: Path_, new: Path_, value: Any) -> None:
    mark = src.find(old)
    if mark is not None:
        dst.record(new, mark)
    if isinstance(value, dict):
        for k, v in value.items():
            _copy_marks(src, dst, (*old, k), (*new, k), v)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _copy_marks(src, dst, (*old, i), (*new, i), v)


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


def _problem_from(err: ErrorDetails, smap: SourceMap) -> Problem:
    loc = tuple(err["loc"])
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
    elif err["type"].endswith("_type") or err["type"] in ("greater_than", "greater_than_equal", "less_than_equal"):
        message = f"{message} (got {_short(err.get('input'))})"
    elif message.startswith("Value error, "):
        message = message[len("Value error, "):]
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


def load_inventory(path: Path | str, check_files: bool = True) -> LoadedInventory:
    """Read, merge, validate and cross-check an inventory. Raises :class:`InventoryError`."""
    root, files = inventory_files(Path(path))
    smap = SourceMap()
    data = _merge(files, smap)
    try:
        site = Site.model_validate(data)
    except ValidationError as exc:
        problems = [_problem_from(e, smap) for e in exc.errors(include_url=False)]
        raise InventoryError(problems) from None
    loaded = LoadedInventory(site=site, root=root.resolve(), files=files, source_map=smap)
    ref_problems = check_references(loaded, check_files=check_files)
    if ref_problems:
        raise InventoryError(ref_problems)
    return loaded
