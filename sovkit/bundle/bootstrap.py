"""First install on an air-gapped machine: get sovkit's wheels out of the volumes with the standard library only.

sovkit is needed to join, verify and import a bundle, so the very first
install cannot use it. This file is copied next to ``volumes.json`` as
``sovkit-bootstrap.py``; run it with any Python 3.11::

    python3 sovkit-bootstrap.py /media/usb1 [/media/usb2 ...] -o /tmp/wheelhouse

It reads the wheels' byte ranges from the parts, checks each against the
sha256 in ``manifest.json`` and ``volumes.json``, refuses a bundle whose
wheels are for another platform or Python (the manifest's ``target``) before
writing anything, writes them plus a
``requirements.txt`` pinning every hash (for ``pip install --require-hashes``),
and prints the manifest's sha256. Compare that with the digest printed by
``sovkit bundle create`` on the connected side (carried separately, e.g. on
paper): that check is what makes this step trustworthy without a signature
verifier. Then ``sovkit bundle verify`` checks the signature over everything.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import re
import sys
from pathlib import Path
from typing import Any

_WHEEL = re.compile(r"^wheels/([A-Za-z0-9_.+-]+\.whl)$")
_MACHINES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "armv8": "aarch64"}


def host_platform() -> str:
    """``linux/x86_64``: this machine as bundle targets name platforms (also used by ``sovkit bundle create``)."""
    machine = platform.machine().lower()
    return f"{sys.platform}/{_MACHINES.get(machine, machine)}"


def host_python() -> str:
    return f"{sys.version_info[0]}.{sys.version_info[1]}"


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"[0-9]+", text)[:2])


def target_problem(target: dict[str, Any] | None) -> str | None:
    """Why this machine cannot install the bundle's wheels, naming both sides; None when it can."""
    if not target:
        return None  # made before targets were recorded: wheels for the machine that created the bundle
    here_py, impl = host_python(), "cp" if sys.implementation.name == "cpython" else sys.implementation.name
    want = f"{target['platform']} {target['implementation']}{target['python'].replace('.', '')}"
    here = f"{host_platform()} {impl}{here_py.replace('.', '')}"
    if want != here:
        return (f"this bundle's wheels are for {want}, this machine is {here}: run this bootstrap on a "
                f"{target['platform']} machine with Python {target['python']} (the Python that will run sovkit), "
                f"or create the bundle again on the connected side with "
                f"`sovkit bundle create ... --platform {host_platform()} --python {here_py}`; nothing was written")
    need = target.get("glibc")
    if need:
        libc, version = platform.libc_ver()
        if libc != "glibc" or _version(version) < _version(need):
            have = f"{libc} {version}".strip() or "no glibc"
            return (f"this bundle's wheels for {want} need glibc >= {need}, this machine has {have}: run it on a "
                    f"newer OS release (glibc >= {need}); nothing was written")
    return None


def _locate(inputs: list[Path]) -> tuple[dict[str, Any], dict[str, Path]]:
    index: dict[str, Any] | None = None
    parts: dict[str, Path] = {}
    for d in inputs:
        if (d / "volumes.json").is_file() and index is None:
            index = json.loads((d / "volumes.json").read_text())
        parts.update({p.name: p for p in d.glob("part-*.svb")})
    if index is None:
        sys.exit("no volumes.json in the given directories")
    return index, parts


def _read(index: dict[str, Any], parts: dict[str, Path], name: str) -> bytes:
    offset = 0
    for f in index["files"]:
        if f["name"] == name:
            break
        offset += f["size"]
    else:
        sys.exit(f"{name} is not in volumes.json")
    size, step, out = f["size"], index["part_size"], bytearray()
    while len(out) < size:
        pos = offset + len(out)
        part = index["parts"][pos // step]["name"]
        if part not in parts:
            sys.exit(f"{name} needs {part}: pass the directory of the medium that holds it")
        with open(parts[part], "rb") as fh:
            fh.seek(pos % step)
            chunk = fh.read(min(size - len(out), step - pos % step))
        if not chunk:
            sys.exit(f"{part} is shorter than volumes.json says: copy it again")
        out += chunk
    if hashlib.sha256(out).hexdigest() != f["sha256"]:
        sys.exit(f"{name}: sha256 differs from volumes.json (damaged part)")
    return bytes(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("volumes", nargs="+", type=Path, help="directories holding volumes.json and part files")
    ap.add_argument("-o", "--out", type=Path, required=True, help="wheelhouse directory to write")
    args = ap.parse_args(argv)
    index, parts = _locate(args.volumes)
    raw = _read(index, parts, "manifest.json")
    manifest = json.loads(raw)
    problem = target_problem(manifest.get("target"))
    if problem:
        sys.exit(problem)
    args.out.mkdir(parents=True, exist_ok=True)
    pins: list[str] = []
    for entry in manifest["entries"]:
        m = _WHEEL.match(entry["path"])
        if not m:
            continue
        data = _read(index, parts, f"blobs/sha256/{entry['sha256']}")
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            sys.exit(f"{entry['path']}: sha256 differs from manifest.json")
        (args.out / m.group(1)).write_bytes(data)
        pins.append(f"{args.out / m.group(1)} --hash=sha256:{entry['sha256']}")
    if not pins:
        sys.exit("this bundle carries no wheels (it was made with --no-self)")
    (args.out / "requirements.txt").write_text("\n".join(pins) + "\n")
    print(f"manifest sha256:{hashlib.sha256(raw).hexdigest()}  <- must equal the digest printed by bundle create")
    print(f"{len(pins)} wheel(s) in {args.out}; install with:")
    print(f"  python3 -m venv /opt/sovkit && /opt/sovkit/bin/pip install --no-index --require-hashes "
          f"-r {args.out / 'requirements.txt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
