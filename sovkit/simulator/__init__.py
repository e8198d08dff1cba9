"""The simulated accelerator vendor tools and host, and helpers to install them onto demo and test hosts.

There are no NPUs on development machines, CI runners or the machine running ``sovkit demo``. So that the
*product* code path is identical for real and simulated devices, sovkit ships stand-ins for the vendor tools
(``rbln-smi``, ``rbln-flash``, ``furiosa-smi``, ``nvidia-smi``, ``nvfwupd``, ...) speaking each vendor's
documented argv and output format (:mod:`sovkit.simulator.npu` lists them), plus the host around them: a
sysfs PCI tree, ``/proc/cpuinfo``, ``/proc/meminfo``, ``/etc/os-release`` and loaded kernel modules, all
under the host's ``root:`` prefix.

Why it lives in the package and not under ``tests/``: ``sovkit demo`` must work from an installed wheel,
where ``tests/`` does not exist. It is only ever *installed onto demo/test hosts*; no product code path
imports or calls it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sovkit.simulator import drivers, simcore
from sovkit.simulator.npu import REBOOT_TOOL, TOOLS
from sovkit.simulator.simcore import FAULTS, HARDWARE, LIB_RELPATH, MAGIC, STATE_RELPATH, VENDORS, parse_image

__all__ = [
    "CPUS",
    "FAULTS",
    "HARDWARE",
    "MAGIC",
    "TOOLS",
    "VENDORS",
    "install_simulator",
    "make_firmware_image",
    "parse_image",
    "read_devices",
    "script_path",
    "set_bmc",
    "set_fault",
    "state_path",
]

_PACKAGE = Path(__file__).resolve().parent
#: the simulator's modules copied to {root}/usr/lib/sovkit-npu-sim (the entry script npu.py goes to bin/)
MODULES = ("simcore.py", "sim_rebellions.py", "sim_furiosa.py", "sim_nvidia.py", "npu.py")

#: catalog CPU id -> what /proc/cpuinfo shows. MIDR parts [V] linux cputype.h (0xd0c Neoverse N1 [S]);
#: core counts and memory from catalog/cpus.yaml where known, else small simulated values
CPUS: dict[str, dict[str, Any]] = {
    "arm-neoverse-v2": {"arch": "aarch64", "part": "0xd4f", "cores": 72, "memory_gb": 480},
    "arm-neoverse-v3": {"arch": "aarch64", "part": "0xd84", "cores": 136, "memory_gb": 512},
    "arm-neoverse-v3-agi": {"arch": "aarch64", "part": "0xd84", "cores": 136, "memory_gb": 512},
    "ampere-altra": {"arch": "aarch64", "part": "0xd0c", "cores": 128, "memory_gb": 256},
    "generic-x86_64": {"arch": "x86_64", "part": None, "cores": 8, "memory_gb": 64},
}

DEFAULT_OS_RELEASE = {"NAME": "Ubuntu", "VERSION_ID": "22.04", "ID": "ubuntu", "ID_LIKE": "debian",
                      "PRETTY_NAME": "Ubuntu 22.04.4 LTS", "VERSION_CODENAME": "jammy"}


def script_path() -> Path:
    """Path of the simulator entry script inside the installed package."""
    return _PACKAGE / "npu.py"


def state_path(root: Path) -> Path:
    """The device state file of a simulator installed under ``root``."""
    return Path(root) / STATE_RELPATH


def make_firmware_image(accelerator: str, version: str, payload_size: int = 65536, seed: str = "") -> bytes:
    """A valid ``SOVKIT-SIMFW/1`` image; the same arguments always give the same bytes.

    The payload is a SHA-256 counter stream over (accelerator, version, seed), so
    different versions or seeds give different digests.
    """
    if payload_size < 0:
        raise ValueError("payload_size must be >= 0")
    base = hashlib.sha256(json.dumps([accelerator, version, seed]).encode()).digest()
    chunks: list[bytes] = []
    produced = 0
    counter = 0
    while produced < payload_size:
        block = hashlib.sha256(base + counter.to_bytes(8, "big")).digest()
        chunks.append(block)
        produced += len(block)
        counter += 1
    return simcore.build_image(accelerator, version, b"".join(chunks)[:payload_size])


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _cpuinfo(cpu: str, cores: int) -> str:
    spec = CPUS[cpu]
    stanzas = []
    for n in range(cores):
        if spec["arch"] == "aarch64":
            stanzas.append(f"processor\t: {n}\nBogoMIPS\t: 2000.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 "
                           f"sha2 crc32 atomics\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\n"
                           f"CPU part\t: {spec['part']}\nCPU revision\t: 0\n")
        else:
            stanzas.append(f"processor\t: {n}\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 85\n"
                           f"model name\t: Simulated x86-64 CPU (sovkit)\ncpu cores\t: {cores}\n")
    return "\n".join(stanzas)


def install_simulator(
    root: Path,
    devices: Sequence[tuple[str, str]] | str,
    legacy_devices: Sequence[tuple[str, str]] | None = None,
    *,
    cpu: str = "arm-neoverse-v2",
    cores: int | None = None,
    memory_kb: int | None = None,
    os_release: Mapping[str, str] | None = None,
    driver_loaded: bool = True,
    daemons_running: bool = True,
    interpreter: str | None = None,
) -> list[Path]:
    """Make ``root`` a simulated host with fresh state; returns the installed tools (mode 0755).

    ``devices`` is ``[(accelerator_kind, initial_firmware_version), ...]``, one entry per *card*, in slot
    order: card N sits on PCI bus N+1 (``0000:0N:00.F``), one function per NPU (REBEL-Quad: 4 [R]). The tools
    of every vendor present are installed, plus ``sovkit-sim-reboot``. With ``driver_loaded`` each vendor's
    kernel module shows as loaded (``{root}/sys/module/<module>/version``) so sites without a driver component
    work; with ``daemons_running`` the vendor daemons (rbln-smd) run and hold their module. ``interpreter``
    replaces the ``#!/usr/bin/env python3`` line. The legacy form ``(root, tool, devices)`` is accepted.
    """
    if isinstance(devices, str):  # legacy (root, tool, devices): the tool follows from the kinds now
        devices = list(legacy_devices or [])
    unknown = sorted({kind for kind, _ in devices} - set(HARDWARE))
    if unknown or cpu not in CPUS:
        raise ValueError(f"the simulator has no hardware {unknown or cpu!r}; known accelerators: "
                         f"{', '.join(HARDWARE)}; CPUs: {', '.join(CPUS)}")
    root = Path(root)
    vendors = list(dict.fromkeys(HARDWARE[kind]["vendor"] for kind, _ in devices))
    lib = root / LIB_RELPATH
    lib.mkdir(parents=True, exist_ok=True)
    for name in MODULES:
        shutil.copyfile(_PACKAGE / name, lib / name)
    source = script_path().read_text(encoding="utf-8")
    if interpreter is not None:
        source = "#!" + interpreter + "\n" + source.partition("\n")[2]
    tools = [t for v in vendors for t in VENDORS[v]["tools"]] + [REBOOT_TOOL]
    installed = []
    for tool in tools:
        _write(root / "bin" / tool, source, 0o755)
        installed.append(root / "bin" / tool)
    if vendors:  # the vendor procedures unload and reload the driver with modprobe
        installed += drivers.install_kmod(root, interpreter=interpreter)

    pci = root / "sys/bus/pci/devices"
    shutil.rmtree(pci, ignore_errors=True)
    records: list[dict[str, Any]] = []
    for card, (kind, firmware) in enumerate(devices):
        hw = HARDWARE[kind]
        for function in range(hw["npus"]):
            bdf = f"0000:{card + 1:02x}:00.{function}"
            for name, value in (("vendor", "0x" + VENDORS[hw["vendor"]]["pci_vendor"]),
                                ("device", "0x" + hw["pci_device"]), ("class", hw["class"]), ("numa_node", "0")):
                _write(pci / bdf / name, value + "\n")
            seed = hashlib.sha256(f"{root}|{bdf}|{kind}".encode()).hexdigest()
            record: dict[str, Any] = {
                "id": str(len(records)), "bdf": bdf, "card": card, "vendor": hw["vendor"], "kind": kind,
                "chip": hw["chip"], "firmware": firmware, "staged": None, "fault": None, "present": True,
                "serial": "SIM-" + seed[:12].upper(), "uuid": str(uuid.UUID(seed[:32])),
            }
            if "power" in hw:
                record["power_limit_w"] = float(hw["power"][2])
            records.append(record)

    modules = {VENDORS[v]["module"]: VENDORS[v]["module_version"] for v in vendors}
    daemons = {u: m for v in vendors for u, m in VENDORS[v]["daemons"].items()}
    for module, version in modules.items():
        shutil.rmtree(root / "sys/module" / module, ignore_errors=True)
        (root / "var/lib/npu-sim/holders" / module).unlink(missing_ok=True)
        if driver_loaded:  # installed (so `modprobe` can reload it) and loaded, as on a host booted with it
            drivers.load_module(root, module, version)
    for unit, module in daemons.items():
        if driver_loaded and daemons_running:
            _write(root / "var/lib/npu-sim/holders" / module, unit + "\n")
    state = {"format": simcore.STATE_FORMAT, "vendors": vendors, "devices": records,
             "boot_modules": modules if driver_loaded else {},
             "daemons_enabled": sorted(daemons) if daemons_running else []}
    simcore.write_json(state_path(root), state)
    _write(root / "var/lib/npu-sim/boot_id", str(uuid.uuid4()) + "\n")

    spec = CPUS[cpu]
    _write(root / "proc/cpuinfo", _cpuinfo(cpu, cores or spec["cores"]))
    total = memory_kb or spec["memory_gb"] * 1024 * 1024
    _write(root / "proc/meminfo", f"MemTotal:       {total} kB\nMemFree:        {total * 9 // 10} kB\n"
                                  f"MemAvailable:   {total * 9 // 10} kB\n")
    release = dict(os_release or DEFAULT_OS_RELEASE)
    _write(root / "etc/os-release", "".join(f'{k}="{v}"\n' for k, v in release.items()))
    return installed


def read_devices(root: Path) -> list[dict[str, Any]]:
    """The device records under ``root`` as the hardware stands now (driver reloads applied), in BDF order.

    Devices lost to ``missing-after-reboot`` stay in the list with ``present: false``.
    """
    host = simcore.Host(Path(root))
    with host.locked():
        return host.devices(present=False)


def set_fault(root: Path, device: str, fault: str | None) -> None:
    """Inject (or clear, with ``None``) a simulated hardware fault on one device (BDF or id); see FAULTS."""
    if fault is not None and fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
    host = simcore.Host(Path(root))
    with host.locked() as state:
        bdf = simcore.normalise_bdf(device)
        matches = [d for d in state["devices"] if d["bdf"] == bdf or d["id"] == device]
        if not matches:
            raise ValueError(f"no device {device!r} under {root}")
        matches[0]["fault"] = fault


def set_bmc(root: Path, address: str, user: str, password: str) -> None:
    """Give the host's simulated BMC its credentials: ``nvfwupd`` then refuses any other ip/user/password."""
    host = simcore.Host(Path(root))
    with host.locked() as state:
        state["bmc"] = {"ip": address, "user": user, "password": password}
