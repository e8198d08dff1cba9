"""Simulated NVIDIA tools: ``nvidia-smi`` (query, reset, power limit) and ``nvfwupd`` (BMC firmware update)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

try:
    from . import simcore as core
except ImportError:  # installed copy: the module directory is on sys.path
    import simcore as core  # type: ignore[import-not-found,no-redef]

VENDOR = "nvidia"


def nv_bus_id(dev: dict[str, Any]) -> str:
    """nvidia-smi prints an 8-digit PCI domain: ``00000000:01:00.0``."""
    return "0000" + str(dev["bdf"]).upper()


def _watts(value: float, units: bool) -> str:
    return f"{value:.2f} W" if units else f"{value:.2f}"


#: --query-gpu fields [V] (names from the reference) -> (header unit, value)
FIELDS: dict[str, tuple[str, Callable[[int, dict[str, Any], str, bool], str]]] = {
    "index": ("", lambda i, d, drv, u: str(i)),
    "name": ("", lambda i, d, drv, u: str(d["chip"])),
    "pci.bus_id": ("", lambda i, d, drv, u: nv_bus_id(d)),
    "vbios_version": ("", lambda i, d, drv, u: str(d["firmware"])),
    "driver_version": ("", lambda i, d, drv, u: drv),
    "uuid": ("", lambda i, d, drv, u: "GPU-" + str(d["uuid"])),
    "serial": ("", lambda i, d, drv, u: str(d["serial"])),
    "power.limit": (" [W]", lambda i, d, drv, u: _watts(d["power_limit_w"], u)),
    "enforced.power.limit": (" [W]", lambda i, d, drv, u: _watts(d["power_limit_w"], u)),
    "power.max_limit": (" [W]", lambda i, d, drv, u: _watts(core.HARDWARE[d["kind"]]["power"][1], u)),
    "power.draw": (" [W]", lambda i, d, drv, u: _watts(65.0, u)),
}


def _option(args: list[str], *names: str) -> str | None:
    """The value of ``--name=V`` / ``--name V`` / ``-n V``; removes it from ``args``."""
    for pos, arg in enumerate(args):
        for name in names:
            if arg.startswith(name + "=") and name.startswith("--"):
                del args[pos]
                return arg[len(name) + 1:]
            if arg == name and pos + 1 < len(args):
                value = args[pos + 1]
                del args[pos:pos + 2]
                return value
    return None


def _targets(host: core.Host, ident: str | None) -> list[tuple[int, dict[str, Any]]]:
    devs = list(enumerate(host.devices(VENDOR)))
    if ident is None:
        return devs
    dev = host.find(ident, VENDOR)
    return [(i, d) for i, d in devs if d is dev]


def nvidia_smi(host: core.Host, argv: list[str]) -> str:
    """``--query-gpu=F,... --format=csv[,noheader][,nounits] [-i N]``, ``-r -i N``, ``-pl W -i N``."""
    args = list(argv)
    query = _option(args, "--query-gpu")
    fmt = _option(args, "--format")
    ident = _option(args, "-i", "--id")
    power = _option(args, "-pl", "--power-limit")
    reset = [a for a in args if a in ("-r", "--gpu-reset")]
    full = [a for a in args if a in ("-q", "--query")]
    xml = [a for a in args if a in ("-x", "--xml-format")]
    args = [a for a in args if a not in reset + full + xml]
    modes = [m for m in (query, power) if m is not None] + reset + full
    if xml and not full:
        raise core.SimError("-x needs -q", core.EXIT_USAGE)
    if args or len(modes) != 1 or (query is None) != (fmt is None):
        raise core.SimError(f"unrecognised arguments: {' '.join(argv) or '(none)'}", core.EXIT_USAGE)
    if query is not None:
        names = [f.strip() for f in query.split(",")]
        bad = [f for f in names if f not in FIELDS]
        if bad:  # [R] message and exit status of an invalid field
            raise core.SimError(f'Field "{bad[0]}" is not a valid field to query.', core.EXIT_USAGE)
        opts = (fmt or "").split(",")
        if opts[0] != "csv" or not set(opts[1:]) <= {"noheader", "nounits"}:
            raise core.SimError(f'"{fmt}" is not a valid format', core.EXIT_USAGE)
    host.require_driver(VENDOR)
    with host.locked():
        drv = host.module_version(VENDOR)
        targets = _targets(host, ident)
        if query is not None:
            units = "nounits" not in opts
            lines = [] if "noheader" in opts else [", ".join(n + FIELDS[n][0] for n in names)]
            lines += [", ".join(FIELDS[n][1](i, d, drv, units) for n in names) for i, d in targets]
            return "\n".join(lines)
        if full:  # [V] -q [-x]; [R] the layout (a few of the real report's tags / lines)
            return _full_report(targets, drv, bool(xml))
        if reset:  # [R] output wording; the reset restarts the GPU, so staged firmware boots [R]
            for _, dev in targets:
                host.restart(dev)
            return "\n".join(f"GPU {nv_bus_id(d)} was successfully reset." for _, d in targets) + "\nAll done."
        try:
            watts = float(power or "")
        except ValueError as exc:
            raise core.SimError(f"invalid power limit {power!r}", core.EXIT_USAGE) from exc
        lines = []
        for _, dev in targets:
            low, high, _default = core.HARDWARE[dev["kind"]]["power"]
            if not low <= watts <= high:  # [R] wording
                raise core.SimError(f"Provided power limit {watts:.2f} W is not a valid power limit which should "
                                    f"be between {low:.2f} W and {high:.2f} W for GPU {nv_bus_id(dev)}",
                                    core.EXIT_USAGE)
            lines.append(f"Power limit for GPU {nv_bus_id(dev)} was set to {watts:.2f} W from "
                         f"{dev['power_limit_w']:.2f} W.")
            dev["power_limit_w"] = watts
        return "\n".join([*lines, "All done."])


def _full_report(targets: list[tuple[int, dict[str, Any]]], drv: str, xml: bool) -> str:
    """``nvidia-smi -q [-x]``: a device with the ``diagnostic-error`` fault makes it fail (exit 1, [R] wording)
    although the short ``--query-gpu`` still lists it."""
    for _, dev in targets:
        if dev.get("fault") == "diagnostic-error":
            raise core.SimError(f"Unable to determine the device handle for GPU {nv_bus_id(dev)}: Unknown Error")
    if xml:
        gpus = "".join(f'<gpu id="{nv_bus_id(d)}"><product_name>{d["chip"]}</product_name><serial>{d["serial"]}'
                       f'</serial><vbios_version>{d["firmware"]}</vbios_version><power_readings><power_limit>'
                       f'{d["power_limit_w"]:.2f} W</power_limit></power_readings></gpu>' for _, d in targets)
        return ('<?xml version="1.0" ?>\n<nvidia_smi_log><driver_version>' + drv + "</driver_version>"
                f"<attached_gpus>{len(targets)}</attached_gpus>{gpus}</nvidia_smi_log>")
    lines = [f"Driver Version                            : {drv}", f"Attached GPUs                             : "
             f"{len(targets)}"]
    for _, d in targets:
        lines += [f"GPU {nv_bus_id(d)}", f"    Product Name                          : {d['chip']}",
                  f"    VBIOS Version                         : {d['firmware']}"]
    return "\n".join(lines)


def nvfwupd(host: core.Host, argv: list[str]) -> str:
    """``nvfwupd -t ip=BMC user=U password=P [servertype=T] update_fw -p PKG [-s FILE]`` / ``show_version``.

    The simulated BMC updates every GPU the package is built for; the new firmware boots on a GPU reset or a
    reboot [R]. The target's ip/user/password are required; once `set_bmc` gave the BMC credentials, others are refused.
    """
    args = list(argv)
    if not args or args.pop(0) != "-t":
        raise core.SimError("usage: nvfwupd -t ip=BMC user=USER password=PASS update_fw|show_version -p PKG",
                            core.EXIT_USAGE)
    target: dict[str, str] = {}
    while args and "=" in args[0]:
        key, _, value = args.pop(0).partition("=")
        target[key] = value
    missing = [k for k in ("ip", "user", "password") if not target.get(k)]
    if missing:
        raise core.SimError(f"target needs {', '.join(k + '=' for k in missing)}", core.EXIT_USAGE)
    bmc = host.load().get("bmc")
    if bmc and any(target.get(k) != bmc[k] for k in ("ip", "user", "password")):
        raise core.SimError(f"BMC {target['ip']}: authentication failed for user {target['user']!r}", 1)
    command = args.pop(0) if args else ""
    package = _option(args, "-p")
    want_json = "-j" in args
    if want_json:
        args.remove("-j")
    if command == "update_fw":
        _option(args, "-s")  # [V] a targets file; the simulated BMC updates every GPU the package fits
    if args or command not in ("update_fw", "show_version") or (command == "update_fw" and package is None):
        raise core.SimError(f"unrecognised arguments: {' '.join(argv)}", core.EXIT_USAGE)
    data, header = core.read_image(package) if package is not None else (b"", {})
    with host.locked():
        gpus = host.devices(VENDOR)
        if command == "show_version":  # [R] layout of the table and of the -j document
            rows = [{"AP Name": f"GPU{i}", "Sys Version": d["firmware"], "Pkg Version": header.get("version", ""),
                     "Up-To-Date": "Yes" if header.get("version") == d["firmware"] else "No"}
                    for i, d in enumerate(gpus)]
            if want_json:
                return json.dumps({"Error": [], "Output": rows}, indent=2)
            return "\n".join(["AP Name  Sys Version  Pkg Version  Up-To-Date"]
                             + ["  ".join(r.values()) for r in rows])
        fitting = [d for d in gpus if d["kind"] == header["accelerator"]]
        if not fitting:
            raise core.SimError(f"package {package} is built for accelerator {header['accelerator']!r}: no such GPU on "
                                f"this system")
        lines: list[str] = []
        errors: list[str] = []
        for dev in fitting:
            try:
                host.stage(dev, str(package), data, header)
            except core.SimError as exc:
                errors.append(str(exc))
                continue
            lines.append(f"GPU {nv_bus_id(dev)}: firmware {header['version']} staged "
                         f"(running {dev['firmware']}); reset the GPU or reboot to activate")
    if errors:
        raise core.SimError("\n".join([*lines, "Update failed:", *errors]))
    return "\n".join([*lines, "Update successful"])
