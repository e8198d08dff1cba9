"""Fleets on real hosts: two sites, each a gateway namespace and hosts only that gateway can reach.

The controller (this test process, in the root namespace) has no route to any site host: it reaches each
site's gateway over SSH, transmits the job to ``ansible-runner worker`` there, and processes the events that
come back. The gateway runs sovkit against the site's own inventory, state, artifact store and attestation
log; only a summary signed with the site's key returns.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from sovkit.attest.log import read_log
from sovkit.fleet.summary import SiteSummary
from tests.conftest import ROOT, run_cli
from tests.hostlab import HostLab, create_lab, unavailable_reason
from tests.sitefactory import Site, make_lab_site

pytestmark = [pytest.mark.netns, pytest.mark.slow]


@dataclass
class FleetLab:
    fleet: Path
    sites: dict[str, Site]
    labs: dict[str, HostLab]
    controller: Path


def _gateway_bin(tmp: Path) -> Path:
    """The gateway's Python: this interpreter with this checkout on its path (a gateway installs sovkit)."""
    bindir = tmp / "gwbin"
    bindir.mkdir()
    python = bindir / "python3"
    python.write_text(f"#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} \"$@\"\n")
    python.chmod(0o755)
    for tool in ("ansible-playbook", "ansible-runner"):
        found = shutil.which(tool, path=str(Path(sys.executable).parent)) or shutil.which(tool)
        assert found, f"{tool} is not installed next to {sys.executable}"
        (bindir / tool).symlink_to(found)
    return python


@pytest.fixture(scope="module")
def fleet_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetLab]:
    reason = unavailable_reason()
    if reason:
        pytest.fail(f"the fleet lab cannot be built here: {reason}")
    tmp = tmp_path_factory.mktemp("fleet")
    python = _gateway_bin(tmp)
    controller = tmp / "office"
    (controller / "keys").mkdir(parents=True)
    labs: dict[str, HostLab] = {}
    sites: dict[str, Site] = {}
    entries = []
    try:
        for name, hosts in (("site-a", 2), ("site-b", 1)):
            lab = labs[name] = create_lab(hosts, tmp / f"{name}-lab")
            lab.add_gateway()
            site = sites[name] = make_lab_site(tmp / name, lab)
            site.data["metadata"]["name"] = name
            site.data["deployments"], site.data["serving_groups"] = [], []
            site.save()
            shutil.copy(site.root / ".sovkit" / "keys" / "operator.key.pub", controller / "keys" / f"{name}.pub")
            shutil.copy(lab.key_path, controller / "keys" / f"{name}-gw")
            shutil.copy(lab.known_hosts, controller / "keys" / f"{name}-known_hosts")
            assert lab.gateway_host is not None
            entries.append({"name": name, "inventory": str(site.path), "key": f"keys/{name}.pub",
                            "gateway": {"address": lab.gateway_host.address, "user": "root",
                                        "ssh_key": f"keys/{name}-gw", "known_hosts": f"keys/{name}-known_hosts",
                                        "python": str(python)}})
        fleet = controller / "fleet.yaml"
        fleet.write_text(yaml.safe_dump({"apiVersion": "sovkit.dev/v1", "kind": "Fleet",
                                         "metadata": {"name": "national"}, "parallel": 2, "sites": entries},
                                        sort_keys=False))
        yield FleetLab(fleet, sites, labs, controller)
    finally:
        for lab in labs.values():
            lab.destroy()


def test_the_controller_cannot_reach_site_hosts(fleet_lab: FleetLab) -> None:
    lab = fleet_lab.labs["site-a"]
    direct = lab.ssh(lab.hosts[0], "true", timeout=20)
    assert direct.returncode == 255 and "No route to host" in direct.stderr
    gw = lab.gateway_host
    assert gw is not None
    via = subprocess.run(["ip", "netns", "exec", gw.netns, "ssh", "-i", str(lab.key_path), *lab.ssh_options(),
                          f"root@{lab.hosts[0].address}", "true"], capture_output=True, text=True, timeout=30)
    assert via.returncode == 0, via.stderr


