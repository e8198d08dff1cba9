"""Serving on systemd hosts, against a real systemd: two lab hosts (network namespaces, own sshd each) whose PID 1
is Debian's systemd (tests/hostlab.py, ``init="systemd"``), configured by real Ansible through `sovkit apply`.

The site is the demo's serving group with ``service_manager: systemd``: prefill on h1, decode on h2, the router
on h1. What is proved, with `systemctl` asked over SSH on the hosts:

1. apply installs each unit where sovkit says (``{root}/etc/systemd/system/sovkit-NAME.service``), enables it
   and systemd runs it (active, in the unit's own cgroup, no supervisor pidfile); a completion is answered
   through the router and `sovkit serving status` reports every endpoint healthy;
2. `kill -9` of a server's main process: systemd itself restarts it (the generated unit's
   ``Restart=on-failure``), so `plan --refresh` shows no drift once it answers again;
3. a service stopped outside sovkit (`systemctl stop`): `plan --refresh` reports it stopped, and apply restarts
   it through systemd;
4. a new model version whose decode fails readiness: the pair is rolled back to the previous version — the
   unit file restored, systemd reloaded and restarted on it — and answers again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.hostlab import HostLab, create_lab, unavailable_reason
from tests.servingkit import pidfiles
from tests.sitefactory import Site, make_lab_site
from tests.test_serving_apply import DEMO_CONFIG, _model_files, _state
from tests.test_serving_apply import _provision_predicates as _provision

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.timeout(1800)]

SERVICES = {"h1": ("chat-prefill", "chat-router"), "h2": ("chat-decode",)}


@pytest.fixture
def sdlab(tmp_path: Path) -> Iterator[Callable[[int], HostLab]]:
    """Builds labs whose hosts each have a real systemd as PID 1 running their sshd; every lab is torn down (its
    systemds killed, PID 1 first) however the test ends. One lab per test: the hosts' roots are the lab's."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    built: list[HostLab] = []

    def build(n_hosts: int) -> HostLab:
        built.append(create_lab(n_hosts, tmp_path / f"sdlab{len(built)}", init="systemd"))
        return built[-1]

    try:
        yield build
    finally:
        for lab in built:
            lab.destroy()


def _systemctl(lab: HostLab, host: str, *args: str) -> str:
    r = lab.ssh(host, "systemctl " + " ".join(args))
    return r.stdout.strip()


def _show(lab: HostLab, host: str, service: str, *props: str) -> dict[str, str]:
    out = _systemctl(lab, host, "show", f"sovkit-{service}.service", *(f"-p {p}" for p in props))
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _supervised(lab: HostLab, site: Site, host: str) -> set[str]:
    """Services sovkit's supervisor runs on ``host``: its pidfile's pid alive *in the host's PID namespace*
    (a systemd host's processes have other pids there than here, so tests.servingkit.running cannot tell)."""
    out = set()
    for f in pidfiles(site.host_root(host)):
        rec = json.loads(f.read_text())
        stat = lab.ssh(host, f"cat /proc/{int(rec['pid'])}/stat").stdout
        if stat and int(stat.rsplit(")", 1)[1].split()[19]) == rec["start_time"]:
            out.add(f.stem)
    return out


def _wait_answer(site: Site, env: dict[str, str], version: str, deadline_s: float = 60) -> str:
    """The router's answer once it answers with ``version`` (a restarted server needs a moment to be ready)."""
    deadline = time.monotonic() + deadline_s
    while True:
        answer = run_cli("serving", "request", site.path, "--json", env=env)
        if answer.code == 0 and f"version {version}" in json.loads(answer.out)["text"]:
            return str(json.loads(answer.out)["text"])
        assert time.monotonic() < deadline, answer.text
        time.sleep(0.5)


