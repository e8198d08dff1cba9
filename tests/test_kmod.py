"""The simulated modprobe/modinfo, run as real processes from where they are installed (``{root}/bin``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sovkit.simulator.drivers import hold, install_kmod, install_module, load_module, loaded_version


def _run(root: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(root / "bin" / argv[0]), *argv[1:]], capture_output=True, text=True, check=False)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    install_kmod(tmp_path, interpreter=sys.executable)
    return tmp_path


def test_load_reads_the_installed_module_and_reload_activates_a_new_version(root: Path) -> None:
    install_module(root, "rebellions", "1.0")
    assert loaded_version(root, "rebellions") is None
    assert _run(root, "modprobe", "rebellions").returncode == 0
    assert (root / "sys/module/rebellions/version").read_text() == "1.0\n"

    install_module(root, "rebellions", "1.1")  # the package is upgraded: the loaded module stays the old one
    info = _run(root, "modinfo", "-F", "version", "rebellions")
    assert (info.returncode, info.stdout) == (0, "1.1\n")
    assert _run(root, "modprobe", "rebellions").returncode == 0
    assert loaded_version(root, "rebellions") == "1.0", "modprobe of a loaded module must not reload it"
    assert _run(root, "modprobe", "-r", "rebellions").returncode == 0
    assert not (root / "sys/module/rebellions").exists()
    assert _run(root, "modprobe", "rebellions").returncode == 0
    assert loaded_version(root, "rebellions") == "1.1"


def test_unload_refuses_while_a_holder_exists(root: Path) -> None:
    load_module(root, "rngd", "2025.3.0")
    hold(root, "rngd")
    r = _run(root, "modprobe", "-r", "rngd")
    assert (r.returncode, r.stderr.strip()) == (1, "modprobe: FATAL: Module rngd is in use.")
    assert loaded_version(root, "rngd") == "2025.3.0"
    hold(root, "rngd", held=False)
    assert _run(root, "modprobe", "-r", "rngd").returncode == 0
    assert loaded_version(root, "rngd") is None
    assert _run(root, "modprobe", "-r", "rngd").returncode == 0, "unloading an unloaded module succeeds"


def test_missing_or_malformed_module_and_bad_usage(root: Path) -> None:
    r = _run(root, "modprobe", "nvidia")
    assert r.returncode == 1 and "Module nvidia not found" in r.stderr
    assert not (root / "sys/module/nvidia").exists()
    assert _run(root, "modinfo", "-F", "version", "nvidia").returncode == 1
    (root / "var/lib/npu-sim/modules").mkdir(parents=True, exist_ok=True)
    (root / "var/lib/npu-sim/modules/nvidia.json").write_text('{"name": "nvidia", "version": "$(id)"}')
    r = _run(root, "modprobe", "nvidia")
    assert r.returncode == 1 and "is not" in r.stderr
    assert not (root / "sys/module/nvidia").exists()
    for argv in (("modprobe",), ("modprobe", "-x", "nvidia"), ("modinfo", "nvidia"), ("modprobe", "../etc")):
        assert _run(root, *argv).returncode == 2, argv


def test_the_tools_act_under_their_own_root_only(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for r in (a, b):
        install_kmod(r, interpreter=sys.executable)
    install_module(a, "rebellions", "1.0")
    install_module(b, "rebellions", "2.0")
    assert _run(a, "modprobe", "rebellions").returncode == 0
    assert (loaded_version(a, "rebellions"), loaded_version(b, "rebellions")) == ("1.0", None)


def test_a_module_loaded_at_boot_without_a_package_file_can_be_reloaded(root: Path) -> None:
    """The simulator installer marks the vendor module loaded (sysfs only); the firmware procedure's
    ``modprobe -r`` then ``modprobe`` must bring the same version back."""
    (root / "sys/module/rebellions").mkdir(parents=True)
    (root / "sys/module/rebellions/version").write_text("3.0.0\n")
    assert _run(root, "modprobe", "-r", "rebellions").returncode == 0
    assert loaded_version(root, "rebellions") is None
    assert _run(root, "modprobe", "rebellions").returncode == 0
    assert loaded_version(root, "rebellions") == "3.0.0"
