"""Each security building block exists once, in sovkit/signing/ (issue 11): a scan of the package source.

- canonical JSON (sorted keys, compact separators) is encoded only by signing/canonical.py;
- cryptography.hazmat is imported only by signing/keys.py;
- signing/ imports nothing of sovkit but errors, identifiers, digest and itself (it is the lowest layer).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "sovkit"
CANONICAL = PACKAGE / "signing" / "canonical.py"
KEYS = PACKAGE / "signing" / "keys.py"
#: the NPU simulator is copied onto hosts and runs standalone (standard library only, no sovkit imports): its
#: image header is the simulated vendor's format, not a document sovkit signs or digests
STANDALONE = PACKAGE / "simulator"
SIGNING_MAY_IMPORT = {"sovkit.errors", "sovkit.identifiers", "sovkit.digest"}


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


def _is_canonical_dump(node: ast.Call) -> bool:
    """json.dumps/json.dump(..., sort_keys=True, separators=(",", ":"))."""
    kw = {k.arg: k.value for k in node.keywords if k.arg}
    sort = kw.get("sort_keys")
    seps = kw.get("separators")
    return (isinstance(sort, ast.Constant) and sort.value is True and isinstance(seps, ast.Tuple)
            and [getattr(e, "value", None) for e in seps.elts] == [",", ":"])


def _imports(tree: ast.Module) -> list[str]:
    out: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return out


def test_canonical_json_is_encoded_once() -> None:
    text = 'sort_keys=True, separators=(",", ":")'
    by_text = [p for p in _sources() if text in p.read_text(encoding="utf-8")]
    by_ast = [p for p in _sources() if not p.is_relative_to(STANDALONE)
              and any(isinstance(n, ast.Call) and _is_canonical_dump(n) for n in ast.walk(_tree(p)))]
    assert by_ast == [CANONICAL], by_ast
    assert [p for p in by_text if not p.is_relative_to(STANDALONE)] == [CANONICAL], by_text


def test_cryptography_hazmat_only_in_signing_keys() -> None:
    users = [p for p in _sources() if any(m.startswith("cryptography.hazmat") for m in _imports(_tree(p)))]
    assert users == [KEYS], users


@pytest.mark.parametrize("path", sorted((PACKAGE / "signing").glob("*.py")), ids=lambda p: p.name)
def test_signing_imports_nothing_above_it(path: Path) -> None:
    modules = {m for m in _imports(_tree(path)) if m == "sovkit" or m.startswith("sovkit.")}
    allowed = {m for m in modules if m.startswith("sovkit.signing")
               or any(m == a or m.startswith(a + ".") for a in SIGNING_MAY_IMPORT)}
    assert modules == allowed, sorted(modules - allowed)


def test_the_scan_sees_a_copy() -> None:
    """The canonical-JSON detector finds a copy (so the first test cannot pass by detecting nothing)."""
    call = ast.parse('json.dumps(x, sort_keys=True, separators=(",", ":"))').body[0]
    assert isinstance(call, ast.Expr) and isinstance(call.value, ast.Call) and _is_canonical_dump(call.value)