def test_serving_under_real_systemd_start_restart_drift_and_rollback(sdlab: Callable[[int], HostLab],
                                                                     tmp_path: Path) -> None:
    lab = sdlab(2)
    site = make_lab_site(tmp_path, lab, roots=lab.labdir / "hosts")  # the roots the hosts' systemd reads
    for h in site.data["hosts"]:
        h["service_manager"] = "systemd"
    assert site.data["deployments"][0]["hosts"] == ["h1"] and site.data["deployments"][1]["hosts"] == ["h2"]
    site.save()
    env = {"SOVKIT_SIGNING_KEY": str(site.root / ".sovkit" / "keys" / "operator.key")}

    # 1. apply: units installed where sovkit says, enabled, run by systemd; answered; status healthy
    r = run_cli("apply", site.path, "--auto-approve", env=env)
    assert r.code == 0, r.text
    for host, names in SERVICES.items():
        root = site.host_root(host)
        for name in names:
            unit = root / "etc" / "systemd" / "system" / f"sovkit-{name}.service"
            assert unit.is_file(), unit
            assert _systemctl(lab, host, "is-active", f"sovkit-{name}.service") == "active"
            assert _systemctl(lab, host, "is-enabled", f"sovkit-{name}.service") == "enabled"
            assert (root / "etc/systemd/system/multi-user.target.wants" / unit.name).resolve() == \
                Path("/etc/systemd/system") / unit.name  # enable's link, as the host sees its own /etc
            shown = _show(lab, host, name, "FragmentPath", "MainPID", "ControlGroup")
            assert shown["FragmentPath"] == f"/etc/systemd/system/{unit.name}"
            # what systemd loaded is the file sovkit wrote (the host's /etc/systemd/system is its root's)
            assert lab.ssh(host, f"cat {shown['FragmentPath']}").stdout == unit.read_text()
            cgroup = lab.ssh(host, f"cat /proc/{shown['MainPID']}/cgroup").stdout
            assert f"/system.slice/sovkit-{name}.service" in cgroup  # systemd's process, in the unit's cgroup
    assert [pidfiles(site.host_root(h)) for h in SERVICES] == [[], []]  # nothing started by sovkit's supervisor
    state = _state(site)
    assert {(h, n, s.status) for h, rec in state.hosts.items() for n, s in rec.serving.items()} == {
        ("h1", "chat-prefill", "ready"), ("h2", "chat-decode", "ready"), ("h1", "chat-router", "ready")}
    assert "demo-ko-chat version 1.0" in _wait_answer(site, env, "1.0", 5)
    status = run_cli("serving", "status", site.path, "--json", env=env)
    assert status.code == 0, status.text
    rows = json.loads(status.out)
    assert {(e["host"], e["name"], e["healthy"]) for e in rows} == {
        ("h1", "chat-prefill", True), ("h2", "chat-decode", True), ("h1", "chat-router", True)}, rows

    # 2. kill -9 the decode's main process: the unit's Restart=on-failure has systemd start it again
    before = _show(lab, "h2", "chat-decode", "MainPID", "NRestarts")
    assert before["NRestarts"] == "0"
    assert lab.ssh("h2", f"kill -9 {before['MainPID']}").returncode == 0
    deadline = time.monotonic() + 30
    while True:
        after = _show(lab, "h2", "chat-decode", "MainPID", "NRestarts", "ActiveState")
        restarted = after["MainPID"] not in ("0", before["MainPID"])
        if after["NRestarts"] == "1" and after["ActiveState"] == "active" and restarted:
            break
        assert time.monotonic() < deadline, after
        time.sleep(0.2)
    _wait_answer(site, env, "1.0")
    planned = run_cli("plan", site.path, "--refresh", "--json", env=env)
    assert planned.code == 0, planned.text
    assert json.loads(planned.out)["drift"]["changes"] == []  # systemd repaired it: nothing for sovkit to do

    # 3. stopped outside sovkit (systemd will not restart that): drift, and apply starts it through systemd
    assert lab.ssh("h2", "systemctl stop sovkit-chat-decode.service").returncode == 0
    assert _systemctl(lab, "h2", "is-active", "sovkit-chat-decode.service") == "inactive"
    planned = run_cli("plan", site.path, "--refresh", "--json", env=env)
    assert planned.code == 0, planned.text
    drift = json.loads(planned.out)["drift"]["changes"]
    assert [(c["host"], c["component"], c["name"]) for c in drift] == [("h2", "serving", "chat-decode")], drift
    assert "service is stopped" in drift[0]["reason"]
    r = run_cli("apply", site.path, "--auto-approve", "--refresh", env=env)
    assert r.code == 0, r.text
    assert _systemctl(lab, "h2", "is-active", "sovkit-chat-decode.service") == "active"
    _wait_answer(site, env, "1.0", 5)

    # 4. model 2.0 caps the context at 2048, the decode asks for 4096 and fails readiness: back to 1.0
    unit_v1 = (site.host_root("h2") / "etc/systemd/system/sovkit-chat-decode.service").read_text()
    assert '"SOVKIT_MODEL=demo-ko-chat@1.0"' in unit_v1
    site.bump_model("demo-ko-chat", "2.0", _model_files({**DEMO_CONFIG, "max_position_embeddings": 2048}))
    site.data["deployments"][0]["max_model_len"] = 2048
    site.save()
    r = run_cli("apply", site.path, "--auto-approve", env=env)
    assert r.code == 1, r.text
    assert "group chat: chat-decode on h2" in r.text
    assert "rolled back to the previous config and model, which answers" in r.text
    assert (site.host_root("h2") / "etc/systemd/system/sovkit-chat-decode.service").read_text() == unit_v1
    shown = _show(lab, "h2", "chat-decode", "ActiveState", "Environment", "NeedDaemonReload")
    assert shown["ActiveState"] == "active" and shown["NeedDaemonReload"] == "no", shown
    assert "SOVKIT_MODEL=demo-ko-chat@1.0" in shown["Environment"]  # systemd runs the restored unit
    state = _state(site)
    for host in ("h1", "h2"):
        assert state.hosts[host].models["demo-ko-chat"].version == "1.0"
    assert state.hosts["h2"].serving["chat-decode"].status == "rolled-back"
    checks = {(c["host"], c["name"], c["phase"], c["ready"]) for p in _provision(site)[-3:]
              for c in p["serving_checks"]}
    assert {("h2", "chat-decode", "apply", False), ("h2", "chat-decode", "rollback", True),
            ("h1", "chat-prefill", "rollback", True)} <= checks
    assert "demo-ko-chat version 1.0" in _wait_answer(site, env, "1.0", 5)


