"""The simulated NPU vendor tool, and helpers to install it onto demo and test hosts.

There are no NPUs on development machines, CI runners or the machine running
``sovkit demo``. So that the *product* code path is identical for real and
simulated devices, sovkit ships a stand-in for the vendor tools
(``rbln-smi``, ``furiosa-smi``, ``nvidia-smi``): :mod:`sovkit.simulator.npu`,
a standalone stdlib-only script speaking exactly the contract of the vendor
profiles in ``sovkit/catalog/profiles.yaml`` (see its docstring for the
command lines, the state file and the firmware image format).

Why it lives in the package and not under ``tests/``: ``sovkit demo`` must work
from an installed wheel, where ``tests/`` does not exist. It is only ever
*installed onto demo/test hosts* (:func:`install_simulator` puts it at
``{root}/bin/<tool>``); no product code path imports or calls it. The
provisioner runs whatever command the vendor profile names, and on a demo host
that name happens to resolve to this script.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from sovkit.simulator import npu
from sovkit.simulator.npu import FAULTS, MAGIC, STATE_FORMAT, STATE_RELPATH, TOOLS, build_image, parse_image

__all__ = [
    "FAULTS",
    "MAGIC",
    "TOOLS",
    "install_simulator",
    "make_firmware_image",
    "parse_image",
    "read_devices",
    "script_path",
    "set_fault",
    "state_path",
]


def script_path() -> Path:
    """Path of the simulator script inside the installed package."""
    return Path(npu.__file__).resolve()


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
    return build_image(accelerator, version, b"".join(chunks)[:payload_size])


def install_simulator(
    root: Path,
    tool: str,
    devices: list[tuple[str, str]],
    *,
    interpreter: str | None = None,
) -> Path:
    """Install the simulator as ``{root}/bin/{tool}`` (mode 0755) with fresh device state.

    ``devices`` is ``[(accelerator_kind, initial_firmware_version), ...]``; the
    devices get ids ``"0"``, ``"1"``, ... in that order. An existing state file
    is replaced. ``interpreter`` replaces the ``#!/usr/bin/env python3`` line
    with ``#!{interpreter}`` (for hosts whose ``python3`` is not on the PATH).
    Returns the path of the installed tool.
    """
    if tool not in TOOLS:
        raise ValueError(f"unknown vendor tool {tool!r}; the simulator speaks: {', '.join(sorted(TOOLS))}")
    root = Path(root)
    bindir = root / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    target = bindir / tool
    source = script_path().read_bytes()
    if interpreter is not None:
        _, _, rest = source.partition(b"\n")
        source = b"#!" + interpreter.encode() + b"\n" + rest
    tmp = target.with_name(f".{tool}.tmp")
    tmp.write_bytes(source)
    os.chmod(tmp, 0o755)
    os.replace(tmp, target)
    state: dict[str, Any] = {
        "format": STATE_FORMAT,
        "tool": tool,
        "devices": [
            {
                "id": str(index),
                "kind": kind,
                "firmware": firmware,
                "serial": "SIM-" + hashlib.sha256(f"{root}|{index}|{kind}".encode()).hexdigest()[:12].upper(),
                "staged": None,
            }
            for index, (kind, firmware) in enumerate(devices)
        ],
    }
    npu.write_state(state_path(root), state)
    return target


def read_devices(root: Path) -> list[dict[str, Any]]:
    """The raw device records of the simulator under ``root`` (for tests and the demo)."""
    state = json.loads(state_path(root).read_text(encoding="utf-8"))
    devices: list[dict[str, Any]] = state["devices"]
    return devices



def set_fault(root: Path, device_id: str, fault: str | None) -> None:
    """Inject (or clear, with ``None``) a simulated hardware fault on one device; see :data:`FAULTS`."""
    if fault is not None and fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
    path = state_path(root)
    with npu.locked(path):
        state = npu.read_state(path)
        dev = npu.find_device(state, device_id)
        dev["fault"] = fault
        npu.write_state(path, state)
