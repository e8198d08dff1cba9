"""sovkit's own wheel and its dependency wheels, so the site can install sovkit with no network.

Uses pip itself (``pip wheel`` for sovkit from its source tree, ``pip download
--only-binary`` for the requirements of the installed sovkit). Results are
cached by a key over the inputs, so repeated bundles do not rebuild or
re-download: the source digest for sovkit, the requirement list plus Python
version and platform for the dependencies.
"""

from __future__ import annotations

import hashlib
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from sovkit import __version__
from sovkit.bundle.gather import Source, tree_sources
from sovkit.errors import BundleError

_SRC = Path(__file__).resolve().parents[2]


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


def self_wheels(cache: Path) -> list[Source]:
    """sovkit's wheel plus one wheel per dependency, as bundle sources under ``wheels/``."""
    if not (_SRC / "pyproject.toml").is_file():
        raise BundleError("sovkit's source tree is not available to build its wheel",
                          "run from a sovkit checkout, or pass --no-self")
    own = _cached(cache / f"sovkit-{__version__}-{_source_digest(_SRC)[:16]}",
                  ["wheel", "--no-deps", str(_SRC)], "build the sovkit wheel")
    reqs = requirements()
    key = hashlib.sha256("\n".join([*reqs, sys.version.split()[0], platform.machine(),
                                    sys.platform]).encode()).hexdigest()[:16]
    deps = _cached(cache / f"deps-{key}", ["download", "--only-binary=:all:", *reqs],
                   "download sovkit's dependency wheels")
    return [Source(f"wheels/{w.name}", w, "wheel", ("sovkit",)) for w in [*own, *deps]]
