"""Core of the NPU simulator: hardware table, host state, firmware images, activation and faults.

Standalone (standard library only, no sovkit imports): it is copied onto simulated hosts next to the
vendor-tool modules (``{root}/usr/lib/sovkit-npu-sim/``) and imported by the tool entry script.

Source labels as in the shared reference: [V] vendor doc, [S] secondary, [R] unconfirmed (the simulator's
choice where nothing could be confirmed).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MAGIC = b"SOVKIT-SIMFW/1"
STATE_RELPATH = Path("var/lib/npu-sim/devices.json")
STATE_FORMAT = 2
LIB_RELPATH = Path("usr/lib/sovkit-npu-sim")

FAULTS = ("flash-error", "boots-old-firmware", "missing-after-reboot", "diagnostic-error")

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2

#: per vendor: PCI vendor id [S pci.ids], kernel module, how staged firmware becomes active, daemons that hold
#: the module while running ({unit: module}), the default loaded module version (simulated value)
VENDORS: dict[str, dict[str, Any]] = {
    "rebellions": {"pci_vendor": "1eff", "module": "rebellions", "activation": "driver-reload",
                   "daemons": {"rbln-smd.service": "rebellions"}, "module_version": "1.3.73",
                   "tools": ["rbln-smi", "rbln-flash", "systemctl"]},
    "furiosa": {"pci_vendor": "1ed2", "module": "rngd", "activation": "reboot", "daemons": {},
                "module_version": "2025.1.0", "tools": ["furiosa-smi", "furiosa_rngd_updater_all"]},
    "nvidia": {"pci_vendor": "10de", "module": "nvidia", "activation": "reset", "daemons": {},
               "module_version": "550.54.15", "tools": ["nvidia-smi", "nvfwupd"]},
}

GIB = 1 << 30
#: per catalog accelerator kind: what the simulated card looks like. ``npus`` = NPUs (PCI functions) per card.
HARDWARE: dict[str, dict[str, Any]] = {
    "rebellions-atom": {"vendor": "rebellions", "chip": "RBLN-CA02", "pci_device": "1020", "class": "0x120000",
                        "npus": 1, "memory": 16 * GIB},
    "rebellions-atom-max": {"vendor": "rebellions", "chip": "RBLN-CA25", "pci_device": "1250",
                            "class": "0x120000", "npus": 1, "memory": 64 * GIB},
    # [R] REBEL-Quad as four NPUs (one PCI function each) named RBLN-CR13; the reference's v0.12 example shows
    # one RBLN-CR13 device with 140 GiB, which may mean a whole card is one device: set npus to 1 if confirmed
    "rebellions-rebel-quad": {"vendor": "rebellions", "chip": "RBLN-CR13", "pci_device": "2130",
                              "class": "0x120000", "npus": 4, "memory": 35 * GIB},
    "furiosa-rngd": {"vendor": "furiosa", "chip": "rngd", "pci_device": "0001", "class": "0x120000", "npus": 1,
                     "memory": 48 * GIB},
    # NVIDIA device ids [R]; class 0x030200 (3D controller) [R]; power limits min/max/default in W [R]
    "nvidia-h100-sxm": {"vendor": "nvidia", "chip": "NVIDIA H100 80GB HBM3", "pci_device": "2330",
                        "class": "0x030200", "npus": 1, "memory": 80 * GIB, "power": [200, 700, 700]},
    "nvidia-h200": {"vendor": "nvidia", "chip": "NVIDIA H200", "pci_device": "2335", "class": "0x030200",
                    "npus": 1, "memory": 141 * GIB, "power": [200, 700, 700]},
    "nvidia-b200": {"vendor": "nvidia", "chip": "NVIDIA B200", "pci_device": "2901", "class": "0x030200",
                    "npus": 1, "memory": 180 * GIB, "power": [200, 1000, 1000]},
    "nvidia-l40s": {"vendor": "nvidia", "chip": "NVIDIA L40S", "pci_device": "26b9", "class": "0x030200",
                    "npus": 1, "memory": 48 * GIB, "power": [100, 350, 350]},
    "nvidia-a100-80gb-sxm": {"vendor": "nvidia", "chip": "NVIDIA A100-SXM4-80GB", "pci_device": "20b2",
                             "class": "0x030200", "npus": 1, "memory": 80 * GIB, "power": [100, 400, 400]},
    "nvidia-a100-40gb-sxm": {"vendor": "nvidia", "chip": "NVIDIA A100-SXM4-40GB", "pci_device": "20b0",
                             "class": "0x030200", "npus": 1, "memory": 40 * GIB, "power": [100, 400, 400]},
}


class SimError(Exception):
    """A failure reported on stderr with a non-zero exit code."""

    def __init__(self, message: str, code: int = EXIT_FAIL) -> None:
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------- images


def build_image(accelerator: str, version: str, payload: bytes) -> bytes:
    """Assemble an image from its parts (the inverse of :func:`parse_image`)."""
    header = {
        "accelerator": accelerator,
        "version": version,
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "payload_size": len(payload),
    }
    line = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    return MAGIC + b"\n" + line + b"\n" + payload


def parse_image(data: bytes) -> dict[str, Any]:
    """Validate an image and return its header; raise :class:`SimError` naming the defect."""
    magic, sep, rest = data.partition(b"\n")
    if magic != MAGIC or not sep:
        shown = magic[:32].decode("ascii", "replace")
        raise SimError(f"bad magic {shown!r}: not a {MAGIC.decode()} firmware image")
    header_line, sep, payload = rest.partition(b"\n")
    if not sep:
        raise SimError("truncated image: header line is not terminated")
    try:
        header = json.loads(header_line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise SimError(f"corrupt image header: {exc}") from exc
    if not isinstance(header, dict):
        raise SimError("corrupt image header: not a JSON object")
    for key, kind in (("accelerator", str), ("version", str), ("payload_sha256", str), ("payload_size", int)):
        value = header.get(key)
        if not isinstance(value, kind) or isinstance(value, bool) or value in ("",):
            raise SimError(f"corrupt image header: field {key!r} missing or not a {kind.__name__}")
    size = header["payload_size"]
    if size < 0:
        raise SimError("corrupt image header: negative payload_size")
    if len(payload) < size:
        raise SimError(f"truncated image: payload has {len(payload)} of {size} bytes")
    if len(payload) > size:
        raise SimError(f"corrupt image: {len(payload) - size} bytes of trailing data after the payload")
    digest = hashlib.sha256(payload).hexdigest()
    if digest != header["payload_sha256"].lower():
        raise SimError(f"payload digest mismatch: header says sha256 {header['payload_sha256']}, payload is {digest}")
    return header


def read_image(path: str) -> tuple[bytes, dict[str, Any]]:
    """Read and validate an image file."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SimError(f"cannot read firmware image {path}: {exc.strerror or exc}") from exc
    try:
        return data, parse_image(data)
    except SimError as exc:
        raise SimError(f"rejected image {path}: {exc}") from exc


