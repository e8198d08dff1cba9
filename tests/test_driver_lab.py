"""Driver install and reload over SSH on the lab's hosts (network namespaces, own sshd each): real dpkg, the
simulated modprobe, the loaded version read back from /sys/module; a mislabelled build fails its host only."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from sovkit.simulator import read_devices
from sovkit.simulator.drivers import loaded_version
from sovkit.state.models import State
from tests.conftest import run_cli
from tests.driverkit import add_driver, boot_with_driver, use_driver
from tests.hostlab import HostLab
from tests.sitefactory import make_lab_site

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.timeout(1800)]
HOSTS = ("h1", "h2", "h3")


def test_driver_upgrade_over_ssh_reloads_the_module_and_a_wrong_build_fails_its_host(
        lab: HostLab, tmp_path: Path) -> None:
    site = make_lab_site(tmp_path, lab)
    site.data["deployments"], site.data["serving_groups"] = [], []  # driver and firmware only
    add_driver(site, tmp_path / "debs", "rbln-driver-1-1", "1.1")
    use_driver(site, "rbln-driver-1-1")
    site.save()
    for h in HOSTS:
        boot_with_driver(site, h, "1.0")

    r = run_cli("apply", site.path, "--auto-approve")
    assert r.code == 0, r.text
    assert "✓ h1: driver rebellions" in r.out, r.out
    state = State.model_validate_json((site.root / ".sovkit/state.json").read_bytes())
    for h in HOSTS:
        root = site.host_root(h)
        assert loaded_version(root, "rebellions") == "1.1"
        shown = subprocess.run(["dpkg-query", f"--root={root}", "-W", "-f", "${Version}", "rebellions-sim"],
                               capture_output=True, text=True, check=True).stdout
        assert shown == "1.1"
        rec = state.hosts[h].drivers["rebellions"]
        assert (rec.version, rec.driver) == ("1.1", "rbln-driver-1-1")
        assert {d["firmware"] for d in read_devices(root)} == {"1.2.0"}
    assert run_cli("plan", site.path, "--refresh", "--detailed-exitcode").code == 0

    # a build whose module says 1.2-rc1 while the package says 1.2, named on h2 only
    add_driver(site, tmp_path / "debs", "rbln-driver-1-2", "1.2", reports="1.2-rc1")
    use_driver(site, "rbln-driver-1-2", hosts=["h2"])
    site.save()
    planned = run_cli("plan", site.path, "--json", "--detailed-exitcode")
    assert [(c["host"], c["component"], c["reason"]) for c in json.loads(planned.out)["plan"]["changes"]] == [
        ("h2", "driver", "upgrade 1.1 → 1.2 (module rebellions reloaded)")]
    r = run_cli("apply", site.path, "--auto-approve")
    assert r.code == 1, r.text
    assert re.search(r"✗ h2 failed at driver \| loaded module must report 1\.2: .*reports version 1\.2-rc1", r.err), \
        r.err
    after = State.model_validate_json((site.root / ".sovkit/state.json").read_bytes())
    assert after.hosts["h2"].drivers["rebellions"].version == "1.1", "state keeps the driver it had"
    assert loaded_version(site.host_root("h2"), "rebellions") == "1.2-rc1", "what the host really loaded"
    drift = run_cli("plan", site.path, "--refresh", "--json", "--detailed-exitcode")
    assert drift.code == 2, drift.text
    assert [(c["host"], c["component"]) for c in json.loads(drift.out)["plan"]["changes"]] == [("h2", "driver")]
