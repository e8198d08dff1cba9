"""Vendor firmware procedures over SSH against the simulated hardware, with its fault modes.

Three lab hosts (network namespaces, own sshd each): h1 and h2 carry two Rebellions ATOM-Max cards (stop
rbln-smd, unload the driver, rbln-flash per PCI bus id, reload, restart, read back), h3 one Furiosa RNGD whose
update only takes effect after a cold reboot (Ansible's reboot module, pointed at the simulator's reboot
under the host's root). A device that boots its old firmware, a flash error and a device missing after the
reboot must each fail their host, keep the recorded version in the state, and be attested as failed.
"""

from __future__ import annotations

import base64
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from sovkit.signing.artifacts import sign_artifacts
from sovkit.simulator import drivers, install_simulator, make_firmware_image, read_devices, set_fault
from sovkit.state.models import State
from tests.conftest import run_cli
from tests.hostlab import HostLab
from tests.sitefactory import VENDOR, Site, make_lab_site

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.timeout(2400)]

RBLN, RNGD = "rebellions-atom-max", "furiosa-rngd"


def _state(site: Site) -> State:
    return State.model_validate_json((site.root / ".sovkit" / "state.json").read_bytes())


def _provision(site: Site) -> list[dict[str, Any]]:
    out = []
    for line in (site.root / ".sovkit" / "attestations" / "log.jsonl").read_text().splitlines():
        payload = json.loads(base64.b64decode(json.loads(line)["envelope"]["payload"]))
        if payload["predicateType"].endswith("/provision/v1"):
            out.append(payload["predicate"])
    return out


def _on_devices(root: Path) -> dict[str, str]:
    """What the simulated hardware itself holds (not what sovkit recorded), by PCI bus id."""
    return {d["bdf"]: d["firmware"] for d in read_devices(root) if d.get("present", True)}


def _add_firmware(site: Site, name: str, vendor: str, kind: str, version: str) -> None:
    rel = f"firmware/{name}.fw"
    art = site.put(rel, make_firmware_image(kind, version, seed="lab"))
    env = sign_artifacts({rel: art["sha256"]}, VENDOR, "firmware", name, version)
    site.put(rel + ".sig", env.to_json().encode())
    site.data["firmware"].append({"name": name, "vendor": vendor, "accelerator": kind, "version": version,
                                  "image": art, "signature": rel + ".sig"})


def _firmware_only_site(tmp_path: Path, lab: HostLab) -> Site:
    site = make_lab_site(tmp_path, lab)
    site.data["deployments"], site.data["serving_groups"] = [], []
    site.data["trust_roots"]["vendors"].append({"name": "furiosa", "public_key": "keys/vendor-rebellions.pub"})
    for name, version in (("rngd-fw-2025.3.0", "2025.3.0"), ("rngd-fw-2025.4.0", "2025.4.0")):
        _add_firmware(site, name, "furiosa", RNGD, version)
    _add_firmware(site, "atom-max-fw-1.3.0-lab", "rebellions", RBLN, "1.3.0")
    site.host("h3")["accelerators"] = [{"kind": RNGD, "count": 1, "firmware": "rngd-fw-2025.3.0"}]
    site.save()
    install_simulator(site.host_root("h3"), [(RNGD, "2025.1.0")], interpreter=sys.executable)
    for h in ("h1", "h2", "h3"):  # the driver helper's modprobe/modinfo shims and the installed module files
        root = site.host_root(h)
        drivers.install_kmod(root, interpreter=sys.executable)
        module, version = ("rngd", "2025.1.0") if h == "h3" else ("rebellions", "1.3.73")
        drivers.install_module(root, module, version)
    return site


