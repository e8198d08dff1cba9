"""Host facts through real Ansible on local simulated hosts: `plan --refresh` stops on hardware that differs from
the inventory (an error naming the host, not drift), and `sovkit init --discover` writes a starting inventory
that validates once its TODOs are filled."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import run_cli
from tests.hostfiles import ATOM_MAX, NEOVERSE_V2, RNGD, arm_cpuinfo, remove_card, write_host, x86_cpuinfo
from tests.sitefactory import DEMO, make_site

pytestmark = pytest.mark.slow


def test_refresh_stops_on_a_missing_card(tmp_path: Path) -> None:
    """Both demo hosts are simulated as the inventory says (install_simulator: Neoverse V2, 2x ATOM-Max): refresh
    plans normally. One card gone from npu-node-2's PCI bus: `plan --refresh` fails, naming the host and
    inventory vs found, and so does `refresh` (the state is not rewritten)."""
    site = make_site(tmp_path)
    for h in site.data["hosts"]:
        assert h["cpu"] == "arm-neoverse-v2" and h["accelerators"] == [
            {"kind": "rebellions-atom-max", "count": 2, "firmware": "atom-max-fw-1.2.0"}]
        assert (site.host_root(h["name"]) / "sys/bus/pci/devices/0000:02:00.0/device").read_text() == "0x1250\n"
    ok = run_cli("plan", site.path, "--refresh", "--json")
    assert ok.code == 0, ok.text
    assert json.loads(ok.out)["unreachable"] == {}

    remove_card(site.host_root("npu-node-2"), "0000:02:00.0")
    bad = run_cli("plan", site.path, "--refresh")
    assert bad.code == 1, bad.text
    assert "hardware on 1 host (npu-node-2) differs from the inventory" in bad.err
    assert "npu-node-2: accelerators rebellions-atom-max: inventory says 2, found 1 (at 0000:01:00)" in bad.err
    assert "hint:" in bad.err and "Traceback" not in bad.err
    assert "npu-node-1" not in bad.err.split("hint:")[0].split("differs")[1]  # only the changed host is named

    state = site.root / ".sovkit" / "state.json"
    before = state.read_bytes() if state.exists() else None
    again = run_cli("refresh", site.path)
    assert again.code == 1 and "npu-node-2: accelerators rebellions-atom-max" in again.err
    assert (state.read_bytes() if state.exists() else None) == before


def test_refresh_stops_on_another_cpu_and_hostile_cpuinfo(tmp_path: Path) -> None:
    """npu-node-1 is x86 (the inventory says aarch64/Neoverse V2); npu-node-2's cpuinfo carries a template: both
    named in one error, and the template is never evaluated on the controller."""
    site = make_site(tmp_path)
    marker = tmp_path / "pwned"
    write_host(site.host_root("npu-node-1"), x86_cpuinfo(), [ATOM_MAX, ATOM_MAX])
    hostile = arm_cpuinfo([NEOVERSE_V2]).replace(
        "CPU part\t: 0xd4f", f"CPU part\t: {{{{ lookup('pipe', 'touch {marker}') }}}}", 1)
    write_host(site.host_root("npu-node-2"), hostile, [ATOM_MAX, ATOM_MAX])
    r = run_cli("plan", site.path, "--refresh")
    assert r.code == 1, r.text
    assert "hardware on 2 hosts (npu-node-1, npu-node-2)" in r.err
    assert "npu-node-1: arch: inventory says aarch64, the host is x86_64" in r.err
    assert "npu-node-1: cpu: inventory says arm-neoverse-v2, the host has generic-x86_64" in r.err
    assert "npu-node-2: facts refused: the facts report was refused (cpuinfo.parts.0" in r.err
    assert not marker.exists()


def _fill_todos(path: Path, store: Path) -> None:
    """What an operator does after discovery: country, trust roots, artifact store, rack budget, log sinks and the
    documentation record the policy requires."""
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    data["jurisdiction"]["country"] = "KR"
    data["residency"]["allowed_jurisdictions"] = ["KR"]
    shutil.copytree(DEMO / "keys", path.parent / "keys")
    data["trust_roots"] = {"publishers": [{"name": "demo-publisher", "public_key": "keys/publisher.pub"}],
                           "vendors": [{"name": "demo-vendor", "public_key": "keys/vendor-rebellions.pub"}]}
    store.mkdir()
    data["artifact_store"]["path"] = store.name
    data["racks"][0]["power_budget_w"] = 6000
    for sink in data["log_sinks"]:
        sink.update(url=f"file:///var/log/sovkit/{sink['name']}", jurisdiction="KR", retention_days=365)
    data["records"]["technical_documentation"] = {"location": "https://docs.example.internal/ai",
                                                  "jurisdiction": "KR", "retention_years": 10}
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_init_discover_round_trip(tmp_path: Path) -> None:
    """Discover two simulated hosts over Ansible's local connection: the starting site.yaml has their arch, CPU and
    cards; validation fails naming every TODO; with the TODOs filled it validates, and a refresh of it finds
    the hardware as written."""
    roots = tmp_path / "hosts"
    write_host(roots / "npu-a", arm_cpuinfo([NEOVERSE_V2]), [ATOM_MAX, ATOM_MAX])
    write_host(roots / "npu-b", x86_cpuinfo(), [RNGD])
    out = tmp_path / "site"
    r = run_cli("init", out, "--discover", "npu-a=127.0.0.1", "--discover", "npu-b=127.0.0.2",
                "--connection", "local", "--root", roots, "--name", "lab-site")
    assert r.code == 0, r.text
    assert "npu-a: aarch64, arm-neoverse-v2, 2× rebellions-atom-max" in r.out
    path = out / "site.yaml"
    data = yaml.safe_load(path.read_text())
    hosts = {h["name"]: h for h in data["hosts"]}
    assert hosts["npu-a"]["arch"] == "aarch64" and hosts["npu-a"]["cpu"] == "arm-neoverse-v2"
    assert hosts["npu-a"]["accelerators"] == [{"kind": "rebellions-atom-max", "count": 2}]
    assert hosts["npu-b"]["arch"] == "x86_64" and hosts["npu-b"]["cpu"] == "generic-x86_64"
    assert hosts["npu-b"]["accelerators"] == [{"kind": "furiosa-rngd", "count": 1}]
    assert hosts["npu-b"]["root"] == str(roots / "npu-b")

    unfilled = run_cli("validate", path)
    assert unfilled.code == 1
    for where in ("[jurisdiction.country] 'TODO' is a TODO left to fill in",
                  "[trust_roots.publishers[0].public_key] 'TODO: publisher public key' is a TODO",
                  "[artifact_store.path] 'TODO: artifact store directory' is a TODO",
                  "[racks[0].power_budget_w] 'TODO: rack power budget in W' is a TODO",
                  "[log_sinks[0].url] 'TODO: decision log URL' is a TODO",
                  "[log_sinks[1].retention_days] 'TODO: days kept, at least 183' is a TODO",
                  "[records.technical_documentation.location] 'TODO: documentation location' is a TODO"):
        assert where in unfilled.err, unfilled.err

    again = run_cli("init", out, "--discover", "npu-a=127.0.0.1", "--connection", "local", "--root", roots)
    assert again.code == 1 and "already exists" in again.err  # never overwrites without --force

    _fill_todos(path, out / "artifacts")
    valid = run_cli("validate", path)
    assert valid.code == 0, valid.text
    assert "lab-site: inventory is valid (1 racks, 2 hosts" in valid.out
    refreshed = run_cli("plan", path, "--refresh", "--json")
    assert refreshed.code == 0, refreshed.text


def test_init_discover_unknown_cpu_and_unreadable_host(tmp_path: Path) -> None:
    """A CPU part sovkit does not know becomes a TODO naming the part; a host whose facts are refused stops the
    discovery, naming the host, and nothing is written."""
    roots = tmp_path / "hosts"
    write_host(roots / "odd", arm_cpuinfo([("0x41", "0xd99")]), [])
    r = run_cli("init", tmp_path / "a", "--discover", "odd=127.0.0.1", "--connection", "local", "--root", roots,
                "--country", "DE")
    assert r.code == 0, r.text
    text = (tmp_path / "a" / "site.yaml").read_text()
    assert "cpu: 'TODO: cpu id: part 0x41:0xd99 is not in the catalog'" in text
    assert "country: DE" in text
    bad_validate = run_cli("validate", tmp_path / "a" / "site.yaml")
    assert "[hosts[0].cpu] 'TODO: cpu id: part 0x41:0xd99" in bad_validate.err

    write_host(roots / "evil", "processor : 0\nvendor_id : {{ 7 * 7 }}\n", [])
    bad = run_cli("init", tmp_path / "b", "--discover", "evil=127.0.0.1", "--connection", "local", "--root", roots)
    assert bad.code == 1
    assert "could not read the facts of 1 host(s) (evil)" in bad.err
    assert "evil: the facts report was refused (cpuinfo.vendor_id.0" in bad.err
    assert "49" not in bad.err and not (tmp_path / "b" / "site.yaml").exists()
