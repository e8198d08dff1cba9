"""Low items of the review: clear messages instead of an allocator abort, a damaged plan called a damaged plan,
and the demo working with SOVKIT_KEY_PASSPHRASE set."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from sovkit.demo import prepare_demo
from tests.conftest import INVENTORIES, ROOT, CliResult, run_cli
from tests.sitefactory import make_site

DEMO_SITE = INVENTORIES / "demo" / "site.yaml"
ADDRESS_SPACE = 4 * 1024**3  # plenty for Python and sovkit; regopy's allocator still cannot start under it


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def _run_limited(*args: str) -> CliResult:
    """`python -m sovkit ARGS` under `ulimit -v` (RLIMIT_AS set in the child only)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", "NO_COLOR": "1"}
    proc = subprocess.run([sys.executable, "-m", "sovkit", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=600, preexec_fn=_limited)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def test_validate_runs_under_an_address_space_limit() -> None:
    """validate evaluates no policy, so it must not load regopy at all (it used to abort: snmalloc, rc 134)."""
    result = _run_limited("validate", str(DEMO_SITE))
    assert result.code == 0, (result.code, result.text)
    assert "snmalloc" not in result.text


def test_check_under_an_address_space_limit_says_why_and_what_to_do() -> None:
    result = _run_limited("check", str(DEMO_SITE))
    assert result.code == 1, (result.code, result.text)  # a SovkitError, not SIGABRT (-6) / 134
    assert "ulimit -v" in result.err and "--opa-url" in result.err, result.err
    assert "Traceback" not in result.text and "Failed to initialise snmalloc" not in result.text


def test_cli_import_does_not_load_regopy() -> None:
    code = "import sys, sovkit.cli.main, sovkit.api; assert 'regopy' not in sys.modules, 'regopy imported'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert proc.returncode == 0, proc.stderr


def test_truncated_plan_is_reported_as_a_damaged_plan(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    key = site.root / ".sovkit" / "keys" / "operator.key"
    env = {"SOVKIT_SIGNING_KEY": str(key)}
    plan = site.root / "site.plan"
    made = run_cli("plan", site.path, "-o", plan, cwd=site.root, env=env)
    assert made.code == 0, made.text
    whole = plan.read_bytes()
    state = site.root / ".sovkit" / "state.json"
    before = state.read_bytes() if state.exists() else None
    for cut in (len(whole) // 2, 40, len(whole) - 3):
        plan.write_bytes(whole[:cut])
        result = run_cli("apply", plan, cwd=site.root, env=env)
        assert result.code == 1, result.text
        assert "damaged or truncated" in result.err and "site.plan" in result.err, result.err
        assert "inventory" not in result.err and "YAML" not in result.err, result.err
    assert (state.read_bytes() if state.exists() else None) == before  # nothing was applied or recorded


@pytest.fixture
def demo_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SOVKIT_KEY_PASSPHRASE", "demo-secret")
    prepare_demo(tmp_path / "demo")
    return tmp_path / "demo"


def test_demo_key_follows_the_passphrase_and_step_2_passes(demo_dir: Path) -> None:
    """`SOVKIT_KEY_PASSPHRASE=x sovkit demo` failed at step 2 (check): the key it wrote could not be loaded."""
    key = demo_dir / ".sovkit" / "keys" / "operator.key"
    env = {"SOVKIT_SIGNING_KEY": str(key), "SOVKIT_KEY_PASSPHRASE": "demo-secret"}
    result = run_cli("check", demo_dir / "site.yaml", cwd=demo_dir, env=env)
    assert result.code == 0, result.text
    assert "not attested" not in result.err
    assert b"ENCRYPTED" in key.read_bytes()[:64]  # the operator asked for encrypted keys: the demo's is one


def test_unencrypted_key_with_the_passphrase_variable_set_still_signs(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A demo from an earlier run (unencrypted key) rerun with the variable set: the key needs no passphrase."""
    monkeypatch.delenv("SOVKIT_KEY_PASSPHRASE", raising=False)
    demo = tmp_path / "demo"
    prepare_demo(demo)
    key = demo / ".sovkit" / "keys" / "operator.key"
    assert b"ENCRYPTED" not in key.read_bytes()[:64]
    env = {"SOVKIT_SIGNING_KEY": str(key), "SOVKIT_KEY_PASSPHRASE": "x"}
    result = run_cli("check", demo / "site.yaml", cwd=demo, env=env)
    assert result.code == 0, result.text
