"""Bundles for the site's platform: sovkit's wheels for another machine, and a bootstrap that refuses a mismatch.

The session fixture downloads the real wheels from the package index once (pip's cross-download options), for
the platform this machine is not (linux/aarch64 on an x86_64 runner), and every test here inspects that bundle.
"""

from __future__ import annotations

import email
import hashlib
import json
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename

from sovkit.bundle.bootstrap import host_platform, host_python
from sovkit.bundle.create import create_bundle
from sovkit.bundle.gather import Source
from sovkit.bundle.manifest import Manifest, Target
from sovkit.bundle.volumes import BOOTSTRAP, split_bundle
from sovkit.signing.keys import write_keypair
from tests.bundlekit import SIGNER, demo_copy, make_bundle
from tests.conftest import CliResult, run_cli

HOST_MACHINE = host_platform().split("/")[1]
OTHER = "linux/x86_64" if HOST_MACHINE == "aarch64" else "linux/aarch64"  # aarch64 on the x86_64 runners
OTHER_MACHINE = OTHER.split("/")[1]
HERE = f"{host_platform()} cp{host_python().replace('.', '')}"


class Built:
    def __init__(self, root: Path, vols: Path, key: Path) -> None:
        self.root, self.vols, self.key = root, vols, key
        self.manifest = json.loads((root / "manifest.json").read_bytes())
        self.wheels = {e["path"].removeprefix("wheels/"): root / "blobs/sha256" / e["sha256"]
                       for e in self.manifest["entries"] if e["path"].startswith("wheels/")}


@pytest.fixture(scope="session")
def other_bundle(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """One real download per session: the demo site bundled with sovkit for OTHER / CPython 3.11, then split."""
    tmp = tmp_path_factory.mktemp("platform")
    site = demo_copy(tmp)
    key = tmp / "bundle.key"
    write_keypair(SIGNER, key, None)
    made = run_cli("bundle", "create", site, "-o", tmp / "bundle", "--key", key, "--platform", OTHER,
                   "--python", "3.11", "--wheel-cache", tmp / "wheel-cache", timeout=300)
    assert made.code == 0, made.text
    assert f"sovkit's wheels for {OTHER} cp311" in made.out, made.out
    split = run_cli("bundle", "split", tmp / "bundle", "-o", tmp / "vols", "--size", "64M")
    assert split.code == 0, split.text
    return Built(tmp / "bundle", tmp / "vols", key)


def _glibc_of(tag: Tag) -> tuple[int, int] | None:
    legacy = {"manylinux2014": (2, 17), "manylinux2010": (2, 12), "manylinux1": (2, 5)}
    head = tag.platform.split("_")
    if head[0] in legacy:
        return legacy[head[0]]
    if head[0] == "manylinux":
        return int(head[1]), int(head[2])
    return None


def _target_tags(glibc: tuple[int, int]) -> set[Tag]:
    """Every tag a CPython 3.11 on OTHER with that glibc installs (packaging's own tag lists)."""
    plats = [f"manylinux_{glibc[0]}_{m}_{OTHER_MACHINE}" for m in range(glibc[1], 16, -1)]
    plats += [f"manylinux2014_{OTHER_MACHINE}", "any"]
    return {*cpython_tags((3, 11), ["cp311"], plats), *compatible_tags((3, 11), "cp311", plats)}


@pytest.mark.slow  # the session's one download from the package index
def test_manifest_records_the_target(other_bundle: Built) -> None:
    target = Target.model_validate(other_bundle.manifest["target"])
    assert (target.platform, target.python, target.implementation) == (OTHER, "3.11", "cp")
    binary = [min(g for t in parse_wheel_filename(n)[3] if (g := _glibc_of(t)) is not None)
              for n in other_bundle.wheels if not n.endswith("-any.whl")]
    assert target.glibc == "{}.{}".format(*max(binary)), "the oldest glibc that runs every binary wheel"


@pytest.mark.slow  # the session's one download from the package index
def test_other_platform_bundle_holds_no_wheel_for_this_machine(other_bundle: Built) -> None:
    target = Target.model_validate(other_bundle.manifest["target"])
    assert target.glibc is not None
    installable = _target_tags(tuple(int(p) for p in target.glibc.split(".")))  # type: ignore[arg-type]
    assert len(other_bundle.wheels) > 30
    binary = 0
    for name in other_bundle.wheels:
        tags = parse_wheel_filename(name)[3]
        assert not any(HOST_MACHINE in t.platform for t in tags), f"{name} is a wheel for this machine"
        assert tags & installable, f"{name} does not install on {OTHER} CPython 3.11"
        binary += all(t.platform != "any" for t in tags)
        assert all(t.platform == "any" or t.platform.endswith(f"_{OTHER_MACHINE}") for t in tags), name
    assert binary >= 5, "pydantic_core, cryptography, regopy, pyyaml, … are binary wheels"


@pytest.mark.slow  # the session's one download from the package index
def test_other_platform_bundle_holds_every_dependency(other_bundle: Built) -> None:
    """Walk Requires-Dist from sovkit's own wheel, markers evaluated for the target: every name has a wheel."""
    names: dict[str, str] = {canonicalize_name(parse_wheel_filename(n)[0]): n for n in other_bundle.wheels}
    by_name = {name: other_bundle.wheels[wheel] for name, wheel in names.items()}
    env: dict[str, str] = {**{k: str(v) for k, v in default_environment().items()},
                           "platform_machine": OTHER_MACHINE, "python_version": "3.11", "python_full_version": "3.11.0",
                           "sys_platform": "linux", "platform_system": "Linux", "implementation_name": "cpython",
                           "platform_python_implementation": "CPython", "os_name": "posix"}
    todo: list[tuple[str, frozenset[str]]] = [("sovkit", frozenset())]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        assert name in by_name, f"no wheel for {name} (needed on {OTHER})"
        with zipfile.ZipFile(by_name[name]) as zf:
            meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
            requires = email.message_from_bytes(zf.read(meta)).get_all("Requires-Dist") or []
        for line in requires:
            req = Requirement(line)
            if req.marker is None or any(req.marker.evaluate({**env, "extra": e}) for e in [*extras, ""]):
                todo.append((canonicalize_name(req.name), frozenset(req.extras)))
    needed = {n for n, _ in seen}
    assert {"pydantic-core", "cryptography", "regopy", "ansible-core", "pyyaml"} <= needed
    for binary in ("pydantic-core", "cryptography", "regopy"):
        tags = parse_wheel_filename(names[binary])[3]
        assert all(t.platform.endswith(f"_{OTHER_MACHINE}") for t in tags), names[binary]


@pytest.mark.slow  # the session's one download from the package index
def test_bootstrap_refuses_the_other_platform_bundle_here(other_bundle: Built, tmp_path: Path) -> None:
    out = tmp_path / "wheelhouse"
    proc = subprocess.run([sys.executable, "-I", other_bundle.vols / BOOTSTRAP, other_bundle.vols, "-o", out],
                          capture_output=True, text=True)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"this bundle's wheels are for {OTHER} cp311, this machine is {HERE}" in proc.stderr
    assert f"--platform {host_platform()} --python {host_python()}" in proc.stderr, "says what to do"
    assert "nothing was written" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists(), "nothing installed: the wheelhouse was not even created"
    assert proc.stdout == ""


# --- the bootstrap's check on small bundles (no download) ---------------------------------------------------

def _volumes(tmp: Path, target: Target | None) -> tuple[Path, Path]:
    wheel = tmp / "demo_pkg-1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK" + bytes(range(256)) * 64)
    create_bundle(tmp / "b", [Source(f"wheels/{wheel.name}", wheel, "wheel")], SIGNER, "demo", "0" * 64,
                  target=target)
    split_bundle(tmp / "b", tmp / "vols", 1 << 20)
    return tmp / "vols", wheel


