"""Serving over SSH on real test hosts (network namespaces, own sshd each): a prefill host, a decode host and a
router host. Every hop is HTTP between processes in different network namespaces.

apply → a request answered through the router; a decode that fails readiness → the pair rolled back to the
previous version, attested; `kill -9` of the decode → `plan --refresh` shows drift, apply restarts it.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_cli
from tests.hostlab import HostLab
from tests.servingkit import running
from tests.sitefactory import Site, make_lab_site
from tests.test_serving_apply import DEMO_CONFIG, _model_files, _state
from tests.test_serving_apply import _provision_predicates as _provision

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.timeout(1800)]


def _netns_of(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/net")


def test_prefill_decode_router_over_ssh_answer_roll_back_and_restart(lab: HostLab, tmp_path: Path) -> None:
    site = make_lab_site(tmp_path, lab)
    site.data["deployments"][1]["hosts"] = ["h2"]          # prefill h1, decode h2,
    site.data["serving_groups"][0]["router"]["host"] = "h3"  # and the router on h3
    site.save()
    env = {"SOVKIT_SIGNING_KEY": str(site.root / ".sovkit" / "keys" / "operator.key")}

    # 1. apply: three processes on three hosts, checked on the hosts, and a request through the router
    r = run_cli("apply", site.path, "--auto-approve", env=env)
    assert r.code == 0, r.text
    procs = running(tmp_path)
    assert set(procs) == {"sovkit-chat-prefill", "sovkit-chat-decode", "sovkit-chat-router"}
    spaces = {name: _netns_of(pid) for name, pid in procs.items()}
    assert len(set(spaces.values())) == 3 and _netns_of(os.getpid()) not in spaces.values()  # one host each
    state = _state(site)
    assert state.hosts["h3"].serving["chat-router"].endpoint == f"http://{lab.host('h3').address}:" \
        f"{site.data['serving_groups'][0]['router']['port']}"
    assert {(h, n, s.status) for h, rec in state.hosts.items() for n, s in rec.serving.items()} == {
        ("h1", "chat-prefill", "ready"), ("h2", "chat-decode", "ready"), ("h3", "chat-router", "ready")}
    answer = run_cli("serving", "request", site.path, "--json", env=env)
    assert answer.code == 0, answer.text
    assert "demo-ko-chat version 1.0" in json.loads(answer.out)["text"]

    # 2. model 2.0 caps the context at 2048; the decode asks for 4096 and fails readiness: the pair goes back
    site.bump_model("demo-ko-chat", "2.0", _model_files({**DEMO_CONFIG, "max_position_embeddings": 2048}))
    site.data["deployments"][0]["max_model_len"] = 2048
    site.save()
    r = run_cli("apply", site.path, "--auto-approve", env=env)
    assert r.code == 1, r.text
    assert "group chat: chat-decode on h2" in r.text
    assert "rolled back to the previous config and model, which answers" in r.text
    state = _state(site)
    for host in ("h1", "h2"):
        assert state.hosts[host].models["demo-ko-chat"].version == "1.0"
        assert os.readlink(site.host_root(host) / "opt/sovkit/models/demo-ko-chat/current").endswith("/1.0")
    assert state.hosts["h2"].serving["chat-decode"].status == "rolled-back"
    checks = {(c["host"], c["name"], c["phase"], c["ready"]) for p in _provision(site)[-3:]
              for c in p["serving_checks"]}
    assert {("h2", "chat-decode", "apply", False), ("h2", "chat-decode", "rollback", True),
            ("h1", "chat-prefill", "rollback", True)} <= checks
    answer = run_cli("serving", "request", site.path, "--json", env=env)
    assert answer.code == 0 and "version 1.0" in json.loads(answer.out)["text"], answer.text
    verified = run_cli("attest", "verify", site.path, "--key", f"{env['SOVKIT_SIGNING_KEY']}.pub", env=env)
    assert verified.code == 0, verified.text  # the rollback's attestation matches what the hosts now run

    # 3. kill -9 the decode: drift; apply restarts it
    pid = running(tmp_path)["sovkit-chat-decode"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while "sovkit-chat-decode" in running(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.1)
    planned = run_cli("plan", site.path, "--refresh", "--json", env=env)
    assert planned.code == 0, planned.text
    drift = json.loads(planned.out)["drift"]["changes"]
    assert [(c["host"], c["component"], c["name"]) for c in drift] == [("h2", "serving", "chat-decode")], drift
    assert "service is stopped" in drift[0]["reason"]
    # put the inventory back on 1.0 first, so that this apply only restarts what was killed
    site.data["models"] = [m for m in site.data["models"] if m["name"] != "demo-ko-chat"] + [
        _model_v1(site)]
    site.data["deployments"][0].pop("max_model_len")
    site.save()
    r = run_cli("apply", site.path, "--auto-approve", "--refresh", env=env)
    assert r.code == 0, r.text
    assert running(tmp_path)["sovkit-chat-decode"] != pid
    answer = run_cli("serving", "request", site.path, "--json", env=env)
    assert answer.code == 0 and "version 1.0" in json.loads(answer.out)["text"], answer.text


def _model_v1(site: Site) -> dict[str, Any]:
    """The demo model 1.0 entry as the shipped demo inventory has it (its files are still in the store)."""
    import yaml

    from tests.conftest import INVENTORIES

    shipped = yaml.safe_load((INVENTORIES / "demo" / "site.yaml").read_text())
    return next(m for m in shipped["models"] if m["name"] == "demo-ko-chat")
