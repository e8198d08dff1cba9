"""sovkit's own wheels in the bundle: built/downloaded through pip once, then served from the cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from sovkit.bundle import wheels
from sovkit.bundle.bootstrap import host_platform
from sovkit.errors import BundleError


def test_wheels_are_cached_by_their_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def fake_pip(args: list[str], what: str) -> None:
        calls.append(args)
        out = Path(args[-1])
        name = "sovkit-0.1.0-py3-none-any.whl" if args[0] == "wheel" else "pydantic-2.0-py3-none-any.whl"
        (out / name).write_bytes(b"PK fake wheel")

    monkeypatch.setattr(wheels, "_pip", fake_pip)
    first, target = wheels.self_wheels(tmp_path / "cache")
    assert [c[0] for c in calls] == ["wheel", "download"]
    assert calls[0][1:3] == ["--no-deps", str(wheels._SRC)]
    assert "--only-binary=:all:" in calls[1] and any(r.startswith("pydantic") for r in calls[1])
    assert {s.path for s in first} == {"wheels/sovkit-0.1.0-py3-none-any.whl", "wheels/pydantic-2.0-py3-none-any.whl"}
    assert {s.kind for s in first} == {"wheel"}
    assert target == wheels.resolve_target() and target.glibc is None, "this machine, pure wheels need no glibc"
    assert not any(a.startswith("--platform") or a == "--abi" for a in calls[1]), "this machine: pip's own tags"
    again, _ = wheels.self_wheels(tmp_path / "cache")
    assert len(calls) == 2, "a second bundle must not call pip again"
    assert [s.file for s in again] == [s.file for s in first]


def test_requirements_leave_out_extras() -> None:
    reqs = wheels.requirements()
    assert any(r.startswith("pydantic") for r in reqs)
    assert not any("extra ==" in r or r.startswith("pytest") for r in reqs)


def test_pip_failure_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(args: list[str], what: str) -> None:
        raise BundleError(f"pip could not {what}: no network", "pass --no-self")

    monkeypatch.setattr(wheels, "_pip", broken)
    with pytest.raises(BundleError, match="pip could not build the sovkit wheel"):
        wheels.self_wheels(tmp_path / "cache")
    assert not any((tmp_path / "cache").glob("*/.complete"))


def test_another_platform_uses_pips_cross_download_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def fake_pip(args: list[str], what: str) -> None:
        calls.append(args)
        out = Path(args[-1])
        for name in (["sovkit-0.1.0-py3-none-any.whl"] if args[0] == "wheel" else
                     ["pydantic_core-2.0-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl",
                      "regopy-1.5-cp311-cp311-manylinux_2_34_aarch64.whl", "pyyaml-6.0-py3-none-any.whl"]):
            (out / name).write_bytes(b"PK fake wheel")

    monkeypatch.setattr(wheels, "_pip", fake_pip)
    other = "linux/x86_64" if host_platform() == "linux/aarch64" else "linux/aarch64"
    machine = other.split("/")[1]
    _, target = wheels.self_wheels(tmp_path / "cache", wheels.resolve_target(other, "3.11"))
    download = calls[-1]
    platforms = [download[i + 1] for i, a in enumerate(download) if a == "--platform"]
    assert platforms[0] == f"manylinux_2_34_{machine}" and f"manylinux2014_{machine}" in platforms
    assert f"manylinux_2_17_{machine}" in platforms and not any("_2_35_" in p for p in platforms)
    assert download[download.index("--python-version") + 1] == "3.11"
    assert download[download.index("--implementation") + 1] == "cp"
    assert download[download.index("--abi") + 1] == "cp311"
    assert target.platform == other and target.python == "3.11"
    assert target.glibc == "2.34", "the oldest glibc every wheel runs on: regopy's manylinux_2_34"
    wheels.self_wheels(tmp_path / "cache", wheels.resolve_target(other, "3.12"))
    assert calls[-1][0] == "download" and calls[-1][calls[-1].index("--abi") + 1] == "cp312", \
        "another Python is another cache entry"


@pytest.mark.parametrize(("platform", "python", "message"), [
    ("windows/x86_64", None, "--platform 'windows/x86_64' is not a platform sovkit bundles wheels for"),
    ("linux/sparc", None, "--platform 'linux/sparc' is not a platform"),
    ("aarch64", None, "--platform 'aarch64' is not a platform"),
    (None, "3.10", "--python '3.10' is not a Python sovkit runs on"),
    (None, "cp311", "--python 'cp311' is not a Python sovkit runs on"),
])
def test_bad_target_is_a_clear_error(platform: str | None, python: str | None, message: str) -> None:
    with pytest.raises(BundleError) as err:
        wheels.resolve_target(platform, python)
    assert message in err.value.message
    assert "linux/aarch64" in str(err.value.hint) or "3.11" in str(err.value.hint)


def test_docker_style_names_are_accepted() -> None:
    assert wheels.resolve_target("linux/arm64", "3.11").platform == "linux/aarch64"
    assert wheels.resolve_target("linux/amd64", "3.12").platform == "linux/x86_64"