def _bootstrap(vols: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-I", vols / BOOTSTRAP, vols, "-o", out], capture_output=True, text=True)


def test_bootstrap_installs_a_bundle_for_this_machine(tmp_path: Path) -> None:
    vols, wheel = _volumes(tmp_path, Target(platform=host_platform(), python=host_python(), glibc="2.17"))
    proc = _bootstrap(vols, tmp_path / "wh")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "wh" / wheel.name).read_bytes() == wheel.read_bytes()


@pytest.mark.parametrize(("target", "expected"), [
    (Target(platform=host_platform(), python="3.99"),
     f"this bundle's wheels are for {host_platform()} cp399, this machine is {HERE}"),
    (Target(platform=OTHER, python=host_python()),
     f"this bundle's wheels are for {OTHER} cp{host_python().replace('.', '')}, this machine is {HERE}"),
    (Target(platform=host_platform(), python=host_python(), glibc="9.99"),
     "need glibc >= 9.99, this machine has glibc "),
])
def test_bootstrap_refuses_a_mismatch_and_writes_nothing(tmp_path: Path, target: Target, expected: str) -> None:
    vols, _ = _volumes(tmp_path, target)
    proc = _bootstrap(vols, tmp_path / "wh")
    assert proc.returncode == 1 and expected in proc.stderr, proc.stderr
    assert "nothing was written" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "wh").exists()


def test_manifest_without_target_keeps_its_bytes(tmp_path: Path) -> None:
    """Bundles made before targets were recorded (and --no-self ones) keep the same manifest and digest."""
    made = make_bundle(demo_copy(tmp_path), tmp_path / "b")
    raw = (tmp_path / "b" / "manifest.json").read_bytes()
    assert b'"target"' not in raw and made.manifest.target is None
    again = Manifest.model_validate_json(raw)
    assert again.to_bytes() == raw and again.digest() == hashlib.sha256(raw).hexdigest()


# --- the CLI's answers to bad values -----------------------------------------------------------------------

@pytest.mark.parametrize(("args", "expected"), [
    (["--platform", "linux/sparc64"], "--platform 'linux/sparc64' is not a platform sovkit bundles wheels for"),
    (["--python", "3.9"], "--python '3.9' is not a Python sovkit runs on"),
    (["--platform", OTHER, "--no-self"], "--no-self leaves them out"),
])
def test_cli_bad_target_is_a_clear_error(cli: Callable[..., CliResult], tmp_path: Path, args: list[str],
                                        expected: str) -> None:
    key = tmp_path / "bundle.key"
    write_keypair(SIGNER, key, None)
    r = cli("bundle", "create", demo_copy(tmp_path), "-o", tmp_path / "out", "--key", key, *args)
    assert r.code == 1, r.text
    assert expected in r.err and "Traceback" not in r.err, r.err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
