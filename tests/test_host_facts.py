"""Host facts: the real helper (templates/ansible/helpers/host_facts.py) run on simulated host roots, and the
controller's strict parsing of what it prints (CPU part -> catalog cpu, PCI ids -> cards, refused reports)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import sovkit.catalog
from sovkit.catalog import load_catalog
from sovkit.inventory.models import Host
from sovkit.provision.facts import CPU_PARTS, FactsError, HostFacts, hardware_mismatches, parse_facts, pci_ids
from sovkit.resources import templates_dir
from tests.hostfiles import (
    ATOM_MAX,
    H100,
    NEOVERSE_N1,
    NEOVERSE_V2,
    NEOVERSE_V3,
    REBEL_CR13,
    RNGD,
    arm_cpuinfo,
    write_host,
    x86_cpuinfo,
)

HELPER = templates_dir() / "ansible" / "helpers" / "host_facts.py"


def helper_output(root: Path) -> str:
    """What the helper prints on a host whose root is ``root`` (run as the observe play runs it)."""
    done = subprocess.run([sys.executable, "-c", HELPER.read_text(), str(root)], capture_output=True, text=True,
                          check=True, timeout=60)
    return done.stdout


def facts_of(root: Path) -> HostFacts:
    return parse_facts(helper_output(root))


# (cpuinfo, cards, functions per card) -> (arch, cpu id, cpu name, cards per kind)
CASES: dict[str, tuple[str | None, list[tuple[str, str, str]], int, str | None, str | None, str | None,
                       dict[str, int]]] = {
    "grace-v2-2x-atom-max": (arm_cpuinfo([NEOVERSE_V2]), [ATOM_MAX, ATOM_MAX], 1,
                             "aarch64", "arm-neoverse-v2", "Arm Neoverse-V2", {"rebellions-atom-max": 2}),
    "v3-rngd": (arm_cpuinfo([NEOVERSE_V3]), [RNGD], 1, "aarch64", "arm-neoverse-v3-agi", "Arm Neoverse-V3",
                {"furiosa-rngd": 1}),
    "altra-n1-no-cards": (arm_cpuinfo([NEOVERSE_N1]), [], 1, "aarch64", "ampere-altra", "Arm Neoverse-N1", {}),
    "x86-h100": (x86_cpuinfo(), [H100] * 4, 1, "x86_64", "generic-x86_64", "Intel(R) Xeon(R) Platinum 8480+",
                 {"nvidia-h100-sxm": 4}),
    # a card exposing four NPUs as four PCI functions of one slot is one card
    "rebel-quad-4-functions": (arm_cpuinfo([NEOVERSE_V2]), [REBEL_CR13, REBEL_CR13], 4, "aarch64",
                               "arm-neoverse-v2", "Arm Neoverse-V2", {"rebellions-rebel-quad": 2}),
    "unknown-arm-part": (arm_cpuinfo([("0x41", "0xd99")]), [ATOM_MAX], 1, "aarch64", None, None,
                         {"rebellions-atom-max": 1}),
    "known-part-without-catalog-cpu": (arm_cpuinfo([("0x41", "0xd40")]), [], 1, "aarch64", None,
                                       "Arm Neoverse-V1", {}),
    "big-little-mix": (arm_cpuinfo([NEOVERSE_V2, NEOVERSE_N1]), [], 1, "aarch64", None,
                       "Arm Neoverse-N1, Arm Neoverse-V2", {}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_facts_parse(case: str, tmp_path: Path) -> None:
    cpuinfo, cards, functions, arch, cpu, name, counts = CASES[case]
    write_host(tmp_path, cpuinfo, cards, functions=functions)
    facts = facts_of(tmp_path)
    assert (facts.arch, facts.cpu, facts.cpu_name) == (arch, cpu, name)
    assert facts.accelerator_counts() == counts
    assert facts.memory_kb == 503316480 and facts.os_id == "ubuntu" and facts.os_version == "24.04"
    assert facts.cores == (len(cpuinfo.split("processor")) - 1 if cpuinfo else None)
    assert facts.pci_read


def test_every_catalog_id_in_the_tables_exists() -> None:
    """The tables map to real catalog ids (a typo would make every such host a mismatch)."""
    catalog = load_catalog()
    cpus = set(catalog.cpus)
    accels = set(catalog.accelerators)
    assert {p.cpu for p in CPU_PARTS.values() if p.cpu} <= cpus
    assert {p.kind for p in pci_ids().values()} <= accels
    assert all(p.source in ("V", "S", "R") for p in [*CPU_PARTS.values(), *pci_ids().values()])


def test_vf_and_audio_functions_are_not_cards(tmp_path: Path) -> None:
    """A Rebellions VF (PF id + 1) is named as an unknown device, not counted; a GPU's audio function is ignored."""
    write_host(tmp_path, arm_cpuinfo([NEOVERSE_V2]), [ATOM_MAX, ("0x1eff", "0x1251", "0x120000"),
                                                      ("0x10de", "0x22a3", "0x040300")])
    facts = facts_of(tmp_path)
    assert facts.accelerator_counts() == {"rebellions-atom-max": 1}
    assert facts.other_devices == ["rebellions 1eff:1251 at 0000:02:00.0"]


