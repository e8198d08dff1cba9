"""A wheel built from the repo installs into a fresh virtualenv and works there, data files included.

Slow (builds the wheel in an isolated build env, then pip-installs it and its
dependencies into a new venv without the test run's site-packages).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import sovkit
from sovkit.inventory import load_inventory
from tests.conftest import INVENTORIES, ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]


def _tracked_copy(dest: Path) -> Path:
    """The repo's tracked files as they are now (no state dirs, caches or build output)."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(".git", ".sovkit", "__pycache__", "dist"))
        return dest
    for rel in filter(None, listed.decode().split("\0")):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("wheel")
    src = _tracked_copy(base / "src")
    out = base / "dist"
    proc = subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(src)],
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (whl,) = out.glob("sovkit-*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    env = tmp_path_factory.mktemp("venv") / "venv"
    # No ensurepip in the venv: the test run's pip installs into it (``pip --python``), which is faster.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True, timeout=1200)
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(env / "bin" / "python"), "install", "-q",
                           "--disable-pip-version-check", str(wheel)], capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return env


def run_venv(env: Path, *args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    """Run from a directory outside the checkout, with nothing of the checkout on PYTHONPATH."""
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    clean.update(COLUMNS="200", NO_COLOR="1", PATH=f"{env / 'bin'}:/usr/bin:/bin")
    return subprocess.run(list(args), capture_output=True, text=True, cwd=cwd, env=clean, timeout=timeout)


def test_wheel_contents(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    for sub in ("policies", "templates"):
        shipped = {n.split(f"sovkit/_data/{sub}/", 1)[1] for n in names if n.startswith(f"sovkit/_data/{sub}/")}
        repo = {p.relative_to(ROOT / sub).as_posix() for p in (ROOT / sub).rglob("*")
                if p.is_file() and "__pycache__" not in p.parts}
        assert shipped, f"{sub}/ missing from the wheel"
        assert shipped <= repo
    assert "sovkit/catalog/accelerators.yaml" in names
    assert "sovkit/catalog/runtimes.yaml" in names
    assert not any(n.startswith("tests/") or "/.sovkit/" in n or "_data/inventories/demo/hosts/" in n for n in names)
    entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "sovkit = sovkit.cli.main:run" in zipfile.ZipFile(wheel).read(entry).decode()


def test_installed_version(venv: Path, tmp_path: Path) -> None:
    proc = run_venv(venv, str(venv / "bin" / "sovkit"), "--version", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"sovkit {sovkit.__version__}\n"


@pytest.mark.parametrize("name", ["kr-telco", "demo"])
def test_installed_validate_on_copied_example(name: str, venv: Path, tmp_path: Path) -> None:
    site = tmp_path / name
    shutil.copytree(INVENTORIES / name, site, ignore=shutil.ignore_patterns(".sovkit", "hosts"))
    proc = run_venv(venv, str(venv / "bin" / "sovkit"), "validate", str(site), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["valid"] is True
    assert data["digest"] == load_inventory(INVENTORIES / name).digest


def test_installed_reports_errors_without_traceback(venv: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((INVENTORIES / "kr-telco" / "site.yaml").read_text().replace("country: KR", "country: KOR"))
    proc = run_venv(venv, str(venv / "bin" / "sovkit"), "validate", str(bad), cwd=tmp_path)
    assert proc.returncode == 1
    assert "[jurisdiction.country]" in proc.stderr and "did you mean 'KR'" in proc.stderr
    assert "Traceback" not in proc.stderr
    usage = run_venv(venv, str(venv / "bin" / "sovkit"), "validate", cwd=tmp_path)
    assert usage.returncode == 2 and "Missing argument" in usage.stderr and "Traceback" not in usage.stderr


def test_installed_package_finds_its_data(venv: Path, tmp_path: Path) -> None:
    code = ("import json, sovkit, sovkit.resources as r; "
            "print(json.dumps([sovkit.__file__, str(r.policies_dir()), str(r.templates_dir())]))")
    proc = run_venv(venv, str(venv / "bin" / "python"), "-c", code, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    module, policies, templates = json.loads(proc.stdout)
    site_packages = Path(module).parent.parent
    assert site_packages.is_relative_to(venv), module
    assert Path(policies) == site_packages / "sovkit" / "_data" / "policies"
    assert Path(templates) == site_packages / "sovkit" / "_data" / "templates"
    assert (Path(templates) / "ansible" / "apply.yml").is_file()


def test_installed_demo_runs_the_main_job(venv: Path, tmp_path: Path) -> None:
    """The README's first command from the wheel alone: every step, the audit pack's strict ML-BOM included.

    The venv starts without pip, which the demo hosts need (they run on this interpreter and the runtime
    role installs wheels with `python -m pip`): first the clear refusal, then pip, then the whole demo.
    """
    sovkit_bin = str(venv / "bin" / "sovkit")
    refused = run_venv(venv, sovkit_bin, "demo", "--workdir", str(tmp_path / "demo"), cwd=tmp_path)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "which has no pip" in refused.stderr and "-m ensurepip" in refused.stderr
    ensure = run_venv(venv, str(venv / "bin" / "python"), "-m", "ensurepip", cwd=tmp_path)
    assert ensure.returncode == 0, ensure.stderr
    proc = run_venv(venv, sovkit_bin, "demo", "--workdir", str(tmp_path / "demo"), cwd=tmp_path, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "10/10" in proc.stdout and "demo complete" in proc.stdout
    report = json.loads((tmp_path / "demo" / "audit-pack" / "report.json").read_text())
    assert report["overview"]["site"] == "demo" and report["policy"]["allowed"] is True
