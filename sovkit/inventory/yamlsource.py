"""Safe YAML reading that keeps a line and column for every field.

We compose the node graph ourselves (PyYAML's safe composer, C-accelerated when
available) and build plain Python data while recording where each field came
from, so every later error can name ``file:line:col``. The builder is also
where hostile input is refused: duplicate keys, non-string keys, documents
nested too deeply, and alias bombs ("billion laughs") that would expand to
more nodes than any real inventory has.

Scalars follow YAML 1.2's core schema for booleans: only ``true``/``false``
are booleans, so a country code ``NO`` stays the string ``"NO"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sovkit.errors import Problem

try:
    _Loader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML without libyaml
    _Loader = yaml.SafeLoader

MAX_FILE_BYTES = 256 * 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 5_000_000

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class Mark:
    file: str
    line: int
    column: int


class SourceMap:
    """Maps a field path (``("hosts", 3, "address")``) to where it was written."""

    def __init__(self) -> None:
        self._marks: dict[Path_, Mark] = {}

    def record(self, path: Path_, mark: Mark) -> None:
        self._marks.setdefault(path, mark)

    def find(self, path: Path_) -> Mark | None:
        """The mark of ``path`` or of its nearest recorded ancestor."""
        p = tuple(path)
        while True:
            mark = self._marks.get(p)
            if mark is not None or not p:
                return mark
            p = p[:-1]


class YamlInputError(Exception):
    """A problem found while reading YAML (wrapped into InventoryError by the loader)."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


_constructor = yaml.constructor.SafeConstructor()
_TAG = "tag:yaml.org,2002:"


class _Builder:
    def __init__(self, file: str, smap: SourceMap) -> None:
        self.file = file
        self.smap = smap
        self.nodes = 0
        self._built: dict[int, tuple[Any, int]] = {}

    def mark(self, node: yaml.Node) -> Mark:
        return Mark(self.file, node.start_mark.line + 1, node.start_mark.column + 1)

    def fail(self, node: yaml.Node, message: str, path: Path_, hint: str | None = None) -> YamlInputError:
        m = self.mark(node)
        return YamlInputError(Problem(message, m.file, m.line, m.column, render_path(path), hint))

    def build(self, node: yaml.Node, path: Path_, depth: int = 0) -> Any:
        """Build data for ``node``; an aliased node is built once and its expanded size counted."""
        seen = self._built.get(id(node))
        if seen is not None:
            value, size = seen
            self.nodes += size
            self._check_budget(node, path)
            return value
        before = self.nodes
        value = self._build(node, path, depth)
        self._built[id(node)] = (value, self.nodes - before)
        return value

    def _check_budget(self, node: yaml.Node, path: Path_) -> None:
        if self.nodes > MAX_NODES:
            raise self.fail(
                node,
                f"document expands to more than {MAX_NODES:,} nodes (alias bomb?)",
                path,
                "remove the nested anchors/aliases",
            )

    def _build(self, node: yaml.Node, path: Path_, depth: int) -> Any:
        self.nodes += 1
        self._check_budget(node, path)
        if depth > MAX_DEPTH:
            raise self.fail(node, f"document nested deeper than {MAX_DEPTH} levels", path)
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _TAG + "str":
                    raise self.fail(key_node, "mapping keys must be plain strings", path)
                key = key_node.value
                if key == "<<":
                    raise self.fail(key_node, "YAML merge keys ('<<') are not supported", path,
                                    "write the fields out, or use a directory of files")
                if key in out:
                    raise self.fail(key_node, f"duplicate key {key!r}", (*path, key),
                                    "each key may appear once in a mapping")
                self.smap.record((*path, key), self.mark(key_node))
                out[key] = self.build(value_node, (*path, key), depth + 1)
            return out
        if isinstance(node, yaml.SequenceNode):
            items = []
            for i, item in enumerate(node.value):
                self.smap.record((*path, i), self.mark(item))
                items.append(self.build(item, (*path, i), depth + 1))
            return items
        return self.scalar(node, path)

    def scalar(self, node: yaml.Node, path: Path_) -> Any:
        tag = node.tag
        if tag == _TAG + "str":
            return node.value
        if tag == _TAG + "bool" and node.value.lower() not in ("true", "false"):
            return node.value  # YAML 1.2: yes/no/on/off are strings
        if tag == _TAG + "null":
            return None
        try:
            return _constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            raise self.fail(node, f"cannot read value: {exc}", path) from exc


def render_path(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def read_yaml(file: Path, smap: SourceMap, display: str | None = None) -> Any:
    """Read one YAML file into plain data, recording marks in ``smap``."""
    name = display or str(file)
    try:
        size = file.stat().st_size
        if size > MAX_FILE_BYTES:
            raise YamlInputError(Problem(f"file is {size:,} bytes, over the {MAX_FILE_BYTES:,} limit", name))
        raw = file.read_bytes()
    except FileNotFoundError:
        raise YamlInputError(Problem("file not found", name, hint="check the path")) from None
    except IsADirectoryError:
        raise YamlInputError(Problem("is a directory", name)) from None
    except OSError as exc:
        raise YamlInputError(Problem(f"cannot read: {exc.strerror}", name)) from None
    if b"\x00" in raw:
        raise YamlInputError(Problem("binary file (contains NUL bytes), not YAML", name,
                                     hint="pass the inventory .yaml file"))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YamlInputError(Problem(f"not UTF-8 text (byte {exc.start})", name,
                                     hint="save the file as UTF-8")) from None
    if not text.strip() or all(ln.strip().startswith("#") or not ln.strip() for ln in text.splitlines()):
        raise YamlInputError(Problem("file is empty", name, hint="start from `sovkit init` or an example"))
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        msg = " ".join(str(x) for x in (exc.context, exc.problem) if x)
        line = mark.line + 1 if mark else None
        col = mark.column + 1 if mark else None
        raise YamlInputError(Problem(f"YAML syntax error: {msg}", name, line, col)) from None
    except yaml.YAMLError as exc:
        raise YamlInputError(Problem(f"YAML error: {exc}", name)) from None
    except RecursionError:
        raise YamlInputError(Problem(f"document nested deeper than {MAX_DEPTH} levels", name)) from None
    if node is None:
        raise YamlInputError(Problem("file is empty", name))
    return _Builder(name, smap).build(node, ())
