#!/usr/bin/env python3
"""Simulated accelerator vendor tools, dispatched on the name they are invoked as (``basename(argv[0])``).

Standalone: standard library only, no sovkit imports. Installed as ``{root}/bin/<tool>`` (a copy of this
file) with its modules in ``{root}/usr/lib/sovkit-npu-sim/``; state in ``{root}/var/lib/npu-sim/``. Each tool
speaks the vendor's documented argv and output format ([V] vendor doc, [S] secondary, [R] unconfirmed —
the simulator's choice; see docs/hardware.md)::

    rbln-smi                     table [R layout]
    rbln-smi -j                  {"KMD_version", "devices": [{npu, name, sid, uuid, device, group_id,
                                  pci{bus_id,...}, temperature, memory{used,total}, util, status}], "contexts"} [S]
    rbln-smi -q -qd npu,name,device,fw_ver
                                 "npu, name, device, fw_ver" header + one line per device [V flags, R layout]
    rbln-flash --cp (-f IMAGE | -d DIR) -s BDF|all
                                 [V] refuses while the rebellions module is loaded or rbln-smd runs; the image
                                 is active after the driver reload (modprobe -r / modprobe rebellions)
    systemctl stop|start|restart|is-active rbln-smd.service
                                 a running rbln-smd holds the module ({root}/var/lib/npu-sim/holders/rebellions);
                                 unknown unit: exit 5 "Unit X not found."
    furiosa-smi info [--format json]           [S] JSON array of {arch, dev_name, firmware, pci_bdf, ...}
    furiosa_rngd_updater_all -f IMAGE          [V tool, R -f]: staged, active after a cold reboot
    nvidia-smi --query-gpu=F,... --format=csv[,noheader][,nounits] [-i N]      [V]
    nvidia-smi -r -i N  |  nvidia-smi -pl W -i N                               [V] reset / power cap
    nvidia-smi -q [-x] [-i N]    [V flags] full report (XML with -x) [R layout]; fails on ``diagnostic-error``
    nvfwupd -t ip=BMC user=U password=P update_fw -p PKG [-s FILE]             [V]: active after reset/reboot [R]
    nvfwupd -t ip=BMC user=U password=P show_version [-p PKG] [-j]             [V flags, R output]
    sovkit-sim-reboot            a cold reboot of the simulated host: staged firmware boots, faults strike,
                                 modules load, enabled daemons start, new {root}/var/lib/npu-sim/boot_id

Vendor tools exit 1 with "no NPU driver loaded" when their kernel module directory
``{root}/sys/module/<module>`` is absent (rebellions, rngd [R], nvidia). Usage errors exit 2.
Firmware images are ``SOVKIT-SIMFW/1`` stand-ins (see :mod:`simcore`); faults per device: ``flash-error``,
``boots-old-firmware``, ``missing-after-reboot``, ``diagnostic-error`` (only ``nvidia-smi -q`` fails).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

_HERE = Path(os.path.abspath(__file__))
if __name__ == "__main__" and __package__ in (None, ""):  # an installed tool: modules live under usr/lib
    sys.path.insert(0, str(_HERE.parent.parent / "usr/lib/sovkit-npu-sim"))
    sys.path.insert(1, str(_HERE.parent))

try:
    from . import sim_furiosa, sim_nvidia, sim_rebellions
    from . import simcore as core
except ImportError:  # run as a script
    import sim_furiosa  # type: ignore[import-not-found,no-redef]
    import sim_nvidia  # type: ignore[import-not-found,no-redef]
    import sim_rebellions  # type: ignore[import-not-found,no-redef]
    import simcore as core  # type: ignore[import-not-found,no-redef]

REBOOT_TOOL = "sovkit-sim-reboot"


def systemctl(host: core.Host, args: list[str]) -> str:
    """The vendor daemons' units only; a running daemon holds its kernel module."""
    quiet = [a for a in args if a in ("-q", "--quiet")]
    args = [a for a in args if a not in quiet]
    if len(args) != 2 or args[0] not in ("start", "stop", "restart", "is-active"):
        raise core.SimError("usage: systemctl start|stop|restart|is-active UNIT (sovkit simulator)",
                            core.EXIT_USAGE)
    verb, unit = args
    unit = unit if "." in unit else unit + ".service"
    with host.locked():
        try:
            module = host.unit_module(unit)
        except core.SimError as exc:  # is-active of an unknown unit answers "inactive" (exit 3) [R]
            if verb == "is-active":
                raise core.SimError("" if quiet else "inactive\n", 3) from exc
            raise core.SimError(f"Failed to {verb} {unit}: Unit {unit} not found.", 5) from exc
        vendor = next(v for v in host.state["vendors"] if unit in core.VENDORS[v]["daemons"])
        if verb == "is-active":
            active = host.daemon_running(unit)
            if not active:
                raise core.SimError("" if quiet else "inactive\n", 3)
            return "" if quiet else "active"
        if verb in ("stop", "restart"):
            host.holder(module).unlink(missing_ok=True)
        if verb in ("start", "restart"):
            if not host.module_loaded(vendor):  # [R] the daemon cannot open its devices without the driver
                raise core.SimError(f"Job for {unit} failed because the control process exited with error code.")
            core.write_text(host.holder(module), unit + "\n")
    return ""


def reboot(host: core.Host, args: list[str]) -> str:
    if args:
        raise core.SimError(f"usage: {REBOOT_TOOL} (no arguments)", core.EXIT_USAGE)
    with host.locked():
        host.reboot()
    return ""


Tool = Callable[[core.Host, list[str]], str]
TOOLS: dict[str, Tool] = {
    "rbln-smi": sim_rebellions.rbln_smi,
    "rbln-flash": sim_rebellions.rbln_flash,
    "systemctl": systemctl,
    "furiosa-smi": sim_furiosa.furiosa_smi,
    "furiosa_rngd_updater_all": sim_furiosa.updater_all,
    "nvidia-smi": sim_nvidia.nvidia_smi,
    "nvfwupd": sim_nvidia.nvfwupd,
    REBOOT_TOOL: reboot,
}


def run(argv: list[str], script: Path) -> tuple[int, str, str]:
    """Run one command; return (exit code, stdout, stderr). ``script`` is ``{root}/bin/<tool>``."""
    tool = os.path.basename(argv[0]) if argv else ""
    if tool not in TOOLS:
        return core.EXIT_USAGE, "", f"npu-sim: invoked as {tool!r}; install it as one of: {', '.join(TOOLS)}\n"
    args = argv[1:]
    if args in (["-h"], ["--help"]):
        return core.EXIT_OK, (TOOLS[tool].__doc__ or tool).strip() + "\n", ""
    host = core.Host(script.parent.parent)
    try:
        out = TOOLS[tool](host, args)
    except core.SimError as exc:
        message = str(exc)
        if exc.code == 3 and tool == "systemctl":  # is-active prints its answer on stdout
            return exc.code, message, ""
        if tool == "systemctl" and exc.code == 5:
            return exc.code, "", message + "\n"
        return exc.code, "", f"{tool}: error: {message}\n"
    return core.EXIT_OK, out + "\n" if out else "", ""


def main() -> int:
    code, out, err = run(sys.argv, _HERE)
    sys.stdout.write(out)
    sys.stderr.write(err)
    return code


if __name__ == "__main__":
    sys.exit(main())
