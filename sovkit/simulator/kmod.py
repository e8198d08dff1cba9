#!/usr/bin/env python3
"""Simulated ``modprobe`` / ``modinfo`` for simulated hosts (which tool follows from ``basename(argv[0])``).

Standalone: standard library only, no sovkit imports, copied onto a host as ``{root}/bin/modprobe`` and
``{root}/bin/modinfo``. The root is found from this script's own path (``{root}/bin/<tool>``), like the
simulated vendor tools, so a simulated host never touches the machine's real kernel modules::

    modprobe NAME            load: {root}/var/lib/npu-sim/modules/NAME.json must exist (an installed module,
                             put there by the driver package); writes {root}/sys/module/NAME/version
    modprobe -r NAME         unload: removes {root}/sys/module/NAME; exit 1 "Module NAME is in use" while
                             {root}/var/lib/npu-sim/holders/NAME exists (a daemon holds the device)
    modinfo -F version NAME  prints the installed module file's version

An installed module file is ``{"name": NAME, "version": VERSION}``; a module that is loaded without one (the
simulator installer marks the vendor's module loaded at boot) gets one at its loaded version when unloaded.
Like the real tools, unloading a module that is not loaded succeeds, and loading a loaded module changes
nothing (the real ``modprobe`` does not reload: a new version becomes active only after ``modprobe -r`` then
``modprobe``). Exit codes: 0 ok,
1 failure (message on stderr, as ``modprobe: FATAL: ...``), 2 usage error.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

MODULES_RELPATH = Path("var/lib/npu-sim/modules")
HOLDERS_RELPATH = Path("var/lib/npu-sim/holders")
SYS_MODULE_RELPATH = Path("sys/module")
TOOLS = ("modprobe", "modinfo")
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+_-]{0,63}")


class Refused(Exception):
    """A failure the tool reports with exit 1."""


def host_root(script: Path) -> Path:
    """``{root}/bin/<tool>`` -> ``{root}`` (the path as invoked, symlinks not followed)."""
    return script.parent.parent


def installed_version(root: Path, name: str) -> str:
    """The version of the installed (not necessarily loaded) module ``name``."""
    path = root / MODULES_RELPATH / f"{name}.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise Refused(f"Module {name} not found in directory {root / MODULES_RELPATH}") from None
    except (OSError, ValueError) as exc:
        raise Refused(f"could not read module {name}: {exc}") from None
    version = doc.get("version") if isinstance(doc, dict) else None
    if not isinstance(version, str) or not _VERSION.fullmatch(version) or doc.get("name") != name:
        raise Refused(f"module file {path} is not {{\"name\": {name!r}, \"version\": VERSION}}")
    return version


def load(root: Path, name: str) -> None:
    version = installed_version(root, name)
    sysdir = root / SYS_MODULE_RELPATH / name
    if (sysdir / "version").is_file():
        return  # already loaded: modprobe does not reload
    sysdir.mkdir(parents=True, exist_ok=True)
    tmp = sysdir / ".version.tmp"
    tmp.write_text(version + "\n", encoding="utf-8")
    os.replace(tmp, sysdir / "version")


def unload(root: Path, name: str) -> None:
    """Remove the loaded module. A module loaded at simulator install time (no driver package put its file
    there) stays installed on disk at the version it had, so a later ``modprobe NAME`` loads it again."""
    if (root / HOLDERS_RELPATH / name).exists():
        raise Refused(f"Module {name} is in use.")
    sysdir = root / SYS_MODULE_RELPATH / name
    installed = root / MODULES_RELPATH / f"{name}.json"
    try:
        loaded = (sysdir / "version").read_text(encoding="utf-8").strip()
    except OSError:
        loaded = ""
    if loaded and _VERSION.fullmatch(loaded) and not installed.exists():
        installed.parent.mkdir(parents=True, exist_ok=True)
        tmp = installed.with_name(f".{name}.json.tmp")
        tmp.write_text(json.dumps({"name": name, "version": loaded}) + "\n", encoding="utf-8")
        os.replace(tmp, installed)
    shutil.rmtree(sysdir, ignore_errors=True)


def _usage(tool: str) -> int:
    form = "modprobe [-r] NAME" if tool == "modprobe" else "modinfo -F version NAME"
    print(f"usage: {form}", file=sys.stderr)
    return 2


def main(argv: list[str]) -> int:
    tool = os.path.basename(argv[0])
    args = argv[1:]
    root = host_root(Path(os.path.abspath(argv[0])))
    if tool not in TOOLS:
        print(f"kmod simulator: invoked as {tool!r}; install it as one of {', '.join(TOOLS)}", file=sys.stderr)
        return 2
    if not args or not _NAME.fullmatch(args[-1]):
        return _usage(tool)
    name = args[-1]
    try:
        if tool == "modprobe" and args[:-1] == []:
            load(root, name)
        elif tool == "modprobe" and args[:-1] in (["-r"], ["--remove"]):
            unload(root, name)
        elif tool == "modinfo" and args[:-1] in (["-F", "version"], ["--field", "version"], ["-F=version"]):
            print(installed_version(root, name))
        else:
            return _usage(tool)
    except Refused as exc:
        print(f"{tool}: FATAL: {exc}" if tool == "modprobe" else f"{tool}: ERROR: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