def test_absent_files_are_not_read_and_not_compared(tmp_path: Path) -> None:
    """A simulated root without cpuinfo or a PCI tree reports nothing about them (never the controller's own)."""
    write_host(tmp_path, None, None)
    facts = facts_of(tmp_path)
    assert facts.arch is None and facts.cpu is None and not facts.pci_read and facts.cards == []
    host = _host(arch="aarch64", cpu="arm-neoverse-v2", accelerators=[{"kind": "furiosa-rngd", "count": 8}])
    assert hardware_mismatches(host, facts) == []


def test_real_host_root(tmp_path: Path) -> None:
    """On this machine's own root the helper reports what uname says, and the report validates."""
    facts = facts_of(Path("/"))
    import platform

    assert facts.arch == {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine(), platform.machine())
    assert facts.memory_kb and facts.memory_kb > 0


def _host(**fields: Any) -> Host:
    return Host.model_validate({"name": "npu-node-1", "rack": "r1", "address": "10.0.0.1", **fields})


def test_mismatches_name_what_differs(tmp_path: Path) -> None:
    write_host(tmp_path, arm_cpuinfo([NEOVERSE_V3]), [ATOM_MAX])
    facts = facts_of(tmp_path)
    same = _host(arch="aarch64", cpu="arm-neoverse-v3-agi",
                 accelerators=[{"kind": "rebellions-atom-max", "count": 1}])
    assert hardware_mismatches(same, facts) == []
    other = _host(arch="x86_64", cpu="generic-x86_64",
                  accelerators=[{"kind": "rebellions-atom-max", "count": 2}, {"kind": "furiosa-rngd", "count": 1}])
    assert hardware_mismatches(other, facts) == [
        "arch: inventory says x86_64, the host is aarch64",
        "cpu: inventory says generic-x86_64, the host has arm-neoverse-v3-agi (Arm Neoverse-V3; 0x41:0xd84)",
        "accelerators furiosa-rngd: inventory says 1, found 0",
        "accelerators rebellions-atom-max: inventory says 2, found 1 (at 0000:01:00)",
    ]


def test_unknown_cpu_is_a_mismatch(tmp_path: Path) -> None:
    write_host(tmp_path, arm_cpuinfo([("0x41", "0xd99")]), [])
    lines = hardware_mismatches(_host(arch="aarch64", cpu="arm-neoverse-v2"), facts_of(tmp_path))
    assert lines == ["cpu: inventory says arm-neoverse-v2, the host has a CPU sovkit does not know "
                     "(cpuinfo 0x41:0xd99)"]


# --- refused reports: hostile or malformed content never becomes a fact ------------------------------------------

LOOKUP = "{{ lookup('pipe', 'touch /tmp/sovkit-pwned') }}"


def _cpuinfo_with(line: str) -> str:
    return arm_cpuinfo([NEOVERSE_V2]).replace("CPU part\t: 0xd4f", line, 1)