def _site(tmp_path: Path, lab: HostLab, manager: str) -> tuple[Site, dict[str, str]]:
    site = make_lab_site(tmp_path, lab, roots=lab.labdir / "hosts")
    for h in site.data["hosts"]:
        h["service_manager"] = manager
    site.save()
    return site, {"SOVKIT_SIGNING_KEY": str(site.root / ".sovkit" / "keys" / "operator.key")}


def test_switching_a_host_between_supervisor_and_systemd(sdlab: Callable[[int], HostLab], tmp_path: Path) -> None:
    """An operator changes a host's service_manager: apply moves the processes to the other manager; nothing of
    the old one is left holding the port (and answering in place of the new one)."""
    lab = sdlab(1)
    site, env = _site(tmp_path, lab, "supervisor")
    names = ("chat-prefill", "chat-decode", "chat-router")
    r = run_cli("apply", site.path, "--auto-approve", env=env)
    assert r.code == 0, r.text
    assert _supervised(lab, site, "h1") == {f"sovkit-{n}" for n in names}

    # supervisor -> systemd
    site.host("h1")["service_manager"] = "systemd"
    site.save()
    r = run_cli("apply", site.path, "--auto-approve", env=env)
    assert r.code == 0, r.text
    assert _supervised(lab, site, "h1") == set()  # the supervisor's processes were stopped
    for n in names:
        assert _systemctl(lab, "h1", "is-active", f"sovkit-{n}.service") == "active", n
        assert _show(lab, "h1", n, "NRestarts")["NRestarts"] == "0", n  # never crash-looped on a taken port
    _wait_answer(site, env, "1.0", 5)
    planned = run_cli("plan", site.path, "--refresh", "--json", env=env)
    assert planned.code == 0 and json.loads(planned.out)["drift"]["changes"] == [], planned.text

    # systemd -> supervisor
    site.host("h1")["service_manager"] = "supervisor"
    site.save()
    r = run_cli("apply", site.path, "--auto-approve", env=env)
    assert r.code == 0, r.text
    assert _supervised(lab, site, "h1") == {f"sovkit-{n}" for n in names}
    for n in names:
        assert _systemctl(lab, "h1", "is-active", f"sovkit-{n}.service") != "active", n
        assert not (site.host_root("h1") / f"etc/systemd/system/sovkit-{n}.service").exists(), n
    assert not list((site.host_root("h1") / "etc/systemd/system").glob("*.wants/sovkit-*"))
    _wait_answer(site, env, "1.0", 5)
    planned = run_cli("plan", site.path, "--refresh", "--json", env=env)
    assert planned.code == 0 and json.loads(planned.out)["drift"]["changes"] == [], planned.text


def test_first_install_that_fails_its_check_is_stopped_and_disabled(sdlab: Callable[[int], HostLab],
                                                                    tmp_path: Path) -> None:
    """Nothing to roll back to: the unit's new services are stopped *and disabled*, so that a reboot does not
    start again what failed its check (the state says stopped; the next apply enables them again)."""
    lab = sdlab(1)
    site, env = _site(tmp_path, lab, "systemd")
    site.bump_model("demo-ko-chat", "2.0", _model_files({**DEMO_CONFIG, "max_position_embeddings": 2048}))
    site.save()
    r = run_cli("apply", site.path, "--auto-approve", env=env)
    assert r.code == 1, r.text
    assert "nothing to roll back to (first install): its new processes were stopped" in r.text
    for n in ("chat-prefill", "chat-decode", "chat-router"):
        assert _systemctl(lab, "h1", "is-active", f"sovkit-{n}.service") in ("inactive", "failed"), n
        assert _systemctl(lab, "h1", "is-enabled", f"sovkit-{n}.service") == "disabled", n
    assert {n: s.status for n, s in _state(site).hosts["h1"].serving.items()} == {
        "chat-prefill": "stopped", "chat-decode": "stopped", "chat-router": "stopped"}
