"""The device lister (templates/ansible/helpers/npu_devices.py) on each vendor's documented output, hostile
values included, and the vendor procedures in the catalog (profiles.yaml) checked at load."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

import sovkit.catalog as catalog_module
from sovkit import identifiers as ids
from sovkit.catalog import load_catalog, read_catalog
from sovkit.components.firmware import device_lister, parse_devices, procedure, query_spec
from sovkit.errors import CatalogError
from sovkit.provision.hostvars import helper

LISTER = device_lister()
CHIPS = {**load_catalog().chip_kinds("rebellions"), **load_catalog().chip_kinds("furiosa"),
         **load_catalog().chip_kinds("nvidia")}


def rbln_json(*devices: tuple[str, str, str]) -> str:
    """``rbln-smi -j`` as the reference documents it (strings everywhere, no firmware key)."""
    return json.dumps({"KMD_version": "1.3.73", "devices": [
        {"npu": npu, "name": name, "sid": "0", "uuid": f"uuid-{npu}", "device": f"rbln{npu}", "group_id": "0",
         "pci": {"bus_id": bdf, "numa_node": "0", "link_speed": "16GT/s", "link_width": "16"},
         "temperature": "35", "memory": {"used": "0", "total": "68719476736"}, "util": "0.0", "status": "normal"}
        for npu, name, bdf in devices], "contexts": []})


def rbln_query(*rows: tuple[str, str, str]) -> str:
    """``rbln-smi -q -qd npu,name,device,fw_ver`` ([R] format: a header, then comma-separated rows)."""
    return "npu, name, device, fw_ver\n" + "".join(f"{n}, {name}, rbln{n}, {fw}\n" for n, name, fw in rows)


def furiosa(*devices: tuple[int, str, str, str]) -> str:
    return json.dumps([{"arch": arch, "dev_name": f"npu{i}", "device_uuid": f"u{i}", "device_sn": f"sn{i}",
                        "firmware": fw, "temperature": "31.0°C", "power": "41.5 W", "core_clock": "1000 MHz",
                        "governor": "OnDemand", "pci_bdf": bdf, "pci_dev": "1ed2:0001"}
                       for i, arch, bdf, fw in devices])


NV_LINE = "{i}, NVIDIA H100 80GB HBM3, {bdf}, {fw}, 550.54.15, 700.00"

GOOD: list[tuple[str, str, list[str], list[tuple[str, str, str, str | None, str]]]] = [
    ("rebellions ATOM-Max, two cards", "rbln-smi",
     [rbln_json(("0", "RBLN-CA25", "0000:01:00.0"), ("1", "RBLN-CA25", "0000:02:00.0")),
      rbln_query(("0", "RBLN-CA25", "1.3.0"), ("1", "RBLN-CA25", "1.2.0"))],
     [("0000:01:00.0", "0", "RBLN-CA25", "rebellions-atom-max", "1.3.0"),
      ("0000:02:00.0", "1", "RBLN-CA25", "rebellions-atom-max", "1.2.0")]),
    ("rebellions quad card: four functions of one card, an unknown chip kept without a kind", "rbln-smi",
     [rbln_json(*[(str(i), "RBLN-CR13", f"0000:01:00.{i}") for i in range(4)], ("4", "RBLN-ZZ99", "0000:05:00.0")),
      rbln_query(*[(str(i), "RBLN-CR13", "0.9.1") for i in range(4)], ("4", "RBLN-ZZ99", "0.1"))],
     [*[(f"0000:01:00.{i}", str(i), "RBLN-CR13", "rebellions-rebel-quad", "0.9.1") for i in range(4)],
      ("0000:05:00.0", "4", "RBLN-ZZ99", None, "0.1")]),
    ("furiosa rngd", "furiosa-smi",
     [furiosa((0, "rngd", "0000:51:00.0", "2025.3.0"), (1, "rngd", "0000:52:00.0", "2025.2.0"))],
     [("0000:51:00.0", "0", "rngd", "furiosa-rngd", "2025.3.0"),
      ("0000:52:00.0", "1", "rngd", "furiosa-rngd", "2025.2.0")]),
    ("nvidia csv with the 8-digit domain, upper case", "nvidia-smi-csv",
     [NV_LINE.format(i=0, bdf="00000000:1B:00.0", fw="96.00.89.00.01") + "\n"
      + NV_LINE.format(i=1, bdf="00000000:43:00.0", fw="96.00.89.00.01") + "\n"],
     [("0000:1b:00.0", "0", "NVIDIA H100 80GB HBM3", "nvidia-h100-sxm", "96.00.89.00.01"),
      ("0000:43:00.0", "1", "NVIDIA H100 80GB HBM3", "nvidia-h100-sxm", "96.00.89.00.01")]),
    ("no devices", "nvidia-smi-csv", [""], []),
]


@pytest.mark.parametrize(("fmt", "outputs", "want"), [c[1:] for c in GOOD], ids=[c[0] for c in GOOD])
def test_parses_each_vendors_documented_output(fmt: str, outputs: list[str],
                                               want: list[tuple[str, str, str, str | None, str]]) -> None:
    devices, untrusted = LISTER.parse(fmt, outputs, CHIPS)
    assert untrusted == []
    assert [(d["bdf"], d["index"], d["chip"], d["kind"], d["firmware"]) for d in devices] == want


HOSTILE: list[tuple[str, str, list[str], str]] = [
    ("rbln firmware with a template", "rbln-smi",
     [rbln_json(("0", "RBLN-CA25", "0000:01:00.0")), rbln_query(("0", "RBLN-CA25", "{{ 7*7 }}"))],
     "firmware"),
    ("rbln bus id with a path", "rbln-smi",
     [rbln_json(("0", "RBLN-CA25", "../../etc/passwd")), rbln_query(("0", "RBLN-CA25", "1.3.0"))], "bdf"),
    ("rbln bus id as a number", "rbln-smi",
     [rbln_json(("0", "RBLN-CA25", "0000:01:00.0")).replace('"0000:01:00.0"', "1"),
      rbln_query(("0", "RBLN-CA25", "1.3.0"))], "bdf"),
    ("rbln device without a query row", "rbln-smi",
     [rbln_json(("0", "RBLN-CA25", "0000:01:00.0")), "npu, name, device, fw_ver\n"], "firmware"),
    ("furiosa chip name with a newline", "furiosa-smi", [furiosa((0, "rngd\n$(reboot)", "0000:51:00.0", "1"))],
     "chip"),
    ("furiosa firmware that is a list", "furiosa-smi",
     [furiosa((0, "rngd", "0000:51:00.0", "1")).replace('"firmware": "1"', '"firmware": ["1"]')], "firmware"),
    ("furiosa dev_name that is no index", "furiosa-smi",
     [furiosa((0, "rngd", "0000:51:00.0", "1")).replace('"npu0"', '"npu;rm -rf /"')], "index"),
    ("furiosa bdf listed twice", "furiosa-smi",
     [furiosa((0, "rngd", "0000:51:00.0", "1"), (1, "rngd", "0000:51:00.0", "1"))], "listed twice"),
    ("nvidia vbios with a shell", "nvidia-smi-csv",
     [NV_LINE.format(i=0, bdf="00000000:01:00.0", fw="96.00`id`")], "firmware"),
    ("nvidia domain that is not zero-padded", "nvidia-smi-csv",
     [NV_LINE.format(i=0, bdf="12345678:01:00.0", fw="96.00.89.00.01")], "bdf"),
    ("very long firmware", "nvidia-smi-csv",
     [NV_LINE.format(i=0, bdf="00000000:01:00.0", fw="9" * 5000)], "firmware"),
]


@pytest.mark.parametrize(("fmt", "outputs", "field"), [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_hostile_values_are_left_out_and_named(fmt: str, outputs: list[str], field: str) -> None:
    devices, untrusted = LISTER.parse(fmt, outputs, CHIPS)
    assert devices == [] or all(ids.matches(ids.BDF, d["bdf"]) for d in devices)
    assert len(untrusted) == 1 and field in untrusted[0], untrusted
    assert all(len(u) < 400 for u in untrusted)


MALFORMED: list[tuple[str, str, list[str]]] = [
    ("rbln not JSON", "rbln-smi", ["Segmentation fault", rbln_query()]),
    ("rbln without the query output", "rbln-smi", [rbln_json()]),
    ("rbln query without fw_ver", "rbln-smi", [rbln_json(), "npu, name\n0, RBLN-CA25\n"]),
    ("rbln query row with an extra comma", "rbln-smi",
     [rbln_json(("0", "RBLN-CA25", "0000:01:00.0")), "npu, name, device, fw_ver\n0, RBLN-CA25, rbln0, 1.3, 0\n"]),
    ("furiosa object instead of array", "furiosa-smi", ['{"devices": []}']),
    ("nvidia name with a comma", "nvidia-smi-csv", ["0, NVIDIA, H100, 00000000:01:00.0, 96.00, 550.54.15, 700.00"]),
    ("unknown format", "lspci", [""]),
]


@pytest.mark.parametrize(("fmt", "outputs"), [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_output_not_in_the_vendors_format_is_an_error(fmt: str, outputs: list[str]) -> None:
    with pytest.raises(LISTER.ParseError):
        LISTER.parse(fmt, outputs, CHIPS)


def test_patterns_equal_sovkits() -> None:
    for name in ("BDF", "CHIP_NAME", "DEVICE_INDEX", "VERSION"):
        assert getattr(LISTER, name) == getattr(ids, name), name


def test_sovkit_checks_the_hosts_output_again() -> None:
    """A host that prints a forged device list (not through the lister) is still refused value by value."""
    spec = query_spec("rebellions-atom-max")
    forged = json.dumps({"devices": [
        {"bdf": "0000:01:00.0", "index": "0", "chip": "RBLN-CA25", "kind": "nvidia-h100-sxm", "firmware": "1.3.0"},
        {"bdf": "0000:02:00.0", "index": "1", "chip": "RBLN-CA25", "kind": "x", "firmware": "{{ 7*7 }}"}],
        "untrusted": []})
    devices, untrusted = parse_devices(forged, spec)
    assert [(d["bdf"], d["kind"]) for d in devices] == [("0000:01:00.0", "rebellions-atom-max")]  # kind from chip
    assert len(untrusted) == 1 and "firmware" in untrusted[0]
    with pytest.raises(ValueError):
        parse_devices(json.dumps({"devices": [], "untrusted": [], "error": "rbln-smi exited 1"}), spec)


def test_runs_the_tools_on_the_host_as_python_dash_c(tmp_path: Path) -> None:
    """The helper as the role runs it: real processes behind the vendor's argv, one JSON line, exit status."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    outputs = {"-j": rbln_json(("0", "RBLN-CA25", "0000:01:00.0")), "-q": rbln_query(("0", "RBLN-CA25", "1.3.0"))}
    for flag, text in outputs.items():
        (tmp_path / f"out{flag}").write_text(text)
    tool = bindir / "rbln-smi"
    tool.write_text(f"#!{sys.executable}\nimport sys\nsys.stdout.write(open({str(tmp_path)!r} + '/out' + "
                    "sys.argv[1]).read())\n")
    tool.chmod(0o755)
    spec = json.dumps(query_spec("rebellions-atom-max"))
    env = {"PATH": f"{bindir}:/usr/bin:/bin"}
    ok = subprocess.run([sys.executable, "-c", helper("npu_devices"), spec], capture_output=True, text=True,
                        env=env, check=False)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == {"devices": [{"bdf": "0000:01:00.0", "index": "0", "chip": "RBLN-CA25",
                                                  "kind": "rebellions-atom-max", "firmware": "1.3.0"}],
                                     "untrusted": []}
    tool.write_text("#!/bin/sh\necho 'no NPU driver loaded' >&2\nexit 1\n")
    bad = subprocess.run([sys.executable, "-c", helper("npu_devices"), spec], capture_output=True, text=True,
                         env=env, check=False)
    assert bad.returncode == 1
    assert "no NPU driver loaded" in json.loads(bad.stdout)["error"]