def test_fleet_apply_then_plan_status_audit(fleet_lab: FleetLab, tmp_path: Path) -> None:
    out = tmp_path / "summaries"
    r = run_cli("fleet", "apply", fleet_lab.fleet, "--out", out, "--canary", "1", timeout=900)
    assert r.code == 0, r.text
    assert "Fleet national: apply" in r.out and r.out.count("verified") >= 2
    for name, site in fleet_lab.sites.items():
        summary = SiteSummary.model_validate_json(_payload(out / f"{name}.summary.json"))
        assert summary.ok and summary.site == name and summary.verb == "apply"
        assert summary.rollout is not None and summary.rollout["canary"] == 1
        # the work happened at the site: its state and its attestation log, with the rollout attested
        state = json.loads((site.root / ".sovkit" / "state.json").read_text())
        for host in (h["name"] for h in site.data["hosts"]):
            assert state["hosts"][host]["firmware"], f"{name}/{host} has no firmware recorded"
        entries = read_log(site.root / ".sovkit" / "attestations")
        provisions = [e for e in entries if e.predicate_type.endswith("/provision/v1")]
        assert provisions and all(e.predicate["rollout"]["canary"] == 1 for e in provisions)
        assert summary.attestations == len(entries) and summary.state_serial == state["serial"]
    # the controller holds no site data: no state, no attestation log, no inventory
    assert not list(fleet_lab.controller.rglob("state.json")) and not list(fleet_lab.controller.rglob("log.jsonl"))

    r = run_cli("fleet", "plan", fleet_lab.fleet, "--json", timeout=600)
    assert r.code == 0, r.text
    rows = {s["site"]: s for s in json.loads(r.out)["sites"]}
    assert all(rows[n]["verified"] and rows[n]["summary"]["changes"]["create"] == 0 for n in fleet_lab.sites)

    r = run_cli("fleet", "audit", fleet_lab.fleet, "--site", "site-b", "--json", timeout=600)
    assert r.code == 0, r.text
    pack = Path(json.loads(r.out)["sites"][0]["summary"]["audit_pack"])
    assert pack.is_relative_to(fleet_lab.sites["site-b"].root) and (pack / "manifest.json").is_file()
    verified = run_cli("verify", pack, "--key", fleet_lab.controller / "keys" / "site-b.pub")
    assert verified.code == 0, verified.text


def _payload(path: Path) -> bytes:
    return base64.b64decode(json.loads(path.read_text())["payload"])


def test_a_failing_site_does_not_stop_the_others(fleet_lab: FleetLab, tmp_path: Path) -> None:
    """site-b's gateway refuses connections and site-c answers with another site's key: both rows fail, a passes."""
    data = yaml.safe_load(fleet_lab.fleet.read_text())
    a, b = data["sites"]
    b = json.loads(json.dumps(b))
    b["gateway"]["port"] = 2  # nothing listens there
    c = json.loads(json.dumps(a))
    c["name"], c["key"] = "site-c", "keys/site-b.pub"  # site-a's gateway, but the fleet expects site-b's key
    data["sites"] = [a, b, c]
    fleet = fleet_lab.controller / "broken.yaml"
    fleet.write_text(yaml.safe_dump(data, sort_keys=False))
    r = run_cli("fleet", "status", fleet, "--json", timeout=600)
    assert r.code == 1, r.text
    rows = {s["site"]: s for s in json.loads(r.out)["sites"]}
    assert rows["site-a"]["ok"] and rows["site-a"]["verified"]
    assert not rows["site-b"]["ok"] and "sent nothing back" in rows["site-b"]["error"]
    assert "Connection refused" in rows["site-b"]["error"]
    assert not rows["site-c"]["ok"] and "does not verify with its key" in rows["site-c"]["error"]
    assert "2 of 3 site(s) did not succeed: site-b, site-c" in r.err and "Traceback" not in r.err
