"""NVIDIA firmware through the BMC (`nvfwupd -t ip= user= password= update_fw -p PKG`, then a GPU reset) over SSH.

One lab host with two simulated H100s whose simulated BMC has credentials. The address and user reach the
vendor step from the controller's environment; the password reaches it from a private file sovkit writes outside
the run directory (ansible-runner writes the playbook's environment to disk, so the password never goes there).
Missing credentials stop the host before anything is flashed; a wrong password is refused by the BMC; the right
ones flash and read back. The password must not appear in any file sovkit or Ansible wrote.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sovkit.simulator import drivers, install_simulator, read_devices, set_bmc
from sovkit.state.models import State
from tests.conftest import run_cli
from tests.hostlab import HostLab
from tests.sitefactory import make_lab_site
from tests.test_firmware_lab import _add_firmware

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.timeout(1200)]

H100 = "nvidia-h100-sxm"
PASSWORD = "bmc-pw-5f0c1e9a77"  # long enough for the executor's leak scan to look for it


def _on_devices(root: Path) -> dict[str, str]:
    return {d["bdf"]: d["firmware"] for d in read_devices(root) if d.get("present", True)}


def _files_holding(directory: Path, needle: bytes) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_nvidia_firmware_through_the_bmc(lab: HostLab, tmp_path: Path) -> None:
    site = make_lab_site(tmp_path, lab)
    site.data["deployments"], site.data["serving_groups"] = [], []
    site.data["hosts"] = [h for h in site.data["hosts"] if h["name"] == "h1"]
    site.data["trust_roots"]["vendors"].append({"name": "nvidia", "public_key": "keys/vendor-rebellions.pub"})
    _add_firmware(site, "h100-vbios-96.00.99", "nvidia", H100, "96.00.99.00.01")
    site.host("h1")["accelerators"] = [{"kind": H100, "count": 2, "firmware": "h100-vbios-96.00.99"}]
    site.save()
    root = site.host_root("h1")
    install_simulator(root, [(H100, "96.00.74.00.01")] * 2, interpreter=sys.executable)
    drivers.install_kmod(root, interpreter=sys.executable)
    drivers.install_module(root, "nvidia", "550.54.15")
    set_bmc(root, "10.0.9.11", "fwadmin", PASSWORD)
    before = _on_devices(root)
    assert set(before.values()) == {"96.00.74.00.01"} and len(before) == 2
    key = {"SOVKIT_SIGNING_KEY": str(site.root / ".sovkit" / "keys" / "operator.key")}

    # 1. no BMC credentials: the host stops before any vendor step, nothing is flashed
    r = run_cli("apply", site.path, "--auto-approve", env=key)
    assert r.code == 1, r.text
    assert "Traceback" not in r.text
    assert "set SOVKIT_BMC_ADDRESS_H1, SOVKIT_BMC_USER and SOVKIT_BMC_PASSWORD" in r.err, r.err
    assert _on_devices(root) == before

    # 2. a wrong password: the BMC refuses, nothing is flashed, the state records no new firmware
    creds = {**key, "SOVKIT_BMC_ADDRESS_H1": "10.0.9.11", "SOVKIT_BMC_USER": "fwadmin"}
    r = run_cli("apply", site.path, "--auto-approve", env={**creds, "SOVKIT_BMC_PASSWORD": "wrong-password-123"})
    assert r.code == 1, r.text
    assert "authentication failed" in r.err, r.err
    assert "wrong-password-123" not in r.text
    assert _on_devices(root) == before

    # a password file that is not there is a clear error before anything runs
    r = run_cli("apply", site.path, "--auto-approve", env={**creds, "SOVKIT_BMC_PASSWORD_FILE": str(tmp_path / "no")})
    assert r.code != 0 and "SOVKIT_BMC_PASSWORD_FILE" in r.err and "Traceback" not in r.text, r.text
    assert _on_devices(root) == before

    # 3. the right credentials (the password from a file this time): flashed through the BMC, each GPU reset,
    #    read back and recorded per bus id
    secret = tmp_path / "bmc-password"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    r = run_cli("apply", site.path, "--auto-approve", env={**creds, "SOVKIT_BMC_PASSWORD_FILE": str(secret)})
    assert r.code == 0, r.text
    after = _on_devices(root)
    assert set(after) == set(before) and set(after.values()) == {"96.00.99.00.01"}
    state = State.model_validate_json((site.root / ".sovkit" / "state.json").read_bytes())
    assert {b: d.firmware for b, d in state.hosts["h1"].firmware[H100].devices.items()} == after
    assert PASSWORD not in r.text
    assert _files_holding(site.root, PASSWORD.encode()) == []  # state, attestations, runs: no password

