"""sovkit's own wheels in the bundle: built/downloaded through pip once, then served from the cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from sovkit.bundle import wheels
from sovkit.errors import BundleError


def test_wheels_are_cached_by_their_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def fake_pip(args: list[str], what: str) -> None:
        calls.append(args)
        out = Path(args[-1])
        name = "sovkit-0.1.0-py3-none-any.whl" if args[0] == "wheel" else "pydantic-2.0-py3-none-any.whl"
        (out / name).write_bytes(b"PK fake wheel")

    monkeypatch.setattr(wheels, "_pip", fake_pip)
    first = wheels.self_wheels(tmp_path / "cache")
    assert [c[0] for c in calls] == ["wheel", "download"]
    assert calls[0][1:3] == ["--no-deps", str(wheels._SRC)]
    assert "--only-binary=:all:" in calls[1] and any(r.startswith("pydantic") for r in calls[1])
    assert {s.path for s in first} == {"wheels/sovkit-0.1.0-py3-none-any.whl", "wheels/pydantic-2.0-py3-none-any.whl"}
    assert {s.kind for s in first} == {"wheel"}
    again = wheels.self_wheels(tmp_path / "cache")
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
