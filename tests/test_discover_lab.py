"""`sovkit init --discover` over SSH against the lab's hosts (network namespaces, real sshd), then a refresh of
the written inventory over the same connection finds a card gone and stops with an error naming the host."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_cli
from tests.hostfiles import ATOM_MAX, NEOVERSE_V2, RNGD, arm_cpuinfo, remove_card, write_host, x86_cpuinfo
from tests.hostlab import SSH_PORT, HostLab
from tests.test_discover import _fill_todos

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.timeout(1200)]


def test_discover_over_ssh_then_refresh_finds_a_missing_card(lab: HostLab, tmp_path: Path) -> None:
    roots = tmp_path / "hosts"
    a, b = lab.hosts[0], lab.hosts[1]
    write_host(roots / a.name, arm_cpuinfo([NEOVERSE_V2]), [ATOM_MAX, ATOM_MAX])
    write_host(roots / b.name, x86_cpuinfo(), [RNGD])
    out = tmp_path / "site"
    (out / "ssh").mkdir(parents=True)
    shutil.copy(lab.key_path, out / "ssh" / "id_ed25519")
    (out / "ssh" / "id_ed25519").chmod(0o600)
    r = run_cli("init", out, "--discover", f"{a.name}={a.address}", "--discover", f"{b.name}={b.address}",
                "--user", "root", "--port", str(SSH_PORT), "--key", out / "ssh" / "id_ed25519",
                "--python", sys.executable, "--root", roots, "--name", "lab-site", "--country", "KR")
    assert r.code == 0, r.text
    data = yaml.safe_load((out / "site.yaml").read_text())
    hosts = {h["name"]: h for h in data["hosts"]}
    assert hosts[a.name]["address"] == a.address and hosts[a.name]["ssh"] == {"key": "ssh/id_ed25519"}
    assert (hosts[a.name]["cpu"], hosts[a.name]["accelerators"]) == (
        "arm-neoverse-v2", [{"kind": "rebellions-atom-max", "count": 2}])
    assert (hosts[b.name]["arch"], hosts[b.name]["accelerators"]) == (
        "x86_64", [{"kind": "furiosa-rngd", "count": 1}])
    assert (out / ".sovkit" / "known_hosts").read_text().count("ssh-") >= 2  # host keys kept (trust on first use)

    _fill_todos(out / "site.yaml", out / "artifacts")
    data = yaml.safe_load((out / "site.yaml").read_text())
    for h in data["hosts"]:
        h["service_manager"] = "supervisor"  # lab hosts are network namespaces: no systemd inside
    (out / "site.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    assert run_cli("validate", out / "site.yaml").code == 0
    ok = run_cli("plan", out / "site.yaml", "--refresh")
    assert ok.code == 0, ok.text

    remove_card(roots / a.name, "0000:01:00.0")
    bad = run_cli("plan", out / "site.yaml", "--refresh")
    assert bad.code == 1, bad.text
    assert f"hardware on 1 host ({a.name}) differs from the inventory" in bad.err
    assert f"{a.name}: accelerators rebellions-atom-max: inventory says 2, found 1 (at 0000:02:00)" in bad.err
