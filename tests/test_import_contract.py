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