def test_every_procedure_step_cites_a_source_and_rebellions_follows_its_documented_order() -> None:
    catalog = load_catalog()
    assert set(catalog.profiles) == {"rebellions", "furiosa", "nvidia"}
    for p in catalog.profiles.values():
        assert all(s.source[:3] in ("[V]", "[S]", "[R]") for _, s in p.firmware_update.steps())
    rb = procedure("rebellions-atom-max", "/r/img", "/r")
    assert [s["argv"] for s in rb["pre_steps"] + rb["update_steps"] + rb["post_steps"]] == [
        ["systemctl", "stop", "rbln-smd.service"], ["modprobe", "-r", "rebellions"],
        ["rbln-flash", "--cp", "-f", "/r/img", "-s", "{bdf}"], ["modprobe", "rebellions"],
        ["systemctl", "start", "rbln-smd.service"]]
    fu = procedure("furiosa-rngd", "/r/img", "/r")
    assert [s["kind"] for s in fu["update_steps"]] == ["command", "reboot"]
    assert fu["reboot"] == {"command": "/r/bin/sovkit-sim-reboot", "boot_time": "cat /r/var/lib/npu-sim/boot_id"}
    assert procedure("furiosa-rngd", "/img", "")["reboot"] == {"command": "", "boot_time": ""}
    assert catalog.profiles["nvidia"].power_cap is not None
    assert catalog.profiles["nvidia"].power_cap.argv[:2] == ["nvidia-smi", "-pl"]


