"""Safe YAML reading that keeps a line and column for every field.

We stream PyYAML's safe parser events (C-accelerated when available) and build
plain Python data ourselves, recording where each field came from, so every
later error can name ``file:line:col``. The builder is also where hostile input
is refused: duplicate keys, non-string keys, unsupported tags, more than one
document, documents nested too deeply, and alias bombs ("billion laughs") that
would expand to far more nodes than were written — or repeat far more text than
the file holds (one alias of a long string is one node, but all of its bytes).

Scalars follow YAML 1.2's core schema for booleans: only ``true``/``false``
are booleans, so a country code ``NO`` stays the string ``"NO"``.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from sovkit.errors import Problem

try:
    _Loader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML without libyaml
    _Loader = yaml.SafeLoader

MAX_FILE_BYTES = 256 * 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 5_000_000
ALIAS_FREE_NODES = 200_000  # aliases may expand a document to this many nodes
ALIAS_FACTOR = 4  # ... or to this many times the nodes written out, whichever is more
# Nodes are not the only cost: one alias of a 1 MB string is one node but 1 MB more for everything that copies
# the data afterwards (validation, the canonical digest, Ansible variables). So aliases are budgeted in text
# too: the characters of scalars and keys an alias brings in again.
ALIAS_FREE_CHARS = 8 * 1024 * 1024  # aliases may repeat this much text
ALIAS_CHARS_FACTOR = 4  # ... or this many times the file's own size, whichever is more
MAX_ALIAS_CHARS = 64 * 1024 * 1024  # ... but never more than this

Path_ = tuple[str | int, ...]


class Mark(NamedTuple):
    """Where a value was written (1-based line and column). A tuple: one is made per node."""

    file: str
    line: int
    column: int


class SourceMap:
    """Maps a field path (``("hosts", 3, "address")``) to where it was written."""

    def __init__(self) -> None:
        self._marks: dict[Path_, Mark] = {}

    def record(self, path: Path_, mark: Mark) -> None:
        self._marks.setdefault(path, mark)

    def items(self) -> list[tuple[Path_, Mark]]:
        return list(self._marks.items())

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
_SCALAR_TAGS = frozenset(_TAG + t for t in ("str", "int", "float", "bool", "null", "timestamp"))
_COLLECTION_TAGS = {_TAG + "map", _TAG + "seq"}


@dataclass
class _Frame:
    """An open mapping or sequence while streaming events."""

    value: dict[str, Any] | list[Any]
    path: Path_
    anchor: str | None
    start_nodes: int
    start_chars: int
    key: str | None = None


class _Builder:
    """Build plain data straight from parser events, with an explicit stack.

    Streaming events (instead of composing a node graph) is what makes hostile
    input cheap to refuse: libyaml's composer recurses in C and crashes the
    process on a document nested 100,000 levels deep, while here the depth
    check fires at level ``MAX_DEPTH + 1`` before the rest is even scanned.
    An anchor is registered only when its node is complete, so a recursive
    alias is an error, and every alias adds its expanded size to the budget.
    """

    def __init__(self, file: str, smap: SourceMap, loader: Any, text_size: int = 0) -> None:
        self.file = file
        self.smap = smap
        self.loader = loader
        self.written = 0  # nodes written out in the text
        self.expanded = 0  # nodes after expanding aliases
        self.chars = 0  # characters of scalars and keys after expanding aliases
        self.alias_chars = 0  # ... of which aliases brought in
        self.char_budget = min(MAX_ALIAS_CHARS, max(ALIAS_FREE_CHARS, ALIAS_CHARS_FACTOR * text_size))
        self.anchors: dict[str, tuple[Any, int, int]] = {}
        self.stack: list[_Frame] = []
        self._tags: dict[tuple[str, Any], str] = {}

    def mark(self, event: Any) -> Mark:
        return Mark(self.file, event.start_mark.line + 1, event.start_mark.column + 1)

    def fail(self, event: Any, message: str, path: Path_, hint: str | None = None) -> YamlInputError:
        m = self.mark(event)
        return YamlInputError(Problem(message, m.file, m.line, m.column, render_path(path), hint))

    def budget(self) -> int:
        return min(MAX_NODES, max(ALIAS_FREE_NODES, ALIAS_FACTOR * self.written))

    def run(self) -> Any:
        """The single document's data (``None`` for an empty one)."""
        root: Any = None
        documents = 0
        get = self.loader.get_event
        while self.loader.check_event():
            event = get()
            if isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    raise self.fail(event, "more than one YAML document in the file ('---')", (),
                                    "keep one document per file; split a site over several files in a directory")
            elif isinstance(event, (yaml.StreamStartEvent, yaml.StreamEndEvent, yaml.DocumentEndEvent)):
                continue
            else:
                value, done = self.step(event)
                if done:
                    root = value
        return root

    def _path(self) -> Path_:
        """The field path of the node about to be attached."""
        if not self.stack:
            return ()
        top = self.stack[-1]
        if isinstance(top.value, list):
            return (*top.path, len(top.value))
        return (*top.path, top.key if top.key is not None else "?")

    def step(self, event: Any) -> tuple[Any, bool]:
        """Handle one node event; returns (value, True) when the root node is complete."""
        top = self.stack[-1] if self.stack else None
        if top is not None and isinstance(top.value, dict) and top.key is None:
            if isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                return self.close(event)
            self.take_key(event, top)
            return None, False
        if isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            return self.close(event)
        path = self._path()
        if top is not None and isinstance(top.value, list):
            self.smap.record(path, self.mark(event))
        if isinstance(event, yaml.AliasEvent):
            found = self.anchors.get(str(event.anchor))
            if found is None:
                raise self.fail(event, f"alias *{event.anchor} has no complete anchor &{event.anchor} before it",
                                path, "define the anchor first; an alias cannot refer to its own parent")
            value, size, chars = found
            self.expanded += size
            self.check_budget(event, path)
            self.chars += chars
            self.alias_chars += chars
            if self.alias_chars > self.char_budget:
                # refused here, at the alias, before anything downstream copies the repeated text
                raise self.fail(
                    event,
                    f"aliases repeat more than {self.char_budget:,} characters of text (*{event.anchor} alone "
                    f"repeats {chars:,}); the document would expand far beyond the file's size",
                    path,
                    "write the value out where it is needed, or alias smaller values",
                )
            return self.attach(value)
        self.written += 1
        self.expanded += 1
        self.check_budget(event, path)
        anchor = getattr(event, "anchor", None)
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            if len(self.stack) >= MAX_DEPTH:
                raise self.fail(event, f"document nested deeper than {MAX_DEPTH} levels", path,
                                "an inventory is never this deep; is this the right file?")
            is_map = isinstance(event, yaml.MappingStartEvent)
            if event.tag not in (None, "!") and event.tag not in _COLLECTION_TAGS:
                raise self.fail(event, f"unsupported YAML tag {event.tag}", path, "remove the tag")
            self.stack.append(_Frame({} if is_map else [], path, anchor, self.expanded - 1, self.chars))
            return None, False
        value = self.scalar(event, path)
        self.chars += len(event.value)
        if anchor is not None:
            self.anchors[anchor] = (value, 1, len(event.value))
        return self.attach(value)

    def take_key(self, event: Any, top: _Frame) -> None:
        if isinstance(event, yaml.ScalarEvent) and event.value == "<<" and event.implicit[0]:
            raise self.fail(event, "YAML merge keys ('<<') are not supported", top.path,
                            "write the fields out, or use a directory of files")
        if not isinstance(event, yaml.ScalarEvent) or self.tag_of(event) != _TAG + "str":
            raise self.fail(event, "mapping keys must be plain strings", top.path,
                            "quote the key or fix the indentation")
        key = event.value
        assert isinstance(top.value, dict)
        if key in top.value:
            raise self.fail(event, f"duplicate key {key!r}", (*top.path, key), "each key may appear once in a mapping")
        self.written += 1
        self.chars += len(key)
        self.smap.record((*top.path, key), self.mark(event))
        top.key = key

    def close(self, event: Any) -> tuple[Any, bool]:
        frame = self.stack.pop()
        if frame.anchor is not None:
            self.anchors[frame.anchor] = (frame.value, self.expanded - frame.start_nodes,
                                          self.chars - frame.start_chars)
        return self.attach(frame.value)

    def attach(self, value: Any) -> tuple[Any, bool]:
        if not self.stack:
            return value, True
        top = self.stack[-1]
        if isinstance(top.value, list):
            top.value.append(value)
        else:
            assert top.key is not None
            top.value[top.key] = value
            top.key = None
        return None, False

    def check_budget(self, event: Any, path: Path_) -> None:
        if self.expanded > ALIAS_FREE_NODES and self.expanded > self.budget():
            raise self.fail(
                event,
                f"aliases expand the document to more than {self.budget():,} nodes (alias bomb?)",
                path,
                "remove the nested anchors/aliases",
            )

    def tag_of(self, event: Any) -> str:
        tag: str | None = event.tag
        if tag is None or tag == "!":
            key = (event.value, event.implicit)
            resolved = self._tags.get(key)
            if resolved is None:  # keys and many values repeat; resolving runs several regexes
                resolved = self.loader.resolve(yaml.ScalarNode, event.value, event.implicit)
                if len(self._tags) < 100_000:
                    self._tags[key] = resolved
            return str(resolved)
        return tag

    def scalar(self, event: Any, path: Path_) -> Any:
        tag = self.tag_of(event)
        if tag == _TAG + "str":
            return event.value
        if tag == _TAG + "bool" and event.value.lower() not in ("true", "false"):
            return event.value  # YAML 1.2: yes/no/on/off are strings
        if tag == _TAG + "null":
            return None
        if tag not in _SCALAR_TAGS:
            raise self.fail(event, f"unsupported YAML tag {tag}", path, "remove the tag; write a plain value")
        node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
        try:
            # Call the constructor directly: construct_object() would cache every node forever.
            return _constructor.yaml_constructors[tag](_constructor, node)
        except (yaml.YAMLError, ValueError) as exc:
            raise self.fail(event, f"cannot read value {event.value!r}: {exc}", path) from None


