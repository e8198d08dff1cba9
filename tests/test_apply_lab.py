"""End-to-end over SSH: plan/apply/refresh against real test hosts (network namespaces, own sshd each).

Every host is a lab host (tests/hostlab.py) reached over SSH through
ansible-runner; NPUs are the simulator behind the vendor profile. The CLI is the
real one: the saved plan's apply and the corrupt-firmware apply run as `python -m sovkit ...`; the other
commands go through the same ``main()`` and error boundary in-process (``cli``, ``cli_env``), which saves an
interpreter start and sovkit's imports per command (about 2.5 s each) while Ansible still runs for real over
SSH. A test that must act at an exact moment of a run (the pulled cable) does so through the CLI's own progress
hook.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from sovkit.simulator import read_devices
from sovkit.state.models import State
from tests.conftest import CliResult, run_cli
from tests.hostlab import HostLab
from tests.sitefactory import Site, make_lab_site
from tests.test_serving_apply import DEMO_CONFIG, _model_files

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.timeout(2400)]

HOSTS = ("h1", "h2", "h3")
COMPONENTS = {"firmware": "rebellions-atom-max", "runtime": "simnpu-serve", "model": "demo-ko-chat"}
SERVING = {"h1": ("chat-prefill", "chat-router"), "h2": ("chat-decode",), "h3": ("chat-decode",)}


def _state(site: Site) -> State:
    return State.model_validate_json((site.root / ".sovkit" / "state.json").read_bytes())


def _firmware(root: Path) -> list[str]:
    return [d["firmware"] for d in read_devices(root)]


def _changes(result: CliResult) -> set[tuple[str, str, str, str]]:
    doc = json.loads(result.out)
    return {(c["host"], c["action"], c["component"], c["name"]) for c in doc["plan"]["changes"]}


def _all(action: str, hosts: tuple[str, ...] = HOSTS, components: tuple[str, ...] = (
        "firmware", "runtime", "model", "serving")) -> set[tuple[str, str, str, str]]:
    out = set()
    for h in hosts:
        for comp in components:
            for name in (SERVING[h] if comp == "serving" else (COMPONENTS[comp],)):
                out.add((h, action, comp, name))
    return out


def _accepted_logins(lab: HostLab) -> dict[str, int]:
    return {h.name: h.sshd_log.read_text(errors="replace").count("Accepted publickey for root")
            for h in lab.hosts}


def _installed(site: Site, host: str) -> dict[str, Any]:
    """What is really on a host's root, per component (independent of sovkit's state)."""
    root = site.host_root(host)
    current = root / "opt/sovkit/models/demo-ko-chat/current"
    return {
        "firmware": set(_firmware(root)),
        "runtime": (root / "opt/sovkit/runtimes/simnpu-serve/1.0.0/simnpu_serve/__init__.py").is_file(),
        "model": os.readlink(current).rsplit("/", 1)[-1] if current.is_symlink() else None,
        "serving": all((root / f"etc/sovkit/serving/{name}.json").is_file() for name in SERVING[host]),
    }


@pytest.fixture
def lab_site(lab: HostLab, tmp_path: Path) -> tuple[Site, dict[str, str]]:
    site = make_lab_site(tmp_path, lab)
    return site, {"SOVKIT_SIGNING_KEY": str(site.root / ".sovkit" / "keys" / "operator.key")}


def test_apply_over_ssh_update_drift_and_converge(lab: HostLab, lab_site: tuple[Site, dict[str, str]],
                                                 tmp_path: Path, cli_env: Callable[..., CliResult]) -> None:
    site, env = lab_site
    run = cli_env
    logins_before = _accepted_logins(lab)

    # 1. a saved, signed plan for three fresh hosts, applied over SSH
    plan_file = tmp_path / "first.plan"
    made = run("plan", site.path, "-o", plan_file, "--detailed-exitcode", env=env)
    assert made.code == 2, made.text
    assert "Plan: 13 to create, 0 to update, 0 to delete." in made.out
    applied = run_cli("apply", plan_file, env=env)  # the real `python -m sovkit`
    assert applied.code == 0, applied.text
    assert "13 component(s) recorded across 3 host(s)" in applied.out
    logins = _accepted_logins(lab)
    assert all(logins[h] > logins_before[h] for h in HOSTS), (logins_before, logins)  # each host's own sshd
    loader = type("UnsafeLoader", (yaml.SafeLoader,), {})
    loader.add_constructor("!unsafe", lambda ld, node: ld.construct_scalar(node))
    inventory = yaml.load(next((site.root / ".sovkit" / "runs").glob("apply-*/inventory/hosts.yml")).read_text(),
                          Loader=loader)
    for h in lab.hosts:
        conn = inventory["all"]["hosts"][h.name]
        assert (conn["ansible_host"], conn.get("ansible_connection", "ssh")) == (h.address, "ssh")
        assert "StrictHostKeyChecking=yes" in conn["ansible_ssh_common_args"]
    for host in HOSTS:
        assert _installed(site, host) == {"firmware": {"1.2.0"}, "runtime": True, "model": "1.0", "serving": True}
        spec = json.loads((site.host_root(host) / f"etc/sovkit/serving/{SERVING[host][0]}.json").read_text())
        kv = json.loads(spec["argv"][spec["argv"].index("--kv-transfer-config") + 1])
        assert kv["kv_role"] == ("kv_producer" if host == "h1" else "kv_consumer")
    state = _state(site)
    assert set(state.hosts) == set(HOSTS)
    assert all(state.hosts[h].firmware["rebellions-atom-max"].version == "1.2.0" for h in HOSTS)
    assert run("plan", site.path, "--detailed-exitcode").code == 0

    # 2. firmware bump and a new model version: the plan shows exactly those updates, and apply does them
    for h in site.data["hosts"]:
        h["accelerators"][0]["firmware"] = "atom-max-fw-1.3.0"
    site.bump_model("demo-ko-chat", "1.1", _model_files(DEMO_CONFIG))
    site.save()
    planned = run("plan", site.path, "--json", "--detailed-exitcode")
    assert planned.code == 2, planned.text
    assert _changes(planned) == _all("update", components=("firmware", "model", "serving"))
    reasons = {(c["host"], c["component"]): c["reason"] for c in json.loads(planned.out)["plan"]["changes"]}
    assert all(reasons[(h, "firmware")] == "upgrade 1.2.0 → 1.3.0" for h in HOSTS)
    assert all(reasons[(h, "model")].startswith("1.0 → 1.1") for h in HOSTS)
    applied = run("apply", site.path, "--auto-approve")
    assert applied.code == 0, applied.text
    assert "10 component(s) recorded across 3 host(s)" in applied.out
    for host in HOSTS:
        assert _installed(site, host) == {"firmware": {"1.3.0"}, "runtime": True, "model": "1.1", "serving": True}
        models = site.host_root(host) / "opt/sovkit/models/demo-ko-chat"
        assert os.readlink(models / "previous").endswith("/1.0")
    assert run("plan", site.path, "--detailed-exitcode").code == 0

    # 3. someone edits a model file on h2: plan --refresh reads the hosts back and names host and file
    tampered = site.host_root("h2") / "opt/sovkit/models/demo-ko-chat/current/tokenizer.json"
    tampered.write_bytes(b'{"vocab": "edited by hand"}\n')
    assert run("plan", site.path, "--detailed-exitcode").code == 0, "recorded state alone cannot see drift"
    serial = _state(site).serial
    refreshed = run("plan", site.path, "--refresh", "--json", "--detailed-exitcode")
    assert refreshed.code == 2, refreshed.text
    doc = json.loads(refreshed.out)
    drift = [(c["host"], c["component"], c["name"], c["reason"]) for c in doc["drift"]["changes"]]
    assert drift == [("h2", "model", "demo-ko-chat", "file digests differ from the recorded ones: tokenizer.json")]
    assert _changes(refreshed) == {("h2", "update", "model", "demo-ko-chat")}
    assert doc["plan"]["changes"][0]["reason"] == "file digests differ on host (drift): tokenizer.json"
    human = run("plan", site.path, "--refresh")
    assert re.search(r"Drift \(hosts differ from the recorded state\):\n  h2\n    ~ model demo-ko-chat: "
                     r"file digests differ from the recorded ones: tokenizer\.json\n", human.out), human.out
    assert _state(site).serial == serial, "plan --refresh must not write state"

    # 4. apply --refresh repairs exactly that file's model on h2, and everything converges
    repaired = run("apply", site.path, "--refresh", "--auto-approve")
    assert repaired.code == 0, repaired.text
    assert "1 component(s) recorded across 1 host(s)" in repaired.out
    assert tampered.read_bytes() == (site.store / "models/demo-ko-chat/1.1/tokenizer.json").read_bytes()
    assert _state(site).hosts["h2"].models["demo-ko-chat"].previous == "1.0", "rollback target must survive"
    final = run("plan", site.path, "--refresh", "--detailed-exitcode")
    assert final.code == 0, final.text
    assert "no drift" in final.out


def test_host_lost_mid_apply_others_complete_and_next_apply_does_the_rest(
        lab_links_up: HostLab, lab_site: tuple[Site, dict[str, str]],
        cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch) -> None:
    lab, (site, _) = lab_links_up, lab_site
    from sovkit.cli import plan_cmds
    from sovkit.provision.executor import ExecEvent

    progress = plan_cmds.Progress.__call__
    pulled: list[str] = []

    def pull_cable_when_h3_starts_its_runtime(self: Any, event: ExecEvent) -> None:
        if event.kind == "task" and event.host == "h3" and event.task.startswith("runtime") and not pulled:
            lab.link_down("h3")
            pulled.append(event.task)
        progress(self, event)

    monkeypatch.setattr(plan_cmds.Progress, "__call__", pull_cable_when_h3_starts_its_runtime)
    r = cli("apply", site.path, "--auto-approve")
    assert pulled, "h3 never started its runtime role"
    assert r.code == 1, r.text
    assert re.search(r"✗ h3 failed at runtime \| [^:]+: unreachable", r.err), r.err
    assert "h1 failed" not in r.err and "h2 failed" not in r.err
    assert "apply finished with 1 failed host(s)" in r.err
    assert "Traceback" not in r.text

    # the others completed; the state records exactly what completed (and matches what is on the hosts)
    state = _state(site)
    for host in ("h1", "h2"):
        rec = state.hosts[host]
        assert (set(rec.firmware), set(rec.runtimes), set(rec.models), set(rec.serving)) == (
            {"rebellions-atom-max"}, {"simnpu-serve"}, {"demo-ko-chat"}, set(SERVING[host]))
        assert _installed(site, host) == {"firmware": {"1.2.0"}, "runtime": True, "model": "1.0", "serving": True}
    h3 = state.hosts["h3"]
    assert set(h3.firmware) == {"rebellions-atom-max"} and h3.firmware["rebellions-atom-max"].version == "1.2.0"
    assert not h3.runtimes and not h3.models and not h3.serving
    assert _installed(site, "h3") == {"firmware": {"1.2.0"}, "runtime": False, "model": None, "serving": False}

    # the cable is back: the next apply does only the rest, on h3 only
    lab.link_up("h3")
    monkeypatch.setattr(plan_cmds.Progress, "__call__", progress)
    rest = cli("plan", site.path, "--json", "--detailed-exitcode")
    assert rest.code == 2, rest.text
    assert _changes(rest) == _all("create", hosts=("h3",), components=("runtime", "model", "serving"))
    done = cli("apply", site.path, "--auto-approve")
    assert done.code == 0, done.text
    assert "3 component(s) recorded across 1 host(s)" in done.out
    assert "✓ h3: runtime simnpu-serve" in done.out and "✓ h1" not in done.out and "✓ h2" not in done.out
    assert _installed(site, "h3") == {"firmware": {"1.2.0"}, "runtime": True, "model": "1.0", "serving": True}
    assert cli("plan", site.path, "--detailed-exitcode").code == 0


def test_corrupt_firmware_over_ssh_fails_that_host_before_anything_is_activated(
        lab_site: tuple[Site, dict[str, str]]) -> None:
    from tests.sitefactory import corrupt_image

    site, _ = lab_site
    site.add_firmware("atom-max-fw-1.2.1", "1.2.1", image=corrupt_image("1.2.1"))
    site.host("h2")["accelerators"][0]["firmware"] = "atom-max-fw-1.2.1"
    site.save()
    r = run_cli("apply", site.path, "--auto-approve")
    assert r.code == 1, r.text
    assert re.search(r"✗ h2 failed at firmware \| update per device: rbln-flash .*(payload|digest|sha256)",
                     r.err), r.err
    assert _installed(site, "h2") == {"firmware": {"1.0.0"}, "runtime": False, "model": None, "serving": False}
    for host in ("h1", "h3"):
        assert _installed(site, host) == {"firmware": {"1.2.0"}, "runtime": True, "model": "1.0", "serving": True}
    state = _state(site)
    assert "h2" not in state.hosts or not (state.hosts["h2"].firmware or state.hosts["h2"].models)
