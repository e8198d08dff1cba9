"""List a host's accelerators in one normalised form, from the vendor tool's own output.

Run on the host as ``python -c "$(cat npu_devices.py)" SPEC_JSON`` (standard library only), where SPEC_JSON is
``{"format": "rbln-smi"|"furiosa-smi"|"nvidia-smi-csv", "commands": [[argv...], ...],
"chips": {"<chip name as the tool prints it>": "<catalog kind>"}}`` (from sovkit's catalog, data only).
It runs the commands (no shell), parses each vendor's format and prints ONE JSON line::

  {"devices": [{"bdf": "0000:01:00.0", "index": "0", "chip": "RBLN-CA25", "kind": "rebellions-atom-max",
                "firmware": "1.3.0"}], "untrusted": []}

A device whose tool reports its power limit (nvidia-smi's ``power.limit``) also has ``"power_limit_w"``: watts
as a number; ``[N/A]`` (no power management) leaves the key out.

Devices are keyed by PCI bus id (sysfs form). A value that is not plain (a BDF, index, chip name or version
outside the patterns below, the same as sovkit/identifiers.py) is never passed on: the device is left out and
the reason is listed under ``untrusted``. A command that fails or prints something unparsable gives
``{"error": ...}`` and exit status 1. sovkit imports this file too (sovkit.components.firmware) so the parsing
and the checks exist once.
"""

import json
import re
import subprocess
import sys

# the same patterns as sovkit/identifiers.py (a test keeps them equal)
BDF = r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-1][0-9a-f]\.[0-7]$"
CHIP_NAME = r"^[A-Za-z0-9][A-Za-z0-9 ._+-]{0,63}$"
DEVICE_INDEX = r"^[0-9]{1,4}$"
VERSION = r"^[A-Za-z0-9][A-Za-z0-9.+_-]{0,63}$"
WATTS = r"^[0-9]{1,5}(\.[0-9]{1,3})?$"

FORMATS = ("rbln-smi", "furiosa-smi", "nvidia-smi-csv")


class ParseError(ValueError):
    """The tool's output is not in the vendor's documented format."""


def _plain(pattern, value):
    return isinstance(value, str) and re.fullmatch(pattern, value) is not None


def _describe(value, limit=60):
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def normalise_bdf(value):
    """A PCI address in sysfs form: nvidia-smi's ``00000000:01:00.0`` -> ``0000:01:00.0``; lower case."""
    if not isinstance(value, str):
        return value
    text = value.strip().lower()
    m = re.fullmatch(r"([0-9a-f]{4,8}):([0-9a-f]{2}:[0-9a-f]{2}\.[0-7])", text)
    if m and len(m.group(1)) > 4 and m.group(1)[:-4].strip("0") == "":
        text = f"{m.group(1)[-4:]}:{m.group(2)}"
    return text


def _json(text, what):
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ParseError(f"{what} did not print JSON: {exc}") from None


def _rbln(outputs):
    """``rbln-smi -j`` (devices[].npu, name, pci.bus_id) joined on npu with ``rbln-smi -q -qd
    npu,name,device,fw_ver`` (a header line, then one comma-separated line per device; format [R])."""
    if len(outputs) != 2:
        raise ParseError("rbln-smi needs the JSON and the query-mode output")
    doc = _json(outputs[0], "rbln-smi -j")
    if not isinstance(doc, dict) or not isinstance(doc.get("devices"), list):
        raise ParseError("rbln-smi -j printed no devices list")
    lines = [line.strip() for line in outputs[1].splitlines() if line.strip()]
    if not lines:
        raise ParseError("rbln-smi -q printed nothing")
    header = [h.strip() for h in lines[0].split(",")]
    if not {"npu", "fw_ver"} <= set(header):
        raise ParseError(f"rbln-smi -q header {_describe(lines[0])} lacks npu and fw_ver")
    fw = {}
    for line in lines[1:]:
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != len(header):
            raise ParseError(f"rbln-smi -q line {_describe(line)} has {len(cells)} fields, not {len(header)}")
        row = dict(zip(header, cells))
        fw[row["npu"]] = row["fw_ver"]
    out = []
    for d in doc["devices"]:
        if not isinstance(d, dict):
            raise ParseError("rbln-smi -j lists a device that is not an object")
        pci = d.get("pci")
        npu = d.get("npu")
        out.append({"bdf": pci.get("bus_id") if isinstance(pci, dict) else None, "index": npu,
                    "chip": d.get("name"), "firmware": fw.get(npu) if isinstance(npu, str) else None})
    return out