def _catalog_copy(tmp_path: Path, edit: Any) -> Path:
    src = Path(catalog_module.__file__).parent
    dst = tmp_path / "catalog"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    data = yaml.safe_load((dst / "profiles.yaml").read_text())
    edit(data)
    (dst / "profiles.yaml").write_text(yaml.safe_dump(data))
    return dst


BAD_PROFILES: list[tuple[str, Any, str]] = [
    ("unknown placeholder", lambda d: d[0]["firmware_update"]["update"][0]["argv"].append("{device}"),
     "unknown placeholder {device}"),
    ("bdf in a once step", lambda d: d[0]["firmware_update"]["pre"][0]["argv"].append("{bdf}"),
     "per: device step"),
    ("step without a source label", lambda d: d[0]["firmware_update"]["pre"][0].update(source="docs"),
     "source"),
    ("unknown field", lambda d: d[1].update(flash=["x"]), "flash"),
    ("placeholder in a query", lambda d: d[2]["query"]["commands"][0]["argv"].append("{image}"),
     "query takes no placeholders"),
    ("reboot step with argv", lambda d: d[1]["firmware_update"]["update"][1].update(argv=["reboot"]),
     "reboot step"),
]


@pytest.mark.parametrize(("edit", "message"), [c[1:] for c in BAD_PROFILES], ids=[c[0] for c in BAD_PROFILES])
def test_malformed_procedures_are_refused_at_load(tmp_path: Path, edit: Any, message: str) -> None:
    with pytest.raises(CatalogError, match=r"profiles\.yaml|vendor profile") as err:
        read_catalog(_catalog_copy(tmp_path, edit))
    assert message in str(err.value)


