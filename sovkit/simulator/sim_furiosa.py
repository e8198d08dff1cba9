"""Simulated FuriosaAI tools: ``furiosa-smi`` and ``furiosa_rngd_updater_all`` (see npu.py)."""

from __future__ import annotations

import json
from typing import Any

try:
    from . import simcore as core
except ImportError:  # installed copy: the module directory is on sys.path
    import simcore as core  # type: ignore[import-not-found,no-redef]

VENDOR = "furiosa"


def _info(index: int, dev: dict[str, Any]) -> dict[str, Any]:
    """One device as ``furiosa-smi info --format json`` prints it [S] (value formats [R])."""
    hw = core.HARDWARE[dev["kind"]]
    return {
        "arch": hw["chip"], "dev_name": f"npu{index}", "device_uuid": dev["uuid"], "device_sn": dev["serial"],
        "firmware": dev["firmware"], "temperature": "35.00°C", "power": "40.00 W", "core_clock": "1000 MHz",
        "governor": "OnDemand", "pci_bdf": dev["bdf"], "pci_dev": f"{core.VENDORS[VENDOR]['pci_vendor']}:"
                                                                   f"{hw['pci_device']}",
    }


def furiosa_smi(host: core.Host, args: list[str]) -> str:
    """``furiosa-smi info`` (table [R]) and ``furiosa-smi info --format json`` [S]."""
    if args not in (["info"], ["info", "--format", "json"]):
        raise core.SimError(f"unrecognised arguments: {' '.join(args) or '(none)'}", core.EXIT_USAGE)
    host.require_driver(VENDOR)
    with host.locked():
        devs = [_info(i, d) for i, d in enumerate(host.devices(VENDOR))]
    if args[1:]:
        return json.dumps(devs, indent=2, ensure_ascii=False)
    lines = ["Arch  Device  Firmware  Temp.  Power  PCI-BDF"]
    lines += [f"{d['arch']}  {d['dev_name']}  {d['firmware']}  {d['temperature']}  {d['power']}  {d['pci_bdf']}"
              for d in devs]
    return "\n".join(lines)


def updater_all(host: core.Host, args: list[str]) -> str:
    """``furiosa_rngd_updater_all -f IMAGE`` ([R] how the image is given): stages, active after a cold reboot."""
    if len(args) != 2 or args[0] != "-f":
        raise core.SimError("usage: furiosa_rngd_updater_all -f IMAGE  (the -f flag is the simulator's, "
                            "unconfirmed)", core.EXIT_USAGE)
    host.require_driver(VENDOR)
    data, header = core.read_image(args[1])
    lines: list[str] = []
    errors: list[str] = []
    with host.locked():
        devs = host.devices(VENDOR)
        if not devs:
            raise core.SimError("no RNGD devices found")
        for index, dev in enumerate(devs):
            try:
                host.stage(dev, args[1], data, header)
            except core.SimError as exc:
                errors.append(str(exc))
                continue
            lines.append(f"npu{index} ({dev['bdf']}): firmware {header['version']} staged; "
                         f"cold reboot required to apply")
    if errors:
        raise core.SimError("\n".join(lines + errors))
    return "\n".join(lines)
