"""The driver kind on local-connection hosts (real Ansible, real dpkg, simulated modprobe): install, reload,
read back; a package whose module reports another version fails the host and keeps the state."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from sovkit.simulator import read_devices
from sovkit.simulator.drivers import loaded_version
from sovkit.state.models import DriverRecord, State
from tests.conftest import run_cli
from tests.driverkit import add_driver, add_runfile_driver, boot_with_driver, use_driver
from tests.sitefactory import Site, make_site

pytestmark = pytest.mark.slow
HOSTS = ("npu-node-1", "npu-node-2")


def _driver_site(tmp_path: Path) -> Site:
    """The demo site without serving (driver and firmware only, so each apply is quick); hosts run driver 1.0."""
    site = make_site(tmp_path)
    site.data["deployments"], site.data["serving_groups"] = [], []
    add_driver(site, tmp_path / "debs", "rbln-driver-1-1", "1.1")
    use_driver(site, "rbln-driver-1-1")
    site.save()
    for h in HOSTS:
        boot_with_driver(site, h, "1.0")
    return site


def _driver(site: Site, host: str) -> DriverRecord | None:
    state = State.model_validate_json((site.root / ".sovkit" / "state.json").read_bytes())
    return state.hosts[host].drivers.get("rebellions") if host in state.hosts else None


def _dpkg_version(root: Path, package: str) -> str:
    return subprocess.run(["dpkg-query", f"--root={root}", "-W", "-f", "${Version}", package], capture_output=True,
                          text=True, check=True).stdout


def test_driver_installs_reloads_and_is_read_back_before_firmware(tmp_path: Path) -> None:
    site = _driver_site(tmp_path)
    planned = run_cli("plan", site.path, "--json", "--detailed-exitcode")
    assert planned.code == 2, planned.text
    changes = [(c["host"], c["component"], c["action"], c["reason"])
               for c in json.loads(planned.out)["plan"]["changes"]]
    assert changes[:2] == [
        ("npu-node-1", "driver", "create", "install rbln-driver-1-1 (deb), load module rebellions 1.1"),
        ("npu-node-1", "firmware", "create", "flash 1.2.0 on 2 device(s)")], changes

    r = run_cli("apply", site.path, "--auto-approve")
    assert r.code == 0, r.text
    for h in HOSTS:
        root = site.host_root(h)
        assert _dpkg_version(root, "rebellions-sim") == "1.1", "the package is installed through dpkg"
        assert loaded_version(root, "rebellions") == "1.1", "the module was unloaded and loaded again"
        assert {d["firmware"] for d in read_devices(root)} == {"1.2.0"}
        rec = _driver(site, h)
        assert rec is not None and (rec.version, rec.driver, rec.format) == ("1.1", "rbln-driver-1-1", "deb")
        assert set(rec.artifacts) == {"drivers/rebellions-sim_1.1_all.deb"}
    assert run_cli("plan", site.path, "--detailed-exitcode").code == 0
    refreshed = run_cli("plan", site.path, "--refresh", "--detailed-exitcode")
    assert refreshed.code == 0, refreshed.text

    # someone loads another build by hand on node 2: refresh reads /sys/module back and shows it as drift
    (site.host_root("npu-node-2") / "sys/module/rebellions/version").write_text("1.0\n")
    drift = run_cli("plan", site.path, "--refresh", "--json", "--detailed-exitcode")
    assert drift.code == 2, drift.text
    doc = json.loads(drift.out)
    assert [(c["host"], c["component"], c["reason"]) for c in doc["plan"]["changes"]] == [
        ("npu-node-2", "driver", "upgrade 1.0 → 1.1 (module rebellions reloaded)")]


def test_module_reporting_another_version_fails_the_host_and_keeps_state(tmp_path: Path) -> None:
    site = _driver_site(tmp_path)
    assert run_cli("apply", site.path, "--auto-approve").code == 0
    add_driver(site, tmp_path / "debs", "rbln-driver-1-2", "1.2", reports="1.2-rc1")  # a mislabelled build
    for h in site.data["hosts"]:
        h["accelerators"][0]["firmware"] = "atom-max-fw-1.3.0"
    use_driver(site, "rbln-driver-1-2", hosts=["npu-node-2"])
    site.save()
    r = run_cli("apply", site.path, "--auto-approve")
    assert r.code == 1, r.text
    assert "npu-node-2 failed at driver | loaded module must report 1.2" in r.err, r.err
    assert "module rebellions reports version 1.2-rc1 after loading, the inventory pins 1.2" in r.err
    assert "Traceback" not in r.text
    bad = site.host_root("npu-node-2")
    rec = _driver(site, "npu-node-2")
    assert rec is not None and rec.version == "1.1" and rec.driver == "rbln-driver-1-1", "state keeps the old driver"
    assert {d["firmware"] for d in read_devices(bad)} == {"1.2.0"}, "firmware is not flashed after a failed driver"
    good = site.host_root("npu-node-1")
    assert {d["firmware"] for d in read_devices(good)} == {"1.3.0"}
    assert loaded_version(good, "rebellions") == "1.1"


def test_runfile_driver_is_installed_by_its_installer_and_reloaded(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    site.data["deployments"], site.data["serving_groups"] = [], []
    add_runfile_driver(site, "rbln-driver-run", "1.1")
    use_driver(site, "rbln-driver-run")
    site.save()
    for h in HOSTS:
        boot_with_driver(site, h, "1.0")
    r = run_cli("apply", site.path, "--auto-approve")
    assert r.code == 0, r.text
    for h in HOSTS:
        root = site.host_root(h)
        assert json.loads((root / "var/lib/npu-sim/modules/rebellions.json").read_text())["version"] == "1.1"
        assert loaded_version(root, "rebellions") == "1.1"
        rec = _driver(site, h)
        assert rec is not None and (rec.version, rec.format) == ("1.1", "runfile")
    assert run_cli("plan", site.path, "--refresh", "--detailed-exitcode").code == 0