HOSTILE_FILES: dict[str, tuple[str, str]] = {
    "template-in-cpu-part": (_cpuinfo_with(f"CPU part\t: {LOOKUP}"), "cpuinfo.parts"),
    "template-in-model-name": (x86_cpuinfo(model=LOOKUP), "cpuinfo.model_name"),
    "part-without-implementer": ("processor : 0\nCPU part : 0xd4f\n", "cpuinfo.parts"),
    "overlong-part": (_cpuinfo_with("CPU part\t: 0xd4f" + "f" * 5000), "cpuinfo.parts"),
    "huge-cpuinfo": (arm_cpuinfo([NEOVERSE_V2]) + "x" * (4 * 1024 * 1024 + 10), "proc/cpuinfo: too large"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_FILES))
def test_hostile_host_files_are_refused(case: str, tmp_path: Path) -> None:
    text, where = HOSTILE_FILES[case]
    write_host(tmp_path, text, [ATOM_MAX])
    out = helper_output(tmp_path)
    assert len(out) < 64 * 1024  # the helper bounds what it sends back, whatever the file's size
    with pytest.raises(FactsError, match=where.replace(".", r"\.")) as exc:
        parse_facts(out)
    assert "lookup(" not in str(exc.value)  # a refused value is not echoed whole


def _good_report(tmp_path: Path) -> dict[str, Any]:
    write_host(tmp_path, arm_cpuinfo([NEOVERSE_V2]), [ATOM_MAX])
    report: dict[str, Any] = json.loads(helper_output(tmp_path))
    return report


