"""Run the pack's Rego unit tests (``*_test.rego``, rules named ``test_*``) the way `opa test` does."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sovkit.errors import PolicyError
from sovkit.policy.embedded import run_rego_tests
from sovkit.policy.pack import PolicyPack, load_pack, package_of
from sovkit.resources import policies_dir

_TEST_RULE_RE = re.compile(r"^(test_[A-Za-z0-9_]*)\b", re.MULTILINE)


@dataclass(frozen=True)
class RegoTestResult:
    file: str
    package: str
    name: str
    passed: bool
    error: str | None = None


def discover(tests: dict[str, str]) -> dict[str, tuple[str, list[str]]]:
    """``{file: (package, [test rule names in file order])}``."""
    found: dict[str, tuple[str, list[str]]] = {}
    for name, source in sorted(tests.items()):
        rules = list(dict.fromkeys(_TEST_RULE_RE.findall(source)))
        found[name] = (package_of(source, name), rules)
    return found


def run_pack_tests(pack: PolicyPack, only: set[str] | None = None) -> list[RegoTestResult]:
    """Run every test in ``pack.tests`` (or the files in ``only``); a module that does not compile is an error."""
    files = discover({n: s for n, s in pack.tests.items() if only is None or n in only})
    by_package: dict[str, list[str]] = {}
    for pkg, rules in files.values():
        by_package.setdefault(pkg, []).extend(r for r in rules if r not in by_package.get(pkg, []))
    modules = {**pack.modules, **pack.tests}
    outcomes = run_rego_tests(modules, pack.data, by_package)
    return [RegoTestResult(f, pkg, r, outcomes[(pkg, r)].passed, outcomes[(pkg, r)].error)
            for f, (pkg, rules) in files.items() for r in rules]


def run_tests(directory: Path | None = None) -> list[RegoTestResult]:
    """Tests of the shipped pack, or of ``directory`` (operator modules) evaluated with the shipped pack."""
    if directory is None or directory.resolve() == policies_dir().resolve():
        return run_pack_tests(load_pack())
    pack = load_pack(directory)
    own = {n for n in pack.tests if n.startswith("custom/")}
    if not own:
        raise PolicyError(f"no *_test.rego files under {directory}", "name Rego test files <something>_test.rego")
    return run_pack_tests(pack, own)
