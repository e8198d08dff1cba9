"""The host lab: 3 network-namespace hosts, each with its own sshd, reached by real ansible-runner over SSH."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import ansible_runner
import pytest
import yaml

from sovkit.simulator import install_simulator
from tests.hostlab import HostLab, create_lab, unavailable_reason

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.netns]

PLAYBOOK = """\
- hosts: lab
  gather_facts: false
  tasks:
    - name: record who answered
      ansible.builtin.shell: |
        mkdir -p "{{ host_root }}/etc"
        {
          echo "{{ inventory_hostname }}"
          echo "$SSH_CONNECTION"
          readlink /proc/self/ns/net
        } > "{{ host_root }}/etc/hostlab-id"
    - name: query the simulated NPU through the vendor tool on the host
      ansible.builtin.command:
        argv: ["{{ host_root }}/bin/rbln-smi", "-q", "-qd", "npu,fw_ver"]
      register: npu
    - name: keep what the device reported
      ansible.builtin.copy:
        content: "{{ npu.stdout }}"
        dest: "{{ host_root }}/etc/npu.txt"
"""


def run_playbook(lab: HostLab, workdir: Path, inventory: dict[str, Any] | None = None,
                 envvars: dict[str, str] | None = None) -> Any:
    """Run PLAYBOOK over a generated inventory (default: the lab's own) with ansible-runner; return the runner."""
    (workdir / "project").mkdir(parents=True)
    (workdir / "inventory").mkdir()
    inv = lab.ansible_inventory() if inventory is None else inventory
    (workdir / "inventory" / "hosts.yml").write_text(yaml.safe_dump(inv), encoding="utf-8")
    (workdir / "project" / "site.yml").write_text(PLAYBOOK, encoding="utf-8")
    return ansible_runner.run(private_data_dir=str(workdir), playbook="site.yml", quiet=True, timeout=300,
                              envvars=envvars or {})


def prepare_hosts(lab: HostLab) -> dict[str, str]:
    """Give every host its own simulated NPU (distinct firmware) and no id file; return name -> firmware."""
    firmware = {}
    for h in lab.hosts:
        firmware[h.name] = f"1.0.{h.index}"
        install_simulator(h.root, [("rebellions-atom", firmware[h.name])])
        (h.root / "etc" / "hostlab-id").unlink(missing_ok=True)
        (h.root / "etc" / "npu.txt").unlink(missing_ok=True)
    return firmware


def assert_host_ran(lab: HostLab, name: str, firmware: str) -> str:
    h = lab.host(name)
    who, ssh_connection, netns = (h.root / "etc" / "hostlab-id").read_text().splitlines()
    assert who == name
    client, _, server, port = ssh_connection.split()
    assert (client, server, port) == (lab.gateway, h.address, "22")  # came in through this host's own sshd
    # rbln-smi query mode: a header line, then "npu, fw_ver" per device
    assert (h.root / "etc" / "npu.txt").read_text().splitlines() == ["npu, fw_ver", f"0, {firmware}"]
    return netns


def test_ansible_runner_reaches_every_host_over_ssh(lab: HostLab, tmp_path: Path) -> None:
    firmware = prepare_hosts(lab)
    runner = run_playbook(lab, tmp_path / "run")
    assert runner.status == "successful", runner.stdout.read()
    names = [h.name for h in lab.hosts]
    assert sorted(runner.stats["ok"]) == names
    assert not runner.stats["dark"] and not runner.stats["failures"]
    netns = [assert_host_ran(lab, n, firmware[n]) for n in names]
    assert len(set(netns)) == len(names)  # each task ran in a different network namespace
    ids = [(h.root / "etc" / "hostlab-id").read_bytes() for h in lab.hosts]
    assert len(set(ids)) == len(ids)
    # a host's root holds what was put there, not Ansible's scratch files
    assert {p.name for p in lab.host("h1").root.iterdir()} == {"bin", "etc", "proc", "sys", "usr", "var"}


def test_host_with_link_down_is_dark_and_others_complete(lab_links_up: HostLab, tmp_path: Path) -> None:
    lab = lab_links_up
    firmware = prepare_hosts(lab)
    lab.link_down("h2")
    assert not lab.link_is_up("h2")
    runner = run_playbook(lab, tmp_path / "down")
    assert runner.status == "failed"
    assert set(runner.stats["dark"]) == {"h2"}
    assert {"h1", "h3"} <= set(runner.stats["ok"])
    assert not runner.stats["failures"]
    assert_host_ran(lab, "h1", firmware["h1"])
    assert_host_ran(lab, "h3", firmware["h3"])
    assert not (lab.host("h2").root / "etc" / "hostlab-id").exists()

    lab.link_up("h2")  # the cable is back: the same host is reachable again
    again = run_playbook(lab, tmp_path / "up")
    assert again.status == "successful", again.stdout.read()
    assert_host_ran(lab, "h2", firmware["h2"])


def test_connection_settings_from_environment(lab: HostLab, tmp_path: Path) -> None:
    """An inventory that only names hosts and addresses (as sovkit generates it) plus lab.ansible_env() works."""
    firmware = prepare_hosts(lab)
    entries = lab.site_hosts(rack="r1", cpu="test-cpu")
    assert [e["root"] for e in entries] == [str(h.root) for h in lab.hosts]
    inventory = {"all": {"children": {"lab": {"hosts": {
        e["name"]: {"ansible_host": e["address"], "host_root": e["root"]} for e in entries
    }}}}}
    runner = run_playbook(lab, tmp_path / "env", inventory=inventory, envvars=lab.ansible_env())
    assert runner.status == "successful", runner.stdout.read()
    for h in lab.hosts:
        assert_host_ran(lab, h.name, firmware[h.name])


def test_host_keys_are_checked(lab: HostLab, tmp_path: Path) -> None:
    """The generated known_hosts is really used: a wrong host key is refused."""
    assert lab.ssh("h1", "true").returncode == 0
    wrong = tmp_path / "known_hosts"
    h1, h2 = lab.host("h1"), lab.host("h2")
    real = lab.known_hosts.read_text().splitlines()
    h2_key = next(line for line in real if line.startswith(h2.address + " ")).split(" ", 1)[1]
    wrong.write_text(f"{h1.address} {h2_key}\n")
    opts = [o.replace(str(lab.known_hosts), str(wrong)) for o in lab.ssh_options()]
    proc = subprocess.run(
        ["ssh", "-i", str(lab.key_path), *opts, f"root@{h1.address}", "true"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert proc.returncode == 255
    assert "host key" in proc.stderr.lower()


def test_second_lab_coexists_and_teardown_removes_exactly_its_parts(lab: HostLab, tmp_path: Path) -> None:
    assert unavailable_reason() is None
    other = create_lab(1, tmp_path / "other", register_atexit=False)
    try:
        assert other.prefix != lab.prefix
        assert other.subnet != lab.subnet
        assert other.ssh("h1", "echo $SSH_CONNECTION").stdout.split()[2] == other.host("h1").address
        pid = other.manifest()["sshd_pids"]["h1"]
    finally:
        other.destroy()
    other.destroy()  # idempotent
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    assert other.prefix not in netns and other.prefix not in links
    assert not Path(f"/proc/{pid}").exists()
    # the session lab is untouched
    assert lab.prefix in netns and lab.bridge in links
    assert lab.ssh("h3", "true").returncode == 0


def _lab_names() -> str:
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return netns + subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout


def _start_cli_lab(labdir: Path) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.hostlab", "up", "--hosts", "1", "--dir", str(labdir)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "Ctrl-C" in line:
            break
    assert proc.poll() is None, "".join(lines)
    manifest = json.loads((labdir / "lab.json").read_text())
    assert manifest["prefix"] in _lab_names()
    return proc, manifest


def test_cli_lab_torn_down_on_sigterm(tmp_path: Path) -> None:
    if unavailable_reason():
        pytest.skip(unavailable_reason() or "")
    proc, manifest = _start_cli_lab(tmp_path / "cli")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    assert manifest["prefix"] not in _lab_names()


def test_lab_left_by_killed_process_is_removed_by_down(tmp_path: Path) -> None:
    if unavailable_reason():
        pytest.skip(unavailable_reason() or "")
    proc, manifest = _start_cli_lab(tmp_path / "killed")
    proc.kill()  # SIGKILL: no cleanup ran, the namespaces and sshd are left behind
    proc.wait(timeout=30)
    assert manifest["prefix"] in _lab_names()
    sshd_pid = manifest["sshd_pids"]["h1"]
    assert Path(f"/proc/{sshd_pid}").exists()
    down = subprocess.run([sys.executable, "-m", "tests.hostlab", "down", str(tmp_path / "killed")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert down.returncode == 0, down.stderr
    assert manifest["prefix"] not in _lab_names()
    deadline = 50
    while Path(f"/proc/{sshd_pid}/status").exists() and "zombie" not in Path(f"/proc/{sshd_pid}/status").read_text():
        deadline -= 1
        assert deadline, "sshd survived `down`"
        time.sleep(0.1)


def test_systemd_host_runs_sshd_as_its_unit_loads_only_lab_units_and_dies_with_the_lab(tmp_path: Path) -> None:
    """init="systemd": a real systemd is the host's PID 1 and its sshd a unit of it; it loads no unit of the OS
    (whose sysinit would run systemd-tmpfiles and wipe the shared /tmp), and teardown kills it and its
    namespace. Canaries in /tmp and in the lab directory prove that nothing outside the host was cleaned."""
    canaries = [Path("/tmp") / f"sovkit-hostlab-canary-{tmp_path.name}", tmp_path / "canary"]
    for c in canaries:
        c.write_text("still here\n")
    lab = create_lab(1, tmp_path / "lab", register_atexit=False, init="systemd")
    try:
        h = lab.host("h1")
        pid1 = lab.manifest()["systemd_pid1"]["h1"]
        assert Path(f"/proc/{pid1}/comm").read_text().strip() == "systemd"
        assert f":name=systemd:/{lab.prefix}-h1/" in Path(f"/proc/{pid1}/cgroup").read_text()  # its own cgroup
        assert lab.ssh(h, "cat /proc/1/comm").stdout.strip() == "systemd"  # the session sees it as its PID 1
        assert lab.ssh(h, "systemctl is-system-running").stdout.strip() == "running"
        assert "/sovkit-lab-sshd.service" in lab.ssh(h, "cat /proc/self/cgroup").stdout  # sshd is its unit
        files = lab.ssh(h, "systemctl list-unit-files --no-legend --no-pager").stdout
        assert {line.split()[0] for line in files.splitlines()} == {
            p.name for p in (h.systemd_dir / "units").iterdir()}  # the lab's units and nothing of the OS
        loaded = lab.ssh(h, "systemctl list-units --all --no-legend --no-pager --plain").stdout
        assert "tmpfiles" not in loaded and "journald" not in loaded, loaded
        # what a unit file written under the host's root is: a unit of this host's systemd
        (h.root / "etc/systemd/system/lab-probe.service").write_text(
            "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n")
        assert lab.ssh(h, "systemctl start lab-probe.service && systemctl is-active lab-probe.service"
                       ).stdout.strip() == "active"
        cgroups = lab.manifest()["cgroups"]
        assert cgroups and all(Path(c).is_dir() for c in cgroups)
    finally:
        lab.destroy()
    assert all(c.read_text() == "still here\n" for c in canaries)
    canaries[0].unlink()
    assert not Path(f"/proc/{pid1}").exists()
    assert not any(Path(c).exists() for c in cgroups)
    assert lab.prefix not in _lab_names()
