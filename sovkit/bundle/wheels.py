"""sovkit's own wheel and its dependency wheels, so the site can install sovkit with no network.

Uses pip itself (``pip wheel`` for sovkit from its source tree, ``pip download
--only-binary`` for the requirements of the installed sovkit). Results are
cached by a key over the inputs, so repeated bundles do not rebuild or
re-download: the source digest for sovkit, the requirement list plus Python
version and platform for the dependencies.

The wheels can be for another machine than this one (``--platform
linux/aarch64 --python 3.11``): pip's own cross-download options select them
(``--platform`` per manylinux tag, ``--python-version``, ``--implementation
cp``, ``--abi``); this module only names the manylinux tags pip may take. The
bundle records the target, with the oldest glibc the chosen wheels need.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.utils import parse_wheel_filename

from sovkit import __version__
from sovkit.bundle.bootstrap import host_platform, host_python
from sovkit.bundle.gather import Source, tree_sources
from sovkit.bundle.manifest import Target
from sovkit.errors import BundleError

_SRC = Path(__file__).resolve().parents[2]
#: platforms ``--platform`` accepts (glibc Linux; the names docker uses are accepted too)
PLATFORMS = {"linux/aarch64": "aarch64", "linux/arm64": "aarch64", "linux/x86_64": "x86_64", "linux/amd64": "x86_64"}
#: newest glibc a cross-platform bundle's wheels may need: 2.34 (RHEL 9, Ubuntu 22.04, Debian 12), which regopy's
#: manylinux wheels already require; older manylinux tags down to 2.17 (manylinux2014) are taken too
GLIBC_CEILING = (2, 34)
_MIN_PYTHON = (3, 11)  # sovkit's requires-python
_LEGACY_GLIBC = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
_MANYLINUX = re.compile(r"^manylinux_([0-9]+)_([0-9]+)_")


def default_cache() -> Path:
    return Path.home() / ".cache" / "sovkit" / "wheels"


def requirements() -> list[str]:
    """The runtime requirements of the installed sovkit (extras left out)."""
    try:
        reqs = metadata.requires("sovkit") or []
    except metadata.PackageNotFoundError as exc:
        raise BundleError("sovkit's package metadata is not installed, so its requirements are unknown",
                          "install sovkit (pip install sovkit) or pass --no-self") from exc
    return sorted(r for r in reqs if "extra ==" not in r)


def _source_digest(root: Path) -> str:
    h = hashlib.sha256()
    files = [root / "pyproject.toml", *[s.file for d in ("sovkit", "policies", "templates", "inventories/demo")
                                        for s in tree_sources(root / d, d, "wheel")]]
    for f in files:
        h.update(str(f.relative_to(root)).encode() + b"\0")
        h.update(f.read_bytes())
    return h.hexdigest()


def _pip(args: list[str], what: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise BundleError(f"pip could not {what}: {tail}",
                          "run this on the connected side with access to a package index, or pass --no-self")


def _cached(dir_: Path, fill: list[str], what: str) -> list[Path]:
    done = dir_ / ".complete"
    if not done.exists():
        tmp = dir_.with_name(dir_.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        _pip([*fill, "-d" if fill[0] == "download" else "-w", str(tmp)], what)
        (tmp / ".complete").write_text("ok\n")
        shutil.rmtree(dir_, ignore_errors=True)
        tmp.rename(dir_)
    return sorted(p for p in dir_.iterdir() if p.suffix == ".whl")


def resolve_target(platform: str | None = None, python: str | None = None) -> Target:
    """The target named by ``--platform``/``--python``; each one left out is this machine's."""
    plat = host_platform()
    if platform is not None:
        machine = PLATFORMS.get(platform.strip().lower())
        if machine is None:
            raise BundleError(f"--platform {platform!r} is not a platform sovkit bundles wheels for",
                              "use linux/aarch64 (Arm servers, e.g. Grace/Neoverse) or linux/x86_64")
        plat = f"linux/{machine}"
    py = host_python()
    if python is not None:
        m = re.fullmatch(r"3\.([0-9]{1,2})", python.strip())
        if m is None or (3, int(m.group(1))) < _MIN_PYTHON:
            raise BundleError(f"--python {python!r} is not a Python sovkit runs on",
                              f"give the site's Python as MAJOR.MINOR, {_MIN_PYTHON[0]}.{_MIN_PYTHON[1]} or newer "
                              "(e.g. --python 3.11)")
        py = python.strip()
    return Target(platform=plat, python=py)


def _is_host(target: Target) -> bool:
    return target.platform == host_platform() and target.python == host_python() and sys.implementation.name == \
        "cpython"


def pip_target_args(target: Target) -> list[str]:
    """pip's cross-download options for ``target`` (none for this machine: pip's own tags, as ever)."""
    if _is_host(target):
        return []
    machine = target.platform.split("/", 1)[1]
    tags = [f"manylinux_{GLIBC_CEILING[0]}_{minor}_{machine}" for minor in range(GLIBC_CEILING[1], 16, -1)]
    tags.append(f"manylinux2014_{machine}")
    nodot = target.python.replace(".", "")
    return [*(a for t in tags for a in ("--platform", t)), "--python-version", target.python,
            "--implementation", target.implementation, "--abi", f"cp{nodot}"]


def _glibc_needed(wheel: str) -> tuple[int, int] | None:
    """Oldest glibc the wheel installs on (a wheel with several platform tags installs where any one fits)."""
    _, _, _, tags = parse_wheel_filename(wheel)
    needs: list[tuple[int, int]] = []
    for tag in tags:
        m = _MANYLINUX.match(tag.platform)
        legacy = tag.platform.split("_", 1)[0]
        if m:
            needs.append((int(m.group(1)), int(m.group(2))))
        elif legacy in _LEGACY_GLIBC:
            needs.append(_LEGACY_GLIBC[legacy])
        else:
            return None  # "any" (pure) or a tag that is not glibc-bound
    return min(needs) if needs else None


def self_wheels(cache: Path, target: Target | None = None) -> tuple[list[Source], Target]:
    """sovkit's wheel plus one wheel per dependency, as bundle sources under ``wheels/``, for ``target``
    (default: this machine), and the target with the oldest glibc those wheels need."""
    target = target or resolve_target()
    if not (_SRC / "pyproject.toml").is_file():
        raise BundleError("sovkit's source tree is not available to build its wheel",
                          "run from a sovkit checkout, or pass --no-self")
    own = _cached(cache / f"sovkit-{__version__}-{_source_digest(_SRC)[:16]}",
                  ["wheel", "--no-deps", str(_SRC)], "build the sovkit wheel")
    reqs = requirements()
    cross = pip_target_args(target)
    key = hashlib.sha256("\n".join([*reqs, sys.version.split()[0], host_platform(), *cross]).encode()
                         ).hexdigest()[:16]
    deps = _cached(cache / f"deps-{key}", ["download", "--only-binary=:all:", *cross, *reqs],
                   f"download sovkit's dependency wheels for {target.label()}")
    wheels = [*own, *deps]
    needs = [n for w in wheels if (n := _glibc_needed(w.name)) is not None]
    glibc = f"{max(needs)[0]}.{max(needs)[1]}" if needs else None
    return ([Source(f"wheels/{w.name}", w, "wheel", ("sovkit",)) for w in wheels],
            target.model_copy(update={"glibc": glibc}))
