#!/usr/bin/env python3
"""Simulated accelerator vendor tool (``rbln-smi`` / ``furiosa-smi`` / ``nvidia-smi``).

Standalone: standard library only, no sovkit imports, so it can be copied onto
any host as a single executable file. It speaks exactly the contract of the
vendor profiles in ``sovkit/catalog/profiles.yaml``; which tool it is follows
from the name it was invoked as (``basename(argv[0])``)::

    rbln-smi     query  rbln-smi --json
                 flash  rbln-smi fw-update --device D --image IMG
                 reset  rbln-smi reset --device D
    furiosa-smi  query  furiosa-smi info --format json
                 flash  furiosa-smi firmware update --device D IMG
                 reset  furiosa-smi reset --device D
    nvidia-smi   query  nvidia-smi --json
                 flash  nvidia-smi fw-update --device D --image IMG
                 reset  nvidia-smi -r -i D

Query prints ``{"devices": [{"id": "0", "kind": KIND, "firmware": VERSION,
"pending_firmware": VERSION-or-null, "serial": ...}, ...]}`` on stdout.
Flash validates the image and *stages* it; the reported ``firmware`` does not
change until ``reset`` activates the staged version (like real devices, which
boot the new firmware only after a reset). Reset without a staged image is a
plain reset and changes nothing.

Device state lives in a JSON file found relative to this script's own path
(not following symlinks): a tool installed at ``{root}/bin/<tool>`` keeps its
state in ``{root}/var/lib/npu-sim/devices.json``. Writes are atomic (temporary
file + fsync + rename) under an exclusive ``flock`` on a sibling lock file::

    {"format": 1, "tool": "rbln-smi",
     "devices": [{"id": "0", "kind": "rebellions-atom", "firmware": "1.0.0",
                  "serial": "SIM-...", "staged": null}]}

``staged`` is ``null`` or ``{"version": V, "image_sha256": HEX}``. An optional
``fault`` per device injects a hardware failure for tests:

* ``"flash-error"``: every flash fails (exit 1, "I/O error"), nothing is staged;
* ``"reset-no-activate"``: reset exits 0 but the device falls back to the
  firmware it had (the staged image is dropped), so a read-back after the
  reset still reports the old version.

Firmware image format ``SOVKIT-SIMFW/1``::

    line 1   b"SOVKIT-SIMFW/1\\n"                                    (magic)
    line 2   JSON object, one line, UTF-8, terminated by b"\\n":   (header)
             {"accelerator": KIND, "version": V,
              "payload_sha256": HEX64, "payload_size": N}
    rest     exactly N payload bytes whose sha256 is HEX64

An image is rejected (exit 1, message on stderr, device state untouched) when
the magic is wrong, the header is not valid JSON or misses a field, the payload
is shorter (truncated) or longer than ``payload_size``, the payload digest does
not match, or ``accelerator`` is not the kind of the target device. An unknown
device id, a missing image file or an unrecognised command line are errors too
(exit 2 for usage errors).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MAGIC = b"SOVKIT-SIMFW/1"
STATE_RELPATH = Path("var/lib/npu-sim/devices.json")
STATE_FORMAT = 1

# argv after the tool name, per tool and command; "{device}" / "{image}" are placeholders.
# Must match sovkit/catalog/profiles.yaml (a test checks it).
TOOLS: dict[str, dict[str, list[str]]] = {
    "rbln-smi": {
        "query": ["--json"],
        "flash": ["fw-update", "--device", "{device}", "--image", "{image}"],
        "reset": ["reset", "--device", "{device}"],
    },
    "furiosa-smi": {
        "query": ["info", "--format", "json"],
        "flash": ["firmware", "update", "--device", "{device}", "{image}"],
        "reset": ["reset", "--device", "{device}"],
    },
    "nvidia-smi": {
        "query": ["--json"],
        "flash": ["fw-update", "--device", "{device}", "--image", "{image}"],
        "reset": ["-r", "-i", "{device}"],
    },
}

FAULTS = ("flash-error", "reset-no-activate")

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2


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


# --------------------------------------------------------------------------- state


def state_path_for(script: Path) -> Path:
    """``{root}/bin/<tool>`` -> ``{root}/var/lib/npu-sim/devices.json``."""
    return script.parent.parent / STATE_RELPATH


def write_state(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` atomically: temporary file in the same directory, fsync, rename, fsync dir."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".devices.", suffix=".tmp", dir=path.parent)
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


def read_state(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise SimError(f"no simulated devices: state file {path} does not exist") from exc
    try:
        state = json.loads(text)
    except ValueError as exc:
        raise SimError(f"corrupt simulator state {path}: {exc}") from exc
    if not isinstance(state, dict) or not isinstance(state.get("devices"), list):
        raise SimError(f"corrupt simulator state {path}: no device list")
    return state


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Exclusive lock for a read-modify-write of the state file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a", encoding="utf-8") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def find_device(state: dict[str, Any], device_id: str) -> dict[str, Any]:
    for dev in state["devices"]:
        if isinstance(dev, dict) and str(dev.get("id")) == device_id:
            return dev
    known = ", ".join(str(d.get("id")) for d in state["devices"] if isinstance(d, dict)) or "none"
    raise SimError(f"unknown device {device_id!r} (known devices: {known})")


# --------------------------------------------------------------------------- commands


def cmd_query(state_file: Path) -> str:
    state = read_state(state_file)
    devices = []
    for dev in state["devices"]:
        staged = dev.get("staged")
        devices.append({
            "id": str(dev["id"]),
            "kind": dev["kind"],
            "firmware": dev["firmware"],
            "pending_firmware": staged["version"] if isinstance(staged, dict) else None,
            "serial": dev.get("serial", ""),
            "status": "ok",
        })
    return json.dumps({"devices": devices}, indent=2)


def cmd_flash(state_file: Path, device_id: str, image: str) -> str:
    try:
        data = Path(image).read_bytes()
    except OSError as exc:
        raise SimError(f"cannot read firmware image {image}: {exc.strerror or exc}") from exc
    with locked(state_file):
        state = read_state(state_file)
        dev = find_device(state, device_id)
        try:
            header = parse_image(data)
        except SimError as exc:
            raise SimError(f"device {device_id}: rejected image {image}: {exc}") from exc
        if header["accelerator"] != dev["kind"]:
            raise SimError(
                f"device {device_id}: rejected image {image}: built for accelerator "
                f"{header['accelerator']!r}, device is {dev['kind']!r}"
            )
        if dev.get("fault") == "flash-error":
            raise SimError(f"device {device_id}: flash failed: I/O error writing firmware (simulated hardware fault)")
        dev["staged"] = {"version": header["version"], "image_sha256": hashlib.sha256(data).hexdigest()}
        write_state(state_file, state)
    return f"device {device_id}: firmware {header['version']} staged (active: {dev['firmware']}); reset to activate"


def cmd_reset(state_file: Path, device_id: str) -> str:
    with locked(state_file):
        state = read_state(state_file)
        dev = find_device(state, device_id)
        staged = dev.get("staged")
        if not isinstance(staged, dict):
            return f"device {device_id}: reset; firmware {dev['firmware']}"
        previous = dev["firmware"]
        dev["staged"] = None
        if dev.get("fault") == "reset-no-activate":
            write_state(state_file, state)
            return f"device {device_id}: reset; firmware {staged['version']} did not boot, running {previous}"
        dev["firmware"] = staged["version"]
        write_state(state_file, state)
    return f"device {device_id}: reset; firmware {previous} -> {dev['firmware']}"


def match(pattern: list[str], args: list[str]) -> dict[str, str] | None:
    """Match argv against a pattern with ``{name}`` placeholders; return the bindings or None."""
    if len(pattern) != len(args):
        return None
    bound: dict[str, str] = {}
    for want, got in zip(pattern, args, strict=True):
        if want.startswith("{") and want.endswith("}"):
            if got.startswith("-") and got != "-":
                return None
            bound[want[1:-1]] = got
        elif want != got:
            return None
    return bound


def usage(tool: str) -> str:
    lines = [f"usage ({tool}, sovkit NPU simulator):"]
    for patt in TOOLS[tool].values():
        lines.append("  " + " ".join([tool, *(p.upper().strip("{}") if p.startswith("{") else p for p in patt)]))
    return "\n".join(lines)


def run(argv: list[str], script: Path) -> tuple[int, str, str]:
    """Run one command; return (exit code, stdout, stderr). Pure apart from the state file."""
    tool = os.path.basename(argv[0]) if argv else ""
    if tool not in TOOLS:
        return EXIT_USAGE, "", f"npu-sim: invoked as {tool!r}; install it as one of: {', '.join(sorted(TOOLS))}\n"
    args = argv[1:]
    if args in (["-h"], ["--help"]):
        return EXIT_OK, usage(tool) + "\n", ""
    state_file = state_path_for(script)
    try:
        for command, pattern in TOOLS[tool].items():
            bound = match(pattern, args)
            if bound is None:
                continue
            if command == "query":
                return EXIT_OK, cmd_query(state_file) + "\n", ""
            if command == "flash":
                return EXIT_OK, cmd_flash(state_file, bound["device"], bound["image"]) + "\n", ""
            return EXIT_OK, cmd_reset(state_file, bound["device"]) + "\n", ""
        raise SimError(f"unrecognised arguments: {' '.join(args) or '(none)'}\n{usage(tool)}", EXIT_USAGE)
    except SimError as exc:
        return exc.code, "", f"{tool}: error: {exc}\n"


def main() -> int:
    code, out, err = run(sys.argv, Path(os.path.abspath(__file__)))
    sys.stdout.write(out)
    sys.stderr.write(err)
    return code


if __name__ == "__main__":
    sys.exit(main())
