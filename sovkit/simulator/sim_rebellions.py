"""Simulated Rebellions tools: ``rbln-smi`` and ``rbln-flash`` (argv per docs.rbln.ai, see npu.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

try:
    from . import simcore as core
except ImportError:  # installed copy: the module directory is on sys.path
    import simcore as core  # type: ignore[import-not-found,no-redef]

VENDOR = "rebellions"
DAEMON = "rbln-smd.service"
#: the query-mode fields the reference names [V]; other -qd fields were not found, so the simulator refuses them
QUERY_FIELDS = ("npu", "name", "device", "fw_ver")


def _json_device(index: int, dev: dict[str, Any]) -> dict[str, Any]:
    """One device as ``rbln-smi -j`` prints it [S] (strings throughout; no firmware key was seen)."""
    return {
        "npu": str(index), "name": dev["chip"], "sid": dev["serial"], "uuid": dev["uuid"],
        "device": f"rbln{index}", "group_id": "0",
        "pci": {"bus_id": dev["bdf"], "numa_node": "0", "link_speed": "16GT/s", "link_width": "16"},
        "temperature": "35", "memory": {"used": "0", "total": str(core.HARDWARE[dev["kind"]]["memory"])},
        "util": "0.0", "status": "normal",
    }


def _query_value(field: str, index: int, dev: dict[str, Any]) -> str:
    values = {"npu": str(index), "name": dev["chip"], "device": f"rbln{index}", "fw_ver": dev["firmware"]}
    return str(values[field])


def rbln_smi(host: core.Host, args: list[str]) -> str:
    """``rbln-smi`` (table), ``rbln-smi -j``, ``rbln-smi -q -qd npu,name,device,fw_ver``."""
    fields: list[str] | None = None
    mode = "table"
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if arg == "-j":
            mode = "json"
        elif arg == "-q":
            mode = "query" if mode != "json" else "conflict"
        elif arg == "-qd" and rest:
            fields = [f.strip() for f in rest.pop(0).split(",")]
        else:
            raise core.SimError(f"unrecognised arguments: {' '.join(args)}", core.EXIT_USAGE)
    if mode == "conflict" or (fields is not None) != (mode == "query"):
        raise core.SimError("query mode needs both -q and -qd FIELD,...", core.EXIT_USAGE)
    for field in fields or []:
        if field not in QUERY_FIELDS:
            raise core.SimError(f"unknown query field {field!r} (known: {','.join(QUERY_FIELDS)})", core.EXIT_USAGE)
    host.require_driver(VENDOR)
    with host.locked():
        devs = host.devices(VENDOR)
        kmd = host.module_version(VENDOR)
    if mode == "json":
        out = {"KMD_version": kmd, "devices": [_json_device(i, d) for i, d in enumerate(devs)], "contexts": []}
        return json.dumps(out, indent=2)
    if mode == "query":  # [R] layout of query mode output: a header line, then one line per device
        lines = [", ".join(fields or [])]
        lines += [", ".join(_query_value(f, i, d) for f in fields or []) for i, d in enumerate(devs)]
        return "\n".join(lines)
    lines = [f"KMD ver: {kmd}", "NPU  Name       Device  PCI BUS ID    Temp  Memory"]  # [R] table layout
    lines += [f"{i:<4} {d['chip']:<10} rbln{i:<3} {d['bdf']}  35C   0/{core.HARDWARE[d['kind']]['memory']}"
              for i, d in enumerate(devs)]
    return "\n".join(lines)


def _images(path: str, directory: bool) -> list[tuple[str, bytes, dict[str, Any]]]:
    if not directory:
        data, header = core.read_image(path)
        return [(path, data, header)]
    try:
        names = sorted(os.listdir(path))
    except OSError as exc:
        raise core.SimError(f"cannot read firmware directory {path}: {exc.strerror or exc}") from exc
    found = []
    for name in names:
        file = str(Path(path) / name)
        if Path(file).is_file():
            data, header = core.read_image(file)
            found.append((file, data, header))
    return found


def rbln_flash(host: core.Host, args: list[str]) -> str:
    """``rbln-flash --cp (-f IMAGE | -d DIR) -s BDF|all`` [V]: stages CP firmware, active after the driver reload."""
    opts: dict[str, str] = {}
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if arg in ("--cp", "--mcu"):
            opts["target"] = arg if "target" not in opts else "both"
        elif arg in ("-f", "-d", "-s") and rest and arg not in opts:
            opts[arg] = rest.pop(0)
        else:
            raise core.SimError(f"unrecognised arguments: {' '.join(args)}", core.EXIT_USAGE)
    if opts.get("target") not in ("--cp", "--mcu") or ("-f" in opts) == ("-d" in opts) or "-s" not in opts:
        raise core.SimError("give exactly one of --cp/--mcu, exactly one of -f IMAGE/-d DIR, and -s BDF|all",
                            core.EXIT_USAGE)
    if opts["target"] == "--mcu":
        raise core.SimError("the simulator only flashes Command Processor firmware (--cp)", core.EXIT_USAGE)
    errors: list[str] = []
    lines: list[str] = []
    with host.locked():
        if host.daemon_running(DAEMON):
            raise core.SimError(f"{DAEMON} is running: stop it first (systemctl stop {DAEMON})")
        if host.module_loaded(VENDOR):
            raise core.SimError("the rebellions driver is loaded: unload it first (modprobe -r rebellions)")
        targets = host.devices(VENDOR) if opts["-s"] == "all" else [host.find(opts["-s"], VENDOR)]
        images = _images(opts.get("-f") or opts["-d"], "-d" in opts)
        for dev in targets:
            match = [img for img in images if img[2]["accelerator"] == dev["kind"]] or images[:1]
            if not match:
                errors.append(f"{dev['bdf']}: no firmware image in {opts['-d']}")
                continue
            path, data, header = match[0]
            try:
                host.stage(dev, path, data, header)
            except core.SimError as exc:
                errors.append(str(exc))
                continue
            lines.append(f"[{dev['bdf']}] {dev['chip']}: CP firmware {header['version']} written "
                         f"(running {dev['firmware']}); active after the driver reload")
    if errors:
        raise core.SimError("\n".join(lines + errors))
    return "\n".join(lines)
