"""Simulated host files as ISSUE13 lays them out under a host's root (proc/cpuinfo, proc/meminfo, etc/os-release,
sys/bus/pci/devices/<BDF>/{vendor,device,class}). Stands in until the simulator's installer writes them."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

#: cpuinfo MIDR parts, as (implementer, part)
NEOVERSE_V2 = ("0x41", "0xd4f")
NEOVERSE_V3 = ("0x41", "0xd84")
NEOVERSE_N1 = ("0x41", "0xd0c")
#: PCI ids (vendor, device, class)
ATOM_MAX = ("0x1eff", "0x1250", "0x120000")
REBEL_CR13 = ("0x1eff", "0x2130", "0x120000")
RNGD = ("0x1ed2", "0x0001", "0x120000")
H100 = ("0x10de", "0x2330", "0x030200")


def arm_cpuinfo(parts: list[tuple[str, str]], cores_each: int = 2) -> str:
    """An arm64 /proc/cpuinfo: one block per core (``cores_each`` cores of each part)."""
    blocks = []
    n = 0
    for impl, part in parts:
        for _ in range(cores_each):
            blocks.append(f"processor\t: {n}\nBogoMIPS\t: 2000.00\nFeatures\t: fp asimd evtstrm aes pmull sha1\n"
                          f"CPU implementer\t: {impl}\nCPU architecture: 8\nCPU variant\t: 0x0\n"
                          f"CPU part\t: {part}\nCPU revision\t: 0\n")
            n += 1
    return "\n".join(blocks) + "\n"


def x86_cpuinfo(cores: int = 2, model: str = "Intel(R) Xeon(R) Platinum 8480+") -> str:
    return "".join(f"processor\t: {n}\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 143\n"
                   f"model name\t: {model}\nflags\t\t: fpu vme de pse tsc msr pae mce\n\n" for n in range(cores))


def write_host(root: Path, cpuinfo: str | None, cards: Sequence[tuple[str, str, str]] | None = (),
               functions: int = 1, mem_kb: int = 503316480,
               os_release: str = 'ID=ubuntu\nVERSION_ID="24.04"\nPRETTY_NAME="Ubuntu 24.04.1 LTS"\n') -> None:
    """Write a host's facts files under ``root``: card N on bus N+1, ``functions`` PCI functions each.
    ``cpuinfo``/``cards`` None: leave that part absent."""
    (root / "proc").mkdir(parents=True, exist_ok=True)
    (root / "etc").mkdir(parents=True, exist_ok=True)
    if cpuinfo is not None:
        (root / "proc" / "cpuinfo").write_text(cpuinfo)
    (root / "proc" / "meminfo").write_text(f"MemTotal:       {mem_kb} kB\nMemFree:        1024 kB\n")
    (root / "etc" / "os-release").write_text(os_release)
    devices = root / "sys" / "bus" / "pci" / "devices"
    shutil.rmtree(devices, ignore_errors=True)
    if cards is None:
        return
    devices.mkdir(parents=True)
    host_bridge = devices / "0000:00:00.0"  # every host has non-accelerator functions too
    host_bridge.mkdir()
    for attr, value in (("vendor", "0x8086"), ("device", "0x0d57"), ("class", "0x060000")):
        (host_bridge / attr).write_text(value + "\n")
    for i, (vendor, device, cls) in enumerate(cards):
        for fn in range(functions):
            d = devices / f"0000:{i + 1:02x}:00.{fn}"
            d.mkdir()
            for attr, value in (("vendor", vendor), ("device", device), ("class", cls)):
                (d / attr).write_text(value + "\n")


def remove_card(root: Path, bdf: str) -> None:
    shutil.rmtree(root / "sys" / "bus" / "pci" / "devices" / bdf)