def render_path(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def read_yaml(file: Path, smap: SourceMap, display: str | None = None) -> Any:
    """Read one YAML file into plain data, recording marks in ``smap``."""
    name = display or str(file)
    try:
        info = file.stat()
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError
        if not stat.S_ISREG(info.st_mode):  # /dev/zero or a FIFO would never end (or never start)
            raise YamlInputError(Problem("not a regular file", name, hint="pass the inventory .yaml file"))
        if info.st_size > MAX_FILE_BYTES:
            raise YamlInputError(Problem(f"file is {info.st_size:,} bytes, over the {MAX_FILE_BYTES:,} limit",
                                         name))
        with file.open("rb") as fh:
            # read(MAX_FILE_BYTES + 1) would allocate the whole limit up front (256 MB for any file); read what
            # stat() saw, then in chunks only if the file grew since
            raw = fh.read(info.st_size + 1)
            while len(raw) <= MAX_FILE_BYTES:
                more = fh.read(min(1024 * 1024, MAX_FILE_BYTES + 1 - len(raw)))
                if not more:
                    break
                raw += more
        if len(raw) > MAX_FILE_BYTES:
            raise YamlInputError(Problem(f"file is over the {MAX_FILE_BYTES:,} byte limit", name))
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
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise YamlInputError(Problem(f"not UTF-8 text (byte {exc.start})", name,
                                     hint="save the file as UTF-8")) from None
    if not text.strip() or all(ln.strip().startswith("#") or not ln.strip() for ln in text.splitlines()):
        raise YamlInputError(Problem("file is empty", name, hint="start from `sovkit init` or an example"))
    loader = _Loader(text)
    try:
        data = _Builder(name, smap, loader, len(text)).run()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        msg = " ".join(str(x) for x in (exc.context, exc.problem) if x)
        if exc.context_mark is not None and "end of stream" in str(exc.problem):
            mark = exc.context_mark  # an unclosed quote or bracket: point at where it was opened
        line = mark.line + 1 if mark else None
        col = mark.column + 1 if mark else None
        if "nesting depth" in msg:  # PyYAML >= 6.0.3 refuses deep flow nesting itself, ahead of our own limit
            raise YamlInputError(Problem(f"document nested deeper than {MAX_DEPTH} levels", name, line, col,
                                         hint="an inventory is never this deep; is this the right file?")) from None
        raise YamlInputError(Problem(f"YAML syntax error: {msg}", name, line, col)) from None
    except yaml.YAMLError as exc:
        raise YamlInputError(Problem(f"YAML error: {exc}", name)) from None
    finally:
        loader.dispose()
    if data is None:
        raise YamlInputError(Problem("file is empty (no YAML document)", name, 1, 1))
    smap.record((), Mark(name, 1, 1))
    return data