def test_vendor_procedures_and_their_faults_over_ssh(lab: HostLab, tmp_path: Path) -> None:
    site = _firmware_only_site(tmp_path, lab)
    env = {"SOVKIT_SIGNING_KEY": str(site.root / ".sovkit" / "keys" / "operator.key")}
    roots = {h: site.host_root(h) for h in ("h1", "h2", "h3")}
    boot_id = (roots["h3"] / "var/lib/npu-sim/boot_id").read_text()

    # 1. every procedure as documented: Rebellions reload, Furiosa cold reboot; recorded per PCI bus id
    r = run_cli("apply", site.path, "--auto-approve", env=env)
    assert r.code == 0, r.text
    state = _state(site)
    for h in ("h1", "h2"):
        assert _on_devices(roots[h]) == {"0000:01:00.0": "1.2.0", "0000:02:00.0": "1.2.0"}
        fw = state.hosts[h].firmware[RBLN]
        assert (fw.version, {b: d.firmware for b, d in fw.devices.items()}) == (
            "1.2.0", {"0000:01:00.0": "1.2.0", "0000:02:00.0": "1.2.0"})
        assert drivers.loaded_version(roots[h], "rebellions") == "1.3.73"  # post hooks: driver reloaded
        assert (roots[h] / "var/lib/npu-sim/holders/rebellions").read_text().strip() == "rbln-smd.service"
    assert _on_devices(roots["h3"]) == {"0000:01:00.0": "2025.3.0"}
    assert (roots["h3"] / "var/lib/npu-sim/boot_id").read_text() != boot_id, "the update must reboot h3"
    assert {b: d.firmware for b, d in state.hosts["h3"].firmware[RNGD].devices.items()} == {
        "0000:01:00.0": "2025.3.0"}
    assert run_cli("plan", site.path, "--refresh", "--detailed-exitcode", env=env).code == 0  # read back agrees

    # 2. the next versions, with a fault on each host
    for h in ("h1", "h2"):
        site.host(h)["accelerators"][0]["firmware"] = "atom-max-fw-1.3.0-lab"
    site.host("h3")["accelerators"][0]["firmware"] = "rngd-fw-2025.4.0"
    site.save()
    set_fault(roots["h1"], "0000:02:00.0", "boots-old-firmware")
    set_fault(roots["h2"], "0000:01:00.0", "flash-error")
    set_fault(roots["h3"], "0000:01:00.0", "missing-after-reboot")
    r = run_cli("apply", site.path, "--auto-approve", env=env)
    assert r.code == 1, r.text
    assert "Traceback" not in r.text
    # (a) the device that boots its old firmware is caught by the read-back
    assert re.search(r"✗ h1 failed at firmware \| every device must report 1\.3\.0: .*"
                     r"0000:02:00\.0 reports 1\.2\.0", r.err), r.err
    # (b) a flash error fails the host at the flash, and the post hooks still bring the driver back
    assert re.search(r"✗ h2 failed at firmware \| update per device: rbln-flash .*flash failed", r.err), r.err
    assert drivers.loaded_version(roots["h2"], "rebellions") == "1.3.73"
    assert (roots["h2"] / "var/lib/npu-sim/holders/rebellions").is_file()
    # (d) a device missing after the reboot
    assert re.search(r"✗ h3 failed at firmware \| every device must report 2025\.4\.0: .*"
                     r"missing device\(s\) 0000:01:00\.0", r.err), r.err
    assert "apply finished with 3 failed host(s)" in r.err
    assert _on_devices(roots["h1"]) == {"0000:01:00.0": "1.3.0", "0000:02:00.0": "1.2.0"}
    # the per-device flash goes on with the next device (each is flashed on its own), the host still fails
    assert _on_devices(roots["h2"]) == {"0000:01:00.0": "1.2.0", "0000:02:00.0": "1.3.0"}
    assert _on_devices(roots["h3"]) == {}
    # the state keeps the versions last read back, the attestation records each failure
    state = _state(site)
    assert [state.hosts[h].firmware[RBLN].version for h in ("h1", "h2")] == ["1.2.0", "1.2.0"]
    assert state.hosts["h3"].firmware[RNGD].version == "2025.3.0"
    last = {p["host"]: p for p in _provision(site)[-3:]}
    assert {h: p["outcome"] for h, p in last.items()} == {"h1": "failed", "h2": "failed", "h3": "failed"}
    assert "0000:02:00.0 reports 1.2.0" in last["h1"]["error"]
    assert "missing device(s) 0000:01:00.0" in last["h3"]["error"]
    assert {(d["device"], d["firmware"]) for d in last["h1"]["devices"]} == {
        ("0000:01:00.0", "1.2.0"), ("0000:02:00.0", "1.2.0")}  # what the state records, not the new version

    # the fault cleared and the flash retried: the host converges (the plan still wants 1.3.0 on h1 and h2)
    set_fault(roots["h2"], "0000:01:00.0", None)
    site.host("h1")["accelerators"][0]["firmware"] = "atom-max-fw-1.2.0"
    site.host("h3")["accelerators"][0]["firmware"] = "rngd-fw-2025.3.0"
    site.save()
    planned = run_cli("plan", site.path, "--json", "--detailed-exitcode", env=env)
    assert {(c["host"], c["component"]) for c in json.loads(planned.out)["plan"]["changes"]} == {("h2", "firmware")}
    r = run_cli("apply", site.path, "--auto-approve", env=env)
    assert r.code == 0, r.text
    assert _state(site).hosts["h2"].firmware[RBLN].version == "1.3.0"
