"""Install the simulated kernel-module tools (:mod:`sovkit.simulator.kmod`) onto a simulated host, and set or
read its module state (for the simulator installer, the demo and tests).

Like the vendor-tool simulator, only ever *installed onto* demo/test hosts: product code runs ``modprobe``
and reads ``/sys/module/NAME/version`` (under the host's root), which on a simulated host resolve to these.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from sovkit.simulator import kmod
from sovkit.simulator.kmod import HOLDERS_RELPATH, MODULES_RELPATH, SYS_MODULE_RELPATH

__all__ = ["hold", "install_kmod", "install_module", "load_module", "loaded_version"]


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def install_kmod(root: Path, *, interpreter: str | None = None) -> list[Path]:
    """Install ``{root}/bin/modprobe`` and ``{root}/bin/modinfo`` (mode 0755). ``interpreter`` replaces the
    ``#!/usr/bin/env python3`` line (hosts whose ``python3`` is not on the PATH). Returns the installed paths."""
    source = Path(kmod.__file__).resolve().read_bytes()
    if interpreter is not None:
        _, _, rest = source.partition(b"\n")
        source = b"#!" + interpreter.encode() + b"\n" + rest
    out = []
    for tool in kmod.TOOLS:
        target = Path(root) / "bin" / tool
        _write(target, source, 0o755)
        out.append(target)
    return out


def install_module(root: Path, name: str, version: str) -> Path:
    """Put an installed (not loaded) module file there, as a driver package would."""
    path = Path(root) / MODULES_RELPATH / f"{name}.json"
    _write(path, json.dumps({"name": name, "version": version}).encode() + b"\n")
    return path


def load_module(root: Path, name: str, version: str) -> None:
    """Mark ``name`` installed and loaded at ``version`` (a host booted with that driver)."""
    install_module(root, name, version)
    _write(Path(root) / SYS_MODULE_RELPATH / name / "version", f"{version}\n".encode())


def loaded_version(root: Path, name: str) -> str | None:
    """The loaded module's version as ``/sys/module/NAME/version`` reports it; None when not loaded."""
    try:
        return (Path(root) / SYS_MODULE_RELPATH / name / "version").read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None


def hold(root: Path, name: str, held: bool = True) -> None:
    """Make a (simulated) daemon hold the module, so ``modprobe -r`` refuses; or release it."""
    path = Path(root) / HOLDERS_RELPATH / name
    if held:
        _write(path, b"")
    else:
        path.unlink(missing_ok=True)
