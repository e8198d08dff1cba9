"""Shared test helpers: run the real CLI in-process or as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servingkit import stop_all

pytest_plugins = ["tests.conftest_hostlab", "tests.pgserver"]
ROOT = Path(__file__).resolve().parent.parent
INVENTORIES = ROOT / "inventories"


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


def run_cli(*args: str | os.PathLike[str], cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 600, input: str | None = None) -> CliResult:
    """Run ``python -m sovkit ARGS`` as a separate process (true exit code, real stderr)."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", "NO_COLOR": "1", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "sovkit", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, env=full_env, timeout=timeout, input=input,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., CliResult]:
    """Run the CLI in-process through its real error boundary (fast; same code path as the console script)."""
    from sovkit.cli.main import main

    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("NO_COLOR", "1")

    def invoke(*args: str | os.PathLike[str]) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return invoke


@pytest.fixture
def cli_env(cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch) -> Callable[..., CliResult]:
    """``run_cli``'s ``(*args, env=...)`` on the in-process ``cli``, ``env`` set for that one command only: the same
    ``main()`` and error boundary without an interpreter start and sovkit's imports (about 2.5 s a command)."""

    def invoke(*args: str | os.PathLike[str], env: dict[str, str] | None = None) -> CliResult:
        with monkeypatch.context() as m:
            for k, v in (env or {}).items():
                m.setenv(k, v)
            return cli(*args)

    return invoke


@pytest.fixture(autouse=True)
def _stop_serving(request: pytest.FixtureRequest) -> Iterator[None]:
    """Serving processes a test's apply started under its tmp_path are stopped when the test ends (ports free)."""
    yield
    path = getattr(request.node, "funcargs", {}).get("tmp_path")
    if isinstance(path, Path):
        stop_all(path)


@pytest.fixture(autouse=True, scope="session")
def _stop_all_serving(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """And whatever module- or session-scoped sites started, when the session ends."""
    yield
    stop_all(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def applied_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo site (two local hosts) applied once per session; tests work on copies (copytree, symlinks=True)
    and must not change it. A copy's recorded paths and ``current`` links still point into this one: a test that
    runs Ansible against those paths needs its own applied site."""
    from tests.sitefactory import make_site

    site = make_site(tmp_path_factory.mktemp("applied-demo"))
    r = run_cli("apply", site.path, "--auto-approve")
    assert r.code == 0, r.text
    return site.root
