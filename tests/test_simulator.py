"""The simulated host and vendor tools, driven with each vendor's documented argv through PATH, as a host would.

Kernel module load/unload is done here the way the ISSUE13 contract defines it on the filesystem
(``{root}/sys/module/<module>/`` appears/disappears; the driver helper's modprobe shim does the same).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sovkit import simulator
from sovkit.catalog import load_catalog
from sovkit.simulator import (
    CPUS,
    FAULTS,
    HARDWARE,
    VENDORS,
    install_simulator,
    make_firmware_image,
    read_devices,
    set_fault,
    state_path,
)

KIND = {"rebellions": "rebellions-atom-max", "furiosa": "furiosa-rngd", "nvidia": "nvidia-h100-sxm"}
BMC = ["-t", "ip=192.0.2.10", "user=admin", "password=secret"]


def run(root: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(list(argv), capture_output=True, text=True, env=env, timeout=60, check=False)


def ok(root: Path, *argv: str) -> str:
    proc = run(root, *argv)
    assert proc.returncode == 0, (argv, proc.stdout, proc.stderr)
    return proc.stdout


def unload(root: Path, module: str) -> None:
    shutil.rmtree(root / "sys/module" / module)


def load(root: Path, module: str, version: str = "9.9.9") -> None:
    (root / "sys/module" / module).mkdir(parents=True)
    (root / "sys/module" / module / "version").write_text(version + "\n")


def image(root: Path, kind: str, version: str) -> str:
    path = root / f"{kind}-{version}.fw"
    path.write_bytes(make_firmware_image(kind, version, payload_size=1024))
    return str(path)


# -- per vendor, as data: read {bdf: firmware} from the vendor's own format; update one device; activate


def query_rebellions(root: Path) -> dict[str, str]:
    bdf = {d["npu"]: d["pci"]["bus_id"] for d in json.loads(ok(root, "rbln-smi", "-j"))["devices"]}
    lines = ok(root, "rbln-smi", "-q", "-qd", "npu,name,device,fw_ver").splitlines()
    assert lines[0] == "npu, name, device, fw_ver"
    return {bdf[npu]: fw for npu, _name, _dev, fw in (line.split(", ") for line in lines[1:])}


def query_furiosa(root: Path) -> dict[str, str]:
    return {d["pci_bdf"]: d["firmware"] for d in json.loads(ok(root, "furiosa-smi", "info", "--format", "json"))}


def query_nvidia(root: Path) -> dict[str, str]:
    out = ok(root, "nvidia-smi", "--query-gpu=pci.bus_id,vbios_version", "--format=csv,noheader")
    return {bus[4:].lower(): fw for bus, fw in (line.split(", ") for line in out.splitlines())}


def update_rebellions(root: Path, img: str, bdf: str) -> subprocess.CompletedProcess[str]:
    ok(root, "systemctl", "stop", "rbln-smd.service")
    unload(root, "rebellions")
    return run(root, "rbln-flash", "--cp", "-f", img, "-s", bdf)


def activate_rebellions(root: Path) -> None:
    load(root, "rebellions")
    ok(root, "systemctl", "start", "rbln-smd.service")


def update_furiosa(root: Path, img: str, bdf: str) -> subprocess.CompletedProcess[str]:
    return run(root, "furiosa_rngd_updater_all", "-f", img)


def update_nvidia(root: Path, img: str, bdf: str) -> subprocess.CompletedProcess[str]:
    return run(root, "nvfwupd", *BMC, "update_fw", "-p", img)


VENDOR_OPS: dict[str, dict[str, Callable[..., Any]]] = {
    "rebellions": {"query": query_rebellions, "update": update_rebellions, "activate": activate_rebellions},
    "furiosa": {"query": query_furiosa, "update": update_furiosa,
                "activate": lambda root: ok(root, "sovkit-sim-reboot")},
    "nvidia": {"query": query_nvidia, "update": update_nvidia,
               "activate": lambda root: ok(root, "nvidia-smi", "-r", "-i", "0")},
}


@pytest.fixture(params=sorted(KIND))
def vendor(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- install


def test_every_catalog_accelerator_is_simulated() -> None:
    catalog = load_catalog()
    assert set(HARDWARE) == set(catalog.accelerators)
    for kind, acc in catalog.accelerators.items():
        assert HARDWARE[kind]["vendor"] == acc.vendor
    assert {c for c in CPUS if c != "arm-neoverse-v3"} == set(catalog.cpus)


def test_install_tools_of_the_vendors_present(tmp_path: Path) -> None:
    tools = install_simulator(tmp_path, [("rebellions-atom", "1.0.0"), ("nvidia-h200", "96.00.89.00.01")])
    names = {t.name for t in tools}
    kmod = {"modprobe", "modinfo"} if (Path(simulator.__file__).parent / "kmod.py").is_file() else set()
    assert names == {"rbln-smi", "rbln-flash", "systemctl", "nvidia-smi", "nvfwupd", "sovkit-sim-reboot"} | kmod
    assert {p.name for p in (tmp_path / "bin").iterdir()} == names
    assert all(t.stat().st_mode & 0o777 == 0o755 for t in tools)
    assert state_path(tmp_path) == tmp_path / "var/lib/npu-sim/devices.json"
    assert (tmp_path / "sys/module/rebellions/version").read_text() == "1.3.73\n"
    assert (tmp_path / "sys/module/nvidia/version").read_text() == "550.54.15\n"
    assert not (tmp_path / "sys/module/rngd").exists()
    assert (tmp_path / "var/lib/npu-sim/holders/rebellions").read_text() == "rbln-smd.service\n"
    assert len((tmp_path / "var/lib/npu-sim/boot_id").read_text().strip()) == 36


def test_pci_tree_and_multi_npu_cards(tmp_path: Path) -> None:
    """Card N is PCI bus N+1; a REBEL-Quad card is four functions on one bus, each an NPU."""
    install_simulator(tmp_path, [("rebellions-atom-max", "1"), ("rebellions-rebel-quad", "1"), ("furiosa-rngd", "1"),
                                 ("nvidia-l40s", "1")])
    pci = tmp_path / "sys/bus/pci/devices"
    seen = {p.name: tuple((p / f).read_text() for f in ("vendor", "device", "class")) for p in pci.iterdir()}
    quad = ("0x1eff\n", "0x2130\n", "0x120000\n")
    assert seen == {"0000:01:00.0": ("0x1eff\n", "0x1250\n", "0x120000\n"), "0000:02:00.0": quad,
                    "0000:02:00.1": quad, "0000:02:00.2": quad, "0000:02:00.3": quad,
                    "0000:03:00.0": ("0x1ed2\n", "0x0001\n", "0x120000\n"),
                    "0000:04:00.0": ("0x10de\n", "0x26b9\n", "0x030200\n")}
    devs = read_devices(tmp_path)
    assert [(d["id"], d["bdf"], d["card"], d["chip"]) for d in devs][:3] == [
        ("0", "0000:01:00.0", 0, "RBLN-CA25"), ("1", "0000:02:00.0", 1, "RBLN-CR13"),
        ("2", "0000:02:00.1", 1, "RBLN-CR13")]
    assert [line.split(", ")[2] for line in ok(tmp_path, "rbln-smi", "-q", "-qd", "npu,name,device,fw_ver")
            .splitlines()[1:]] == ["rbln0", "rbln1", "rbln2", "rbln3", "rbln4"]


@pytest.mark.parametrize(("cpu", "expect"), [
    ("arm-neoverse-v2", "CPU part\t: 0xd4f"), ("arm-neoverse-v3-agi", "CPU part\t: 0xd84"),
    ("ampere-altra", "CPU part\t: 0xd0c"), ("generic-x86_64", "vendor_id\t: GenuineIntel"),
])
def test_host_files(tmp_path: Path, cpu: str, expect: str) -> None:
    install_simulator(tmp_path, [], cpu=cpu, cores=3, memory_kb=1234,
                      os_release={"ID": "debian", "VERSION_ID": "12"})
    cpuinfo = (tmp_path / "proc/cpuinfo").read_text()
    assert cpuinfo.count("processor\t:") == 3 and cpuinfo.count(expect) == 3
    assert ("CPU implementer\t: 0x41" in cpuinfo) == (CPUS[cpu]["arch"] == "aarch64")
    assert (tmp_path / "proc/meminfo").read_text().startswith("MemTotal:       1234 kB\n")
    assert (tmp_path / "etc/os-release").read_text() == 'ID="debian"\nVERSION_ID="12"\n'


# -- output formats


def test_rbln_smi_json(tmp_path: Path) -> None:
    install_simulator(tmp_path, [("rebellions-atom-max", "1.2.0")])
    out = json.loads(ok(tmp_path, "rbln-smi", "-j"))
    assert set(out) == {"KMD_version", "devices", "contexts"} and out["KMD_version"] == "1.3.73"
    (dev,) = out["devices"]
    assert set(dev) == {"npu", "name", "sid", "uuid", "device", "group_id", "pci", "temperature", "memory", "util",
                        "status"}
    assert (dev["npu"], dev["name"], dev["device"], dev["pci"]["bus_id"], dev["memory"]["total"]) == (
        "0", "RBLN-CA25", "rbln0", "0000:01:00.0", "68719476736")
    assert all(isinstance(v, str) for v in dev.values() if not isinstance(v, dict))
    assert "1.2.0" not in json.dumps(out)  # no firmware in -j: the reference saw none
    assert ok(tmp_path, "rbln-smi", "-q", "-qd", "npu,name,device,fw_ver") == (
        "npu, name, device, fw_ver\n0, RBLN-CA25, rbln0, 1.2.0\n")
    assert ok(tmp_path, "rbln-smi", "-q", "-qd", "fw_ver,npu") == "fw_ver, npu\n1.2.0, 0\n"


def test_furiosa_smi_json(tmp_path: Path) -> None:
    install_simulator(tmp_path, [("furiosa-rngd", "2025.1.0"), ("furiosa-rngd", "2025.1.0")])
    out = json.loads(ok(tmp_path, "furiosa-smi", "info", "--format", "json"))
    assert [set(d) for d in out] == [{"arch", "dev_name", "device_uuid", "device_sn", "firmware", "temperature",
                                      "power", "core_clock", "governor", "pci_bdf", "pci_dev"}] * 2
    assert [(d["arch"], d["dev_name"], d["firmware"], d["pci_bdf"], d["pci_dev"]) for d in out] == [
        ("rngd", "npu0", "2025.1.0", "0000:01:00.0", "1ed2:0001"),
        ("rngd", "npu1", "2025.1.0", "0000:02:00.0", "1ed2:0001")]
    assert "npu1" in ok(tmp_path, "furiosa-smi", "info")


@pytest.mark.parametrize(("fmt", "expect"), [
    ("csv,noheader,nounits", "0, NVIDIA H100 80GB HBM3, 00000000:01:00.0, 96.00.89.00.01, 550.54.15, 700.00\n"
                             "1, NVIDIA H100 80GB HBM3, 00000000:02:00.0, 96.00.89.00.01, 550.54.15, 700.00\n"),
    ("csv,noheader", "0, NVIDIA H100 80GB HBM3, 00000000:01:00.0, 96.00.89.00.01, 550.54.15, 700.00 W\n"
                     "1, NVIDIA H100 80GB HBM3, 00000000:02:00.0, 96.00.89.00.01, 550.54.15, 700.00 W\n"),
    ("csv", "index, name, pci.bus_id, vbios_version, driver_version, power.limit [W]\n"
            "0, NVIDIA H100 80GB HBM3, 00000000:01:00.0, 96.00.89.00.01, 550.54.15, 700.00 W\n"
            "1, NVIDIA H100 80GB HBM3, 00000000:02:00.0, 96.00.89.00.01, 550.54.15, 700.00 W\n"),
])
def test_nvidia_smi_query(tmp_path: Path, fmt: str, expect: str) -> None:
    install_simulator(tmp_path, [("nvidia-h100-sxm", "96.00.89.00.01")] * 2)
    fields = "--query-gpu=index,name,pci.bus_id,vbios_version,driver_version,power.limit"
    assert ok(tmp_path, "nvidia-smi", fields, f"--format={fmt}") == expect
    assert ok(tmp_path, "nvidia-smi", "--query-gpu", "index", "--format", "csv,noheader", "-i", "1") == "1\n"


def test_nvidia_power_limit(tmp_path: Path) -> None:
    install_simulator(tmp_path, [("nvidia-h100-sxm", "1")] * 2)
    assert ok(tmp_path, "nvidia-smi", "-pl", "450", "-i", "1") == (
        "Power limit for GPU 00000000:02:00.0 was set to 450.00 W from 700.00 W.\nAll done.\n")
    limits = ["--query-gpu=power.limit", "--format=csv,noheader,nounits"]
    assert ok(tmp_path, "nvidia-smi", *limits) == "700.00\n450.00\n"
    bad = run(tmp_path, "nvidia-smi", "-pl", "900", "-i", "0")
    assert bad.returncode == 2 and "between 200.00 W and 700.00 W" in bad.stderr
    ok(tmp_path, "sovkit-sim-reboot")  # power limits do not survive a reboot
    assert ok(tmp_path, "nvidia-smi", *limits) == "700.00\n700.00\n"


def test_nvfwupd_show_version(tmp_path: Path) -> None:
    install_simulator(tmp_path, [("nvidia-b200", "1.0")])
    pkg = image(tmp_path, "nvidia-b200", "2.0")
    out = json.loads(ok(tmp_path, "nvfwupd", *BMC, "show_version", "-p", pkg, "-j"))
    assert out == {"Error": [], "Output": [{"AP Name": "GPU0", "Sys Version": "1.0", "Pkg Version": "2.0",
                                            "Up-To-Date": "No"}]}


# -- firmware update: staged, then active only at the vendor's activation point


def test_update_is_active_only_after_the_vendors_activation(tmp_path: Path, vendor: str) -> None:
    kind, ops = KIND[vendor], VENDOR_OPS[vendor]
    install_simulator(tmp_path, [(kind, "1.0.0")] * 2)
    assert ops["update"](tmp_path, image(tmp_path, kind, "2.0.0"), "0000:01:00.0").returncode == 0
    staged = read_devices(tmp_path)[0]
    assert (staged["firmware"], staged["staged"]["version"]) == ("1.0.0", "2.0.0")
    if vendor == "furiosa":  # a driver reload is not enough: RNGD needs a cold reboot
        unload(tmp_path, "rngd")
        load(tmp_path, "rngd")
        assert ops["query"](tmp_path)["0000:01:00.0"] == "1.0.0"
    if vendor == "nvidia":
        assert ops["query"](tmp_path)["0000:01:00.0"] == "1.0.0"
    boot = (tmp_path / "var/lib/npu-sim/boot_id").read_text()
    ops["activate"](tmp_path)
    # rbln-flash -s BDF flashed one NPU; the updater and the BMC update every card, nvidia-smi -r -i 0 resets one
    second = {"rebellions": ("1.0.0", None), "furiosa": ("2.0.0", None), "nvidia": ("1.0.0", "2.0.0")}[vendor]
    assert ops["query"](tmp_path) == {"0000:01:00.0": "2.0.0", "0000:02:00.0": second[0]}
    assert [(d["staged"] or {}).get("version") for d in read_devices(tmp_path)] == [None, second[1]]
    assert ((tmp_path / "var/lib/npu-sim/boot_id").read_text() != boot) == (vendor == "furiosa")


def test_rebellions_refusals_and_targets(tmp_path: Path) -> None:
    install_simulator(tmp_path, [("rebellions-atom-max", "1.0"), ("rebellions-atom", "1.0")])
    img = image(tmp_path, "rebellions-atom-max", "2.0")
    held = run(tmp_path, "rbln-flash", "--cp", "-f", img, "-s", "all")
    assert held.returncode == 1 and "rbln-smd.service is running" in held.stderr
    ok(tmp_path, "systemctl", "stop", "rbln-smd.service")
    loaded = run(tmp_path, "rbln-flash", "--cp", "-f", img, "-s", "01:00.0")
    assert loaded.returncode == 1 and "driver is loaded" in loaded.stderr
    assert [d["staged"] for d in read_devices(tmp_path)] == [None, None]
    unload(tmp_path, "rebellions")
    fwdir = tmp_path / "fwdir"
    fwdir.mkdir()
    for kind in ("rebellions-atom", "rebellions-atom-max"):
        shutil.copy(image(tmp_path, kind, "3.0"), fwdir / f"{kind}.fw")
    out = ok(tmp_path, "rbln-flash", "--cp", "-d", str(fwdir), "-s", "all")  # -d: each device takes its image
    assert out.count("CP firmware 3.0 written") == 2
    nodev = run(tmp_path, "rbln-flash", "--cp", "-f", img, "-s", "0000:07:00.0")
    assert nodev.returncode == 1 and "no such device '0000:07:00.0'" in nodev.stderr
    load(tmp_path, "rebellions")
    assert query_rebellions(tmp_path) == {"0000:01:00.0": "3.0", "0000:02:00.0": "3.0"}


def test_systemctl_shim(tmp_path: Path) -> None:
    install_simulator(tmp_path, [("rebellions-atom", "1.0")], daemons_running=False)
    holder = tmp_path / "var/lib/npu-sim/holders/rebellions"
    assert not holder.exists()
    inactive = run(tmp_path, "systemctl", "is-active", "rbln-smd.service")
    assert (inactive.returncode, inactive.stdout) == (3, "inactive\n")
    ok(tmp_path, "systemctl", "start", "rbln-smd")
    assert holder.read_text() == "rbln-smd.service\n"
    assert ok(tmp_path, "systemctl", "is-active", "rbln-smd.service") == "active\n"
    assert run(tmp_path, "systemctl", "--quiet", "is-active", "rbln-smd.service").stdout == ""
    ok(tmp_path, "systemctl", "restart", "rbln-smd.service")
    ok(tmp_path, "systemctl", "stop", "rbln-smd.service")
    assert not holder.exists()
    unload(tmp_path, "rebellions")
    nodriver = run(tmp_path, "systemctl", "start", "rbln-smd.service")
    assert nodriver.returncode == 1 and not holder.exists()
    unknown = run(tmp_path, "systemctl", "stop", "nginx.service")
    assert (unknown.returncode, unknown.stderr) == (5, "Failed to stop nginx.service: Unit nginx.service not found.\n")
    assert run(tmp_path, "systemctl", "is-active", "nginx.service").returncode == 3


def test_reboot_loads_modules_and_starts_daemons(tmp_path: Path) -> None:
    install_simulator(tmp_path, [("rebellions-atom", "1.0")])
    ok(tmp_path, "systemctl", "stop", "rbln-smd.service")
    unload(tmp_path, "rebellions")
    package = tmp_path / "var/lib/npu-sim/modules/rebellions.json"  # a newly installed driver package
    package.parent.mkdir(parents=True, exist_ok=True)
    package.write_text(json.dumps({"name": "rebellions", "version": "2.0.1"}))
    ok(tmp_path, "sovkit-sim-reboot")
    assert (tmp_path / "sys/module/rebellions/version").read_text() == "2.0.1\n"
    assert json.loads(ok(tmp_path, "rbln-smi", "-j"))["KMD_version"] == "2.0.1"
    assert ok(tmp_path, "systemctl", "is-active", "rbln-smd.service") == "active\n"


# -- faults


@pytest.mark.parametrize("fault", FAULTS)
def test_fault(tmp_path: Path, vendor: str, fault: str) -> None:
    kind, ops = KIND[vendor], VENDOR_OPS[vendor]
    install_simulator(tmp_path, [(kind, "1.0.0")] * 2)
    target = "0000:02:00.0"
    set_fault(tmp_path, target, fault)
    img = image(tmp_path, kind, "2.0.0")
    flashed = ops["update"](tmp_path, img, target)
    if fault == "flash-error":
        assert flashed.returncode == 1 and "I/O error" in flashed.stderr
        assert [d["staged"] is None for d in read_devices(tmp_path)] == [vendor == "rebellions", True]
        return
    assert flashed.returncode == 0, flashed.stderr
    if vendor == "nvidia":
        ok(tmp_path, "nvidia-smi", "-r", "-i", "1")
    ops["activate"](tmp_path)
    got = ops["query"](tmp_path)
    if fault == "boots-old-firmware":
        assert got[target] == "1.0.0"
    elif fault == "diagnostic-error":  # the short query still lists it; only the full report fails (NVIDIA)
        assert got[target] == "2.0.0"
        report = run(tmp_path, "nvidia-smi", "-q", "-x") if vendor == "nvidia" else None
        assert report is None or (report.returncode == 1 and "Unable to determine the device handle" in
                                  report.stderr)
    else:  # gone from the tool and from sysfs; the other device is renumbered to index 0
        assert target not in got and list(got) == ["0000:01:00.0"]
        assert not (tmp_path / "sys/bus/pci/devices" / target).exists()
        assert [d["present"] for d in read_devices(tmp_path)] == [True, False]


def test_fault_api(tmp_path: Path) -> None:
    install_simulator(tmp_path, [("rebellions-atom", "1.0")] * 2)
    set_fault(tmp_path, "1", "boots-old-firmware")  # by id
    set_fault(tmp_path, "01:00.0", "flash-error")  # by short BDF
    assert [d["fault"] for d in read_devices(tmp_path)] == ["flash-error", "boots-old-firmware"]
    set_fault(tmp_path, "0000:02:00.0", None)
    assert read_devices(tmp_path)[1]["fault"] is None
    with pytest.raises(ValueError, match="unknown fault"):
        set_fault(tmp_path, "0", "on-fire")
    with pytest.raises(ValueError, match="no device"):
        set_fault(tmp_path, "0000:09:00.0", "flash-error")


# -- refusals and usage errors


@pytest.mark.parametrize(("kind", "argv"), [
    ("rebellions-atom", ["rbln-smi", "-j"]),
    ("rebellions-atom", ["rbln-smi", "-q", "-qd", "npu,fw_ver"]),
    ("furiosa-rngd", ["furiosa-smi", "info", "--format", "json"]),
    ("furiosa-rngd", ["furiosa_rngd_updater_all", "-f", "/nonexistent"]),
    ("nvidia-h200", ["nvidia-smi", "--query-gpu=index", "--format=csv"]),
    ("nvidia-h200", ["nvidia-smi", "-r", "-i", "0"]),
    ("nvidia-h200", ["nvidia-smi", "-pl", "300", "-i", "0"]),
])
def test_tools_refuse_without_their_driver(tmp_path: Path, kind: str, argv: list[str]) -> None:
    install_simulator(tmp_path, [(kind, "1.0")], driver_loaded=False)
    assert not (tmp_path / "sys/module" / VENDORS[HARDWARE[kind]["vendor"]]["module"]).exists()
    proc = run(tmp_path, *argv)
    assert proc.returncode == 1 and "no NPU driver loaded" in proc.stderr


USAGE = [
    ("rebellions-atom", ["rbln-smi", "--json"], "unrecognised arguments"),  # the old invented contract
    ("rebellions-atom", ["rbln-smi", "fw-update", "--device", "0"], "unrecognised arguments"),
    ("rebellions-atom", ["rbln-smi", "-q"], "needs both -q and -qd"),
    ("rebellions-atom", ["rbln-smi", "-q", "-qd", "npu,power"], "unknown query field 'power'"),
    ("rebellions-atom", ["rbln-flash", "-f", "x", "-s", "all"], "exactly one of --cp/--mcu"),
    ("rebellions-atom", ["rbln-flash", "--cp", "-f", "x", "-d", "y", "-s", "all"], "exactly one of -f"),
    ("rebellions-atom", ["rbln-flash", "--cp", "-f", "x"], "-s BDF|all"),
    ("rebellions-atom", ["rbln-flash", "--mcu", "-f", "x", "-s", "all"], "only flashes Command Processor"),
    ("rebellions-atom", ["systemctl", "enable", "rbln-smd.service"], "usage: systemctl"),
    ("furiosa-rngd", ["furiosa-smi", "--json"], "unrecognised arguments"),
    ("furiosa-rngd", ["furiosa_rngd_updater_all"], "usage: furiosa_rngd_updater_all -f IMAGE"),
    ("nvidia-h100-sxm", ["nvidia-smi", "--json"], "unrecognised arguments"),
    ("nvidia-h100-sxm", ["nvidia-smi", "--query-gpu=index,bogus", "--format=csv"], 'Field "bogus" is not a valid'),
    ("nvidia-h100-sxm", ["nvidia-smi", "--query-gpu=index", "--format=xml"], "not a valid format"),
    ("nvidia-h100-sxm", ["nvidia-smi", "--query-gpu=index"], "unrecognised arguments"),
    ("nvidia-h100-sxm", ["nvidia-smi", "-pl", "lots", "-i", "0"], "invalid power limit"),
    ("nvidia-h100-sxm", ["nvfwupd", "update_fw", "-p", "x"], "usage: nvfwupd -t"),
    ("nvidia-h100-sxm", ["nvfwupd", "-t", "ip=1.2.3.4", "update_fw", "-p", "x"], "user=, password="),
    ("nvidia-h100-sxm", [*["nvfwupd", *BMC], "update_fw"], "unrecognised arguments"),
    ("nvidia-h100-sxm", ["sovkit-sim-reboot", "now"], "no arguments"),
]


@pytest.mark.parametrize(("kind", "argv", "message"), USAGE, ids=[" ".join(c[1]) for c in USAGE])
def test_usage_errors(tmp_path: Path, kind: str, argv: list[str], message: str) -> None:
    install_simulator(tmp_path, [(kind, "1.0")])
    before = state_path(tmp_path).read_bytes()
    proc = run(tmp_path, *argv)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert state_path(tmp_path).read_bytes() == before


def corrupt_images(kind: str) -> dict[str, tuple[bytes, str]]:
    good = make_firmware_image(kind, "9.9.9", payload_size=4096)
    magic, header, payload = good.split(b"\n", 2)
    flipped = bytearray(payload)
    flipped[100] ^= 0x01
    other_kind = "furiosa-rngd" if kind != "furiosa-rngd" else "rebellions-atom"
    return {
        "wrong-magic": (b"NOT-A-FIRMWARE/1\n" + header + b"\n" + payload, "bad magic"),
        "truncated": (good[:-1000], "truncated"),
        "header-only": (magic + b"\n" + header[:20], "truncated"),
        "bad-header-json": (magic + b"\n{not json\n" + payload, "corrupt image header"),
        "digest-mismatch": (magic + b"\n" + header + b"\n" + bytes(flipped), "digest mismatch"),
        "trailing-data": (good + b"extra", "trailing data"),
        "other-accelerator": (make_firmware_image(other_kind, "9.9.9"), "accelerator"),
        "empty": (b"", "bad magic"),
        "missing": (b"", "cannot read firmware image"),
    }


@pytest.mark.parametrize("case", sorted(corrupt_images("x")))
def test_bad_image_is_rejected_and_nothing_staged(tmp_path: Path, vendor: str, case: str) -> None:
    kind = KIND[vendor]
    install_simulator(tmp_path, [(kind, "1.0.0")])
    data, message = corrupt_images(kind)[case]
    path = tmp_path / "bad.fw"
    if case != "missing":
        path.write_bytes(data)
    proc = VENDOR_OPS[vendor]["update"](tmp_path, str(path), "0000:01:00.0")
    assert proc.returncode == 1 and message in proc.stderr, proc.stderr
    assert [(d["firmware"], d["staged"]) for d in read_devices(tmp_path)] == [("1.0.0", None)]


# -- packaging


def test_installed_tools_run_standalone(tmp_path: Path) -> None:
    """No sovkit on the path (-S -I): the tools import only their copied modules and the standard library."""
    install_simulator(tmp_path, [("nvidia-h100-sxm", "1.0")])
    proc = subprocess.run([sys.executable, "-S", "-I", str(tmp_path / "bin/nvidia-smi"), "--query-gpu=index",
                           "--format=csv,noheader"], capture_output=True, text=True, check=False)
    assert (proc.returncode, proc.stdout) == (0, "0\n"), proc.stderr
    renamed = tmp_path / "bin/acme-smi"
    shutil.copy(tmp_path / "bin/nvidia-smi", renamed)
    proc = subprocess.run([str(renamed)], capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "invoked as 'acme-smi'" in proc.stderr


def test_install_api_forms(tmp_path: Path) -> None:
    tools = install_simulator(tmp_path, [("rebellions-atom", "1.0")], interpreter=sys.executable)
    assert tools[0].read_text().startswith(f"#!{sys.executable}\n")
    install_simulator(tmp_path / "legacy", "rbln-smi", [("rebellions-atom", "1.0")])  # (root, tool, devices)
    assert [d["firmware"] for d in read_devices(tmp_path / "legacy")] == ["1.0"]
    with pytest.raises(ValueError, match="no hardware"):
        install_simulator(tmp_path, [("acme-npu", "1.0")])
    with pytest.raises(ValueError, match="no hardware"):
        install_simulator(tmp_path, [], cpu="pentium")


def test_state_is_per_root(tmp_path: Path) -> None:
    for host in ("h1", "h2"):
        install_simulator(tmp_path / host, [("furiosa-rngd", "1.0.0")])
    ok(tmp_path / "h1", "furiosa_rngd_updater_all", "-f", image(tmp_path, "furiosa-rngd", "2.0.0"))
    ok(tmp_path / "h1", "sovkit-sim-reboot")
    assert query_furiosa(tmp_path / "h1") == {"0000:01:00.0": "2.0.0"}
    assert query_furiosa(tmp_path / "h2") == {"0000:01:00.0": "1.0.0"}


def test_firmware_images_are_deterministic() -> None:
    a = make_firmware_image("rebellions-atom", "1.0.0")
    assert a == make_firmware_image("rebellions-atom", "1.0.0")
    assert a != make_firmware_image("rebellions-atom", "1.0.1")
    assert a != make_firmware_image("rebellions-atom", "1.0.0", seed="x")
    assert len(make_firmware_image("rebellions-atom", "1.0.0", payload_size=10)) < len(a)
    assert a.startswith(b"SOVKIT-SIMFW/1\n")