def test_docs_hardware_table_lists_every_step_with_its_source() -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "hardware.md").read_text()
    for p in load_catalog().profiles.values():
        for _, step in p.firmware_update.steps():
            if step.kind == "command":
                assert f"`{' '.join(step.argv)}`" in text, step.argv
            assert step.source.replace("|", "\\|") in text, step.source
        for cmd in p.query.commands:
            assert f"`{' '.join(cmd.argv)}`" in text, cmd.argv


def test_nvidia_power_limit_is_passed_on_as_watts_or_left_out() -> None:
    out = ("0, NVIDIA H100 80GB HBM3, 00000000:01:00.0, 96.00.89.00.01, 550.54.15, 500.00\n"
           "1, NVIDIA H100 80GB HBM3, 00000000:02:00.0, 96.00.89.00.01, 550.54.15, [N/A]\n"
           "2, NVIDIA H100 80GB HBM3, 00000000:03:00.0, 96.00.89.00.01, 550.54.15, {{ lookup(\"pipe\" ~ \"id\") }}\n")
    devices, untrusted = LISTER.parse("nvidia-smi-csv", [out], CHIPS)
    assert [d.get("power_limit_w") for d in devices] == [500.0, None]
    assert len(untrusted) == 1 and "power_limit_w" in untrusted[0]
    again, bad = LISTER.check(devices, CHIPS)  # sovkit checks what a host printed again
    assert again == devices and bad == []