# --------------------------------------------------------------------------- state files


def write_json(path: Path, state: Any) -> None:
    """Write JSON atomically: temporary file in the same directory, fsync, rename, fsync dir."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(state, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class Host:
    """One simulated host under ``root``: its state file, sysfs, modules and daemons."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.state_file = root / STATE_RELPATH
        self.state: dict[str, Any] = {}

    # -- state

    def load(self) -> dict[str, Any]:
        try:
            text = self.state_file.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise SimError(f"no simulated devices: state file {self.state_file} does not exist") from exc
        try:
            state = json.loads(text)
        except ValueError as exc:
            raise SimError(f"corrupt simulator state {self.state_file}: {exc}") from exc
        if not isinstance(state, dict) or not isinstance(state.get("devices"), list):
            raise SimError(f"corrupt simulator state {self.state_file}: no device list")
        if state.get("format") != STATE_FORMAT:
            raise SimError(f"simulator state {self.state_file} has format {state.get('format')!r}, "
                           f"expected {STATE_FORMAT}: reinstall the simulator")
        self.state = state
        return state

    def save(self) -> None:
        write_json(self.state_file, self.state)

    @contextlib.contextmanager
    def locked(self) -> Iterator[dict[str, Any]]:
        """Exclusive lock for a read-modify-write of the state; syncs driver reloads first, saves after."""
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.state_file.with_name(self.state_file.name + ".lock"), "a", encoding="utf-8") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                before = json.dumps(self.load(), sort_keys=True)
                self.sync_reloads()
                yield self.state
                if json.dumps(self.state, sort_keys=True) != before:
                    self.save()
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    # -- devices

    def devices(self, vendor: str | None = None, present: bool = True) -> list[dict[str, Any]]:
        """Devices (present ones by default) of one vendor or all, in BDF order."""
        devs = [d for d in self.state["devices"] if (vendor is None or d["vendor"] == vendor)
                and (not present or d.get("present", True))]
        return sorted(devs, key=lambda d: str(d["bdf"]))

    def find(self, key: str, vendor: str | None = None) -> dict[str, Any]:
        """A present device by BDF (``0000:01:00.0`` or ``01:00.0``) or by the vendor tool's index."""
        devs = self.devices(vendor)
        bdf = normalise_bdf(key)
        for index, dev in enumerate(devs):
            if dev["bdf"] == bdf or (key.isdigit() and int(key) == index):
                return dev
        known = ", ".join(d["bdf"] for d in devs) or "none"
        raise SimError(f"no such device {key!r} (devices: {known})")

    # -- kernel modules, daemons

    def module_dir(self, vendor: str) -> Path:
        return self.root / "sys/module" / str(VENDORS[vendor]["module"])

    def module_loaded(self, vendor: str) -> bool:
        return self.module_dir(vendor).is_dir()

    def module_version(self, vendor: str) -> str:
        try:
            return (self.module_dir(vendor) / "version").read_text(encoding="utf-8").strip()
        except OSError:
            return ""

    def require_driver(self, vendor: str) -> None:
        if not self.module_loaded(vendor):
            module = VENDORS[vendor]["module"]
            raise SimError(f"no NPU driver loaded (kernel module {module!r} is not loaded; modprobe {module})")

    def holder(self, module: str) -> Path:
        return self.root / "var/lib/npu-sim/holders" / module

    def daemon_running(self, unit: str) -> bool:
        module = self.unit_module(unit)
        try:
            return self.holder(module).read_text(encoding="utf-8").strip() == unit
        except OSError:
            return False

    def unit_module(self, unit: str) -> str:
        for vendor in self.state.get("vendors", []):
            if unit in VENDORS[vendor]["daemons"]:
                return str(VENDORS[vendor]["daemons"][unit])
        raise SimError(f"Unit {unit} not found.", 5)

    # -- firmware activation

    def stage(self, dev: dict[str, Any], image_path: str, data: bytes, header: dict[str, Any]) -> None:
        """Stage a validated image on a device, or fail like the hardware would."""
        if header["accelerator"] != dev["kind"]:
            raise SimError(f"{dev['bdf']}: rejected image {image_path}: built for accelerator "
                           f"{header['accelerator']!r}, device is {dev['kind']!r}")
        if dev.get("fault") == "flash-error":
            raise SimError(f"{dev['bdf']}: flash failed: I/O error writing firmware (simulated hardware fault)")
        dev["staged"] = {"version": header["version"], "image_sha256": hashlib.sha256(data).hexdigest(),
                         "activation": VENDORS[dev["vendor"]]["activation"]}

    def restart(self, dev: dict[str, Any]) -> None:
        """The device comes back from a driver reload, reset or reboot: staged firmware boots, faults strike."""
        staged = dev.get("staged")
        dev["staged"] = None
        if isinstance(staged, dict) and dev.get("fault") != "boots-old-firmware":
            dev["firmware"] = staged["version"]
        if dev.get("fault") == "missing-after-reboot":
            dev["present"] = False
            shutil.rmtree(self.root / "sys/bus/pci/devices" / dev["bdf"], ignore_errors=True)

    def sync_reloads(self) -> None:
        """Apply driver reloads seen since the last tool run (why lazily: the modprobe shim knows no devices).

        rbln-flash refuses while the ``rebellions`` module is loaded, so an image staged by it was written
        with the module absent: if the module directory exists now, the driver was loaded after the flash.
        """
        for dev in self.devices():
            staged = dev.get("staged")
            if isinstance(staged, dict) and staged.get("activation") == "driver-reload" \
                    and self.module_loaded(dev["vendor"]):
                self.restart(dev)

    def reboot(self) -> None:
        """A cold reboot: every device restarts, modules load at boot, enabled daemons start, new boot id."""
        for dev in self.devices():
            self.restart(dev)
            if "power_limit_w" in dev:
                dev["power_limit_w"] = HARDWARE[dev["kind"]]["power"][2]
        for vendor in self.state.get("vendors", []):
            module = VENDORS[vendor]["module"]
            package = self.root / "var/lib/npu-sim/modules" / f"{module}.json"
            version: str | None = self.state.get("boot_modules", {}).get(module)
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                version = str(json.loads(package.read_text(encoding="utf-8"))["version"])
            if version is not None:
                write_text(self.module_dir(vendor) / "version", version + "\n")
            for unit, held in VENDORS[vendor]["daemons"].items():
                self.holder(held).unlink(missing_ok=True)
                if unit in self.state.get("daemons_enabled", []) and self.module_loaded(vendor):
                    write_text(self.holder(held), unit + "\n")
        write_text(self.root / "var/lib/npu-sim/boot_id", str(uuid.uuid4()) + "\n")


def normalise_bdf(text: str) -> str:
    """``01:00.0`` / ``00000000:01:00.0`` (nvidia's 8-digit domain) -> ``0000:01:00.0``; anything else as is."""
    parts = text.lower().split(":")
    if len(parts) == 2:
        return "0000:" + text.lower()
    if len(parts) == 3 and len(parts[0]) == 8:
        return parts[0][4:] + ":" + parts[1] + ":" + parts[2]
    return text.lower()
