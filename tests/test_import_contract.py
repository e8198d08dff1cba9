"""The layer contract (pyproject's [tool.importlinter]) holds, and breaks when a lower layer imports a higher one.

`lint-imports` analyses whichever `sovkit` is first on PYTHONPATH, so the breaking cases run it over a copy of
the package with one import added.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([exe, "--no-cache", "--config", str(ROOT / "pyproject.toml")], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)


def copy_with(tmp: Path, module: str, line: str) -> Path:
    """A copy of the package in which ``module`` (a path under sovkit/) gains ``line`` at the top."""
    shutil.copytree(ROOT / "sovkit", tmp / "sovkit", ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp / "sovkit" / module
    target.write_text(line + "\n" + target.read_text())
    return tmp


def test_the_package_keeps_its_layers() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(("module", "line", "names"), [
    # signing is the lowest layer above errors: it must not reach up to the inventory
    ("signing/canonical.py", "import sovkit.inventory.models  # noqa",
     "sovkit.signing is not allowed to import sovkit.inventory"),
    # a feature must not reach the facade (the audit -> api cycle this contract was made to stop)
    ("audit/collect.py", "import sovkit.api  # noqa", "sovkit.audit is not allowed to import sovkit.api"),
    # presentation stays in the CLI
    ("state/store.py", "import rich  # noqa", "sovkit.state is not allowed to import rich"),
])
def test_an_upward_import_breaks_the_contract(tmp_path: Path, module: str, line: str, names: str) -> None:
    result = lint_imports(copy_with(tmp_path, module, line))
    assert result.returncode != 0
    assert names in result.stdout, result.stdout


def package_graph(root: Path) -> dict[str, set[str]]:
    """sovkit's top-level packages and modules -> the others they import (from the source, no import run)."""
    import ast

    edges: dict[str, set[str]] = {}
    for f in (root / "sovkit").rglob("*.py"):
        src = f.relative_to(root / "sovkit").parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sovkit"):
                names = [f"sovkit.{a.name}" for a in node.names] if node.module == "sovkit" else [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("sovkit.")]
            for name in names:
                target = name.split(".")[1]
                is_part = (root / "sovkit" / target).is_dir() or (root / "sovkit" / f"{target}.py").is_file()
                if target != src and is_part:  # `from sovkit import __version__` names no package
                    edges.setdefault(src, set()).add(target)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    def reaches(a: str, b: str) -> bool:
        seen, todo = set(), [a]
        while todo:
            for n in edges.get(todo.pop(), ()):
                if n == b:
                    return True
                if n not in seen:
                    seen.add(n)
                    todo.append(n)
        return False

    return sorted((a, b) for a, targets in edges.items() for b in targets if reaches(b, a))


def test_no_package_level_import_cycle() -> None:
    """Siblings in one layer (`:` in the contract) may import each other, but never both ways round."""
    assert cycles(package_graph(ROOT)) == []


def test_the_cycle_check_finds_one(tmp_path: Path) -> None:
    copy_with(tmp_path, "state/store.py", "import sovkit.inventory.models  # noqa")
    models = tmp_path / "sovkit" / "inventory" / "models.py"
    models.write_text("import sovkit.state.store  # noqa\n" + models.read_text())
    assert ("inventory", "state") in cycles(package_graph(tmp_path))