def _furiosa(outputs):
    """``furiosa-smi info --format json``: an array of {arch, dev_name "npuN", firmware, pci_bdf, ...}."""
    doc = _json(outputs[0], "furiosa-smi info")
    if not isinstance(doc, list):
        raise ParseError("furiosa-smi info --format json did not print an array")
    out = []
    for d in doc:
        if not isinstance(d, dict):
            raise ParseError("furiosa-smi lists a device that is not an object")
        name = d.get("dev_name")
        index = name[3:] if isinstance(name, str) and name.startswith("npu") else name
        out.append({"bdf": d.get("pci_bdf"), "index": index, "chip": d.get("arch"), "firmware": d.get("firmware")})
    return out


_NVIDIA_FIELDS = ("index", "name", "pci.bus_id", "vbios_version", "driver_version", "power.limit")


def _nvidia(outputs):
    """``nvidia-smi --query-gpu=index,name,pci.bus_id,vbios_version,driver_version,power.limit
    --format=csv,noheader,nounits``: one line per GPU, fields separated by ", "."""
    out = []
    for line in outputs[0].splitlines():
        if not line.strip():
            continue
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != len(_NVIDIA_FIELDS):
            raise ParseError(f"nvidia-smi line {_describe(line)} has {len(cells)} fields, not {len(_NVIDIA_FIELDS)}")
        row = dict(zip(_NVIDIA_FIELDS, cells))
        dev = {"bdf": row["pci.bus_id"], "index": row["index"], "chip": row["name"],
               "firmware": row["vbios_version"]}
        if row["power.limit"] != "[N/A]":
            dev["power_limit_w"] = row["power.limit"]
        out.append(dev)
    return out


_PARSERS = {"rbln-smi": _rbln, "furiosa-smi": _furiosa, "nvidia-smi-csv": _nvidia}


def check(raw, chips):
    """Keep the devices whose every value is plain; map chip names to catalog kinds (None: not in the catalog).

    Returns (devices, untrusted reasons). Used on the parsers' output on the host, and by sovkit again on what
    a host printed (a host is not trusted to have run this code)."""
    devices, untrusted, seen = [], [], set()
    if not isinstance(raw, list):
        return [], ["the device list is not a list"]
    for i, d in enumerate(raw):
        if not isinstance(d, dict):
            untrusted.append(f"device #{i} is not an object")
            continue
        bdf = normalise_bdf(d.get("bdf"))
        bad = [f"{field} {_describe(d.get(field))}" for field, pattern, value in (
            ("bdf", BDF, bdf), ("index", DEVICE_INDEX, d.get("index")), ("chip", CHIP_NAME, d.get("chip")),
            ("firmware", VERSION, d.get("firmware"))) if not _plain(pattern, value)]
        watts = d.get("power_limit_w")
        if watts is not None and not _plain(WATTS, watts if isinstance(watts, str) else f"{watts}"):
            bad.append(f"power_limit_w {_describe(watts)}")
        kind = chips.get(d["chip"]) if not bad else None  # from the catalog's mapping, never from the host
        if not bad and bdf in seen:
            bad.append(f"bdf {bdf} listed twice")
        if bad:
            untrusted.append(f"device #{i}: not a plain value: {', '.join(bad)}")
            continue
        seen.add(bdf)
        dev = {"bdf": bdf, "index": d["index"], "chip": d["chip"], "kind": kind, "firmware": d["firmware"]}
        if watts is not None:
            dev["power_limit_w"] = float(watts)
        devices.append(dev)
    return sorted(devices, key=lambda d: d["bdf"]), untrusted


def parse(fmt, outputs, chips):
    """The vendor tool's output(s) -> (devices, untrusted); raises ParseError when not in the vendor's format."""
    if fmt not in _PARSERS:
        raise ParseError(f"unknown query format {_describe(fmt)}")
    raw = _PARSERS[fmt](outputs)
    return check(raw, chips)


def main(argv):
    try:
        spec = json.loads(argv[1])
        outputs = []
        for command in spec["commands"]:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
            if proc.returncode != 0:
                raise ParseError(f"{command[0]} exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
            outputs.append(proc.stdout)
        devices, untrusted = parse(spec["format"], outputs, spec["chips"])
    except (ParseError, OSError, subprocess.SubprocessError, KeyError, IndexError, TypeError, ValueError) as exc:
        print(json.dumps({"devices": [], "untrusted": [], "error": f"{type(exc).__name__}: {exc}"}))
        return 1
    print(json.dumps({"devices": devices, "untrusted": untrusted}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
