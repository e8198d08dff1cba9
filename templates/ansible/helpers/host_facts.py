"""Print this host's hardware facts as JSON: host_facts.py ROOT  (ROOT is "/" on a real host).

Reads {ROOT}/proc/cpuinfo, {ROOT}/proc/meminfo, {ROOT}/etc/os-release and {ROOT}/sys/bus/pci/devices/*/{vendor,
device,class}. Stdlib only, reads a bounded number of bytes per file and reports raw strings: the controller
(sovkit/provision/facts.py) validates every value with strict patterns, so nothing is interpreted here.
A file or directory that does not exist is reported as absent (null), never guessed.
"""

import json
import os
import platform
import sys

MAX_FILE = 4 * 1024 * 1024  # bytes read from any one file (a 512-core x86 cpuinfo is well under this)
MAX_VALUE = 300  # characters kept of one value: longer ones still fail the controller's patterns
MAX_DISTINCT = 32  # distinct values kept per cpuinfo field
MAX_PCI = 512  # PCI functions listed


def _read(path):
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE + 1)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        return {"error": type(exc).__name__}
    if len(data) > MAX_FILE:
        return {"error": "too large"}
    return data.decode("utf-8", "replace")


def _cpuinfo(text):
    """Distinct Arm "implementer:part" pairs (each core's block), x86 vendor_id and model name, core count."""
    out = {"parts": [], "vendor_id": [], "model_name": []}
    processors = 0
    implementer = None

    def add(name, value):
        value = value[:MAX_VALUE]
        if value not in out[name] and len(out[name]) < MAX_DISTINCT:
            out[name].append(value)

    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "processor":
            processors += 1
            implementer = None
        elif key == "CPU implementer":
            implementer = value
        elif key == "CPU part":
            add("parts", f"{implementer if implementer is not None else '?'}:{value}")
        elif key == "vendor_id":
            add("vendor_id", value)
        elif key == "model name":
            add("model_name", value)
    out["processors"] = processors
    return out


def _meminfo(text):
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "MemTotal":
            return value.strip()[:MAX_VALUE]
    return None


def _os_release(text):
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key in ("ID", "VERSION_ID", "PRETTY_NAME"):
            out[key.lower()] = value.strip().strip("\"'")[:MAX_VALUE]
    return out


def _pci(base):
    try:
        names = sorted(os.listdir(base))
    except (FileNotFoundError, NotADirectoryError):
        return None
    out = []
    for bdf in names[:MAX_PCI]:
        entry = {"bdf": bdf[:MAX_VALUE]}
        for attr in ("vendor", "device", "class"):
            value = _read(os.path.join(base, bdf, attr))
            entry[attr] = value.strip()[:MAX_VALUE] if isinstance(value, str) else None
        out.append(entry)
    return out


def main(root):
    def at(path):
        return os.path.join(root, path)

    facts = {"cpuinfo": None, "memtotal": None, "os": None, "pci": _pci(at("sys/bus/pci/devices")),
             "machine": platform.machine() if os.path.realpath(root) == "/" else None, "errors": []}
    for key, path, parse in (("cpuinfo", "proc/cpuinfo", _cpuinfo), ("memtotal", "proc/meminfo", _meminfo),
                             ("os", "etc/os-release", _os_release)):
        text = _read(at(path))
        if isinstance(text, dict):
            facts["errors"].append(f"{path}: {text['error']}")
        elif text is not None:
            facts[key] = parse(text)
    print(json.dumps(facts, sort_keys=True))


main(sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] else "/")
