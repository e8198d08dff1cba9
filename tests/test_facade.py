"""The facade rules (issue 11, point 3): api.__all__ is real and documented; the CLI goes through it.

The rule, for sovkit/cli/*.py: among sovkit's own modules a CLI module imports only ``sovkit.api``,
``sovkit.workspace``, ``sovkit.errors`` (the error boundary catches SovkitError), the ``sovkit`` package
itself (``__version__``) and other ``sovkit.cli`` modules. Every value type the CLI needs is re-exported
by ``sovkit.api``; rich and typer stay under ``sovkit/cli/``.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import sovkit
from sovkit import api
from sovkit.fakes import ScriptedExecutor, SeededSigner

ROOT = Path(sovkit.__file__).parent
ALLOWED = {"sovkit", "sovkit.api", "sovkit.workspace", "sovkit.errors"}


def _sovkit_imports(path: Path) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "sovkit"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "sovkit":
            out.append((node.lineno, node.module))
    return out


def test_every_name_in_all_exists_and_is_documented() -> None:
    assert len(api.__all__) == len(set(api.__all__)), "no duplicates"
    doc = api.__doc__ or ""
    for name in api.__all__:
        assert hasattr(api, name), name
        obj = getattr(api, name)
        if (callable(obj) and not hasattr(obj, "__origin__")) or inspect.ismodule(obj):
            assert inspect.getdoc(obj), f"api.{name} has no docstring"
        else:
            assert f"``{name}``" in doc, f"value api.{name} is not described in the module docstring"


def test_functions_defined_in_the_facade_are_keyword_only() -> None:
    for name in api.__all__:
        obj = getattr(api, name)
        if inspect.isfunction(obj) and obj.__module__ == "sovkit.api":
            positional = [p.name for p in inspect.signature(obj).parameters.values()
                          if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
            assert not positional, f"api.{name} takes {positional} positionally"


def test_cli_imports_only_the_facade() -> None:
    bad = [f"{p.name}:{line}: {mod}" for p in sorted((ROOT / "cli").glob("*.py"))
           for line, mod in _sovkit_imports(p)
           if mod not in ALLOWED and not mod.startswith("sovkit.cli")]
    assert not bad, "CLI modules must import the library through sovkit.api:\n" + "\n".join(bad)


def test_the_import_rule_catches_a_violation(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("from sovkit.plan.diff import diff\nimport sovkit.state.store\nfrom sovkit import api\n")
    assert [m for _, m in _sovkit_imports(probe) if m not in ALLOWED] == ["sovkit.plan.diff", "sovkit.state.store"]


@pytest.mark.parametrize("package", ["rich", "typer"])
def test_presentation_libraries_only_under_cli(package: str) -> None:
    users = []
    for path in sorted(ROOT.rglob("*.py")):
        if "cli" in path.relative_to(ROOT).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            users += [str(path.relative_to(ROOT)) for n in names if n.split(".")[0] == package]
    assert not users, users


def test_adapters_are_wired_once_in_the_workspace() -> None:
    """AnsibleRunnerExecutor is constructed in one place (Workspace.executor), nowhere in api or workflow."""
    sites = [str(p.relative_to(ROOT)) for p in sorted(ROOT.rglob("*.py"))
             if "AnsibleRunnerExecutor()" in p.read_text()]
    assert sites == ["workspace.py"]


def test_a_workspace_takes_fakes(tmp_path: Path) -> None:
    from tests.sitefactory import make_site

    site = make_site(tmp_path)
    executor, signer = ScriptedExecutor(), SeededSigner()
    ws = api.open_workspace(inventory=site.path, executor=executor, signer=signer)
    assert ws.executor is executor and ws.signer is signer
    swapped = ws.using(executor=ScriptedExecutor())
    assert swapped.executor is not executor and swapped.signer is signer and swapped.store is ws.store