MALFORMED: dict[str, tuple[Any, str]] = {
    "extra-key": (lambda r: {**r, "kind": "rebellions-atom-max"}, "kind: Extra inputs are not permitted"),
    "memtotal-not-kb": (lambda r: {**r, "memtotal": "1 GB; rm -rf /"}, "memtotal"),
    "pci-vendor-template": (lambda r: {**r, "pci": [{**r["pci"][1], "vendor": "{{ x }}"}]}, "pci.0.vendor"),
    "pci-bdf-path": (lambda r: {**r, "pci": [{**r["pci"][1], "bdf": "../../etc"}]}, "pci.0.bdf"),
    "count-as-string": (lambda r: {**r, "cpuinfo": {**r["cpuinfo"], "processors": "4"}}, "processors"),
    "machine-other": (lambda r: {**r, "machine": "riscv64"}, "machine"),
    "os-id-shell": (lambda r: {**r, "os": {"id": "ubuntu;reboot"}}, "os.id"),
    "helper-error": (lambda r: {**r, "errors": ["proc/meminfo: PermissionError"]}, "could not read its facts"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_reports_are_refused(case: str, tmp_path: Path) -> None:
    change, match = MALFORMED[case]
    report = change(_good_report(tmp_path))
    with pytest.raises(FactsError, match=match):
        parse_facts(json.dumps(report))
    with pytest.raises(FactsError, match=match):
        parse_facts(report)  # as Ansible may hand it over, already decoded


def test_not_json_and_oversized_reports_are_refused() -> None:
    with pytest.raises(FactsError, match="not JSON"):
        parse_facts("Traceback (most recent call last): ...")
    with pytest.raises(FactsError, match="more than"):
        parse_facts(" " * (600 * 1024))


def test_scripted_observe_records_carry_facts() -> None:
    """The fake executor's observe record has observe.yml's facts lists: empty means not read, one report is
    parsed (so scripted tests exercise the same check as the real play)."""
    from sovkit.fakes import observed
    from sovkit.provision.facts import facts_of as facts_in

    assert facts_in(observed()["sovkit_observed"]) is None
    report = json.dumps({"cpuinfo": {"parts": ["0x41:0xd84"], "vendor_id": [], "model_name": [], "processors": 1},
                         "memtotal": None, "os": None, "pci": None, "machine": None, "errors": []})
    got = facts_in(observed(facts=[report], facts_rc=[0])["sovkit_observed"])
    assert isinstance(got, HostFacts) and got.cpu == "arm-neoverse-v3-agi"
    failed = facts_in(observed(facts=[""], facts_rc=[1])["sovkit_observed"])
    assert isinstance(failed, FactsError) and "exit 1" in str(failed)


def _simulated_kinds() -> list[str]:
    from sovkit.simulator import simcore

    return sorted(simcore.HARDWARE)


@pytest.mark.parametrize("kind", _simulated_kinds())
def test_the_simulators_hosts_read_back_as_installed(kind: str, tmp_path: Path) -> None:
    """install_simulator's host files (two cards of each kind, each catalog CPU) read back as exactly that kind,
    count and CPU — so a simulated site's refresh finds the hardware its inventory names."""
    from sovkit.simulator import CPUS, install_simulator

    catalog = load_catalog()
    for cpu in sorted(c for c in CPUS if c in catalog.cpus):
        root = tmp_path / cpu
        install_simulator(root, [(kind, "1.0.0"), (kind, "1.0.0")], cpu=cpu, interpreter=sys.executable)
        facts = facts_of(root)
        assert (facts.arch, facts.cpu) == (catalog.cpus[cpu].arch, cpu)
        assert facts.accelerator_counts() == {kind: 2}
        assert facts.os_id and facts.memory_kb and not facts.other_devices


def test_the_catalog_knows_every_card_the_simulator_enumerates_and_only_as_its_kind() -> None:
    """The simulator's hardware table (what a card enumerates as) and the catalog's `pci` entries (what sovkit
    maps an id to) are written independently; every simulated card must map back to its own kind, and every
    catalog accelerator has at least one id."""
    from sovkit.simulator.simcore import HARDWARE, VENDORS
    table = pci_ids()
    for kind, hw in HARDWARE.items():
        assert table[(VENDORS[hw["vendor"]]["pci_vendor"], hw["pci_device"])].kind == kind, kind
    assert {p.kind for p in table.values()} == set(load_catalog().accelerators)


def test_a_pci_id_claimed_by_two_kinds_is_refused(tmp_path: Path) -> None:
    """The catalog refuses one PCI id on two accelerator kinds (discovery could not tell them apart)."""
    from sovkit.catalog import read_catalog
    from sovkit.errors import CatalogError
    shipped = Path(sovkit.catalog.__file__).parent
    for f in shipped.glob("*.yaml"):
        shutil.copy(f, tmp_path / f.name)
    text = (tmp_path / "accelerators.yaml").read_text(encoding="utf-8")
    (tmp_path / "accelerators.yaml").write_text(text.replace('device: "2335"', 'device: "2330"'), encoding="utf-8")
    with pytest.raises(CatalogError, match="PCI id 10de:2330 maps to both nvidia-h100-sxm and nvidia-h200"):
        read_catalog(tmp_path)


def test_discover_refuses_odd_names_and_options(tmp_path: Path) -> None:
    """Host names, addresses, the ssh user, --python and --root reach Ansible: plain identifiers only, refused
    before anything runs (the executor here would fail the test if it were called)."""
    from sovkit.errors import SovkitError
    from sovkit.provision.discover import DiscoverOptions, discover_hosts, parse_host_spec

    assert parse_host_spec("10.0.0.7") == ("10.0.0.7", "10.0.0.7")
    assert parse_host_spec("npu-1=gpu1.example.org") == ("npu-1", "gpu1.example.org")
    assert parse_host_spec("GPU1.Example.org") == ("gpu1.example.org", "GPU1.Example.org")

    class NoRun:
        def run(self, *a: Any, **k: Any) -> Any:
            raise AssertionError("nothing may run")

    for specs, opts, match in (
        (["n1={{ x }}"], DiscoverOptions(), "not an address"),
        (["{{x}}=10.0.0.1"], DiscoverOptions(), "not a valid host name"),
        (["a=10.0.0.1", "a=10.0.0.2"], DiscoverOptions(), "given twice"),
        (["a=10.0.0.1"], DiscoverOptions(user="root;id"), "not a valid ssh user"),
        (["a=10.0.0.1"], DiscoverOptions(python="/usr/bin/python3 -c x"), "--python"),
        (["a=10.0.0.1"], DiscoverOptions(root=Path("/tmp/a b")), "--root"),
    ):
        with pytest.raises(SovkitError, match=match):
            discover_hosts(specs, opts, NoRun(), tmp_path / ".sovkit")
