"""Serving that runs, on local-connection demo hosts (real Ansible, real processes, real HTTP, simulated NPUs).

apply starts the prefill and decode servers and the router, checks readiness and a smoke request, records and
attests the result; a killed server is drift that apply repairs; a deployment that fails its check is rolled
back with its pair (or stopped when it is a first install). The same over SSH is tests/test_serving_lab.py.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from sovkit.state.models import State
from tests.conftest import run_cli
from tests.servingkit import running
from tests.sitefactory import Site, make_site

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _state(site: Site) -> State:
    return State.model_validate_json((site.root / ".sovkit" / "state.json").read_bytes())


def _provision_predicates(site: Site) -> list[dict[str, Any]]:
    out = []
    for line in (site.root / ".sovkit" / "attestations" / "log.jsonl").read_text().splitlines():
        payload = json.loads(base64.b64decode(json.loads(line)["envelope"]["payload"]))
        if payload["predicateType"].endswith("/provision/v1"):
            out.append(payload["predicate"])
    return out


def _model_files(config: dict[str, Any]) -> dict[str, bytes]:
    return {"config.json": (json.dumps(config, indent=2, sort_keys=True) + "\n").encode(),
            "model.safetensors": os.urandom(4096),
            "tokenizer.json": b'{"model": {"type": "BPE", "vocab": {}}, "version": "2.0"}\n'}


DEMO_CONFIG = {"architectures": ["DemoForCausalLM"], "hidden_size": 64, "num_hidden_layers": 2,
               "num_attention_heads": 4, "vocab_size": 256, "torch_dtype": "bfloat16"}


@pytest.fixture
def served(tmp_path: Path) -> Site:
    """The demo site, applied: prefill on npu-node-1, decode on npu-node-2, the router on npu-node-1."""
    site = make_site(tmp_path)
    r = run_cli("apply", site.path, "--auto-approve")
    assert r.code == 0, r.text
    return site


def test_apply_starts_serving_checks_it_and_answers_through_the_router(served: Site) -> None:
    site = served
    state = _state(site)
    statuses = {(h, n): (s.status, s.model_version) for h, rec in state.hosts.items() for n, s in rec.serving.items()}
    assert statuses == {("npu-node-1", "chat-prefill"): ("ready", "1.0"),
                        ("npu-node-1", "chat-router"): ("ready", "1.0"),
                        ("npu-node-2", "chat-decode"): ("ready", "1.0")}
    router = state.hosts["npu-node-1"].serving["chat-router"]
    assert router.ttft_ms is not None and router.endpoint.startswith("http://127.0.0.1:")
    # three real processes, each under the supervisor
    assert set(running(site.root)) == {"sovkit-chat-prefill", "sovkit-chat-decode", "sovkit-chat-router"}

    answer = run_cli("serving", "request", site.path, "--prompt", "hello sovereign world", "--json")
    assert answer.code == 0, answer.text
    doc = json.loads(answer.out)
    assert "demo-ko-chat version 1.0" in doc["text"] and doc["ttft_ms"] > 0 and doc["chunks"] >= 1

    status = run_cli("serving", "status", site.path, "--json")
    assert status.code == 0, status.text
    rows = {r["name"]: r for r in json.loads(status.out)}
    assert {n: (r["role"], r["healthy"], r["model_version"]) for n, r in rows.items()} == {
        "chat-prefill": ("prefill", True, "1.0"), "chat-decode": ("decode", True, "1.0"),
        "chat-router": ("router", True, "1.0")}

    # the attestation of each host lists its checks (the router's with the smoke request)
    checks = [c for p in _provision_predicates(site) for c in p["serving_checks"]]
    assert {(c["host"], c["name"], c["phase"], c["ready"]) for c in checks} == {
        ("npu-node-1", "chat-prefill", "apply", True), ("npu-node-1", "chat-router", "apply", True),
        ("npu-node-2", "chat-decode", "apply", True)}
    assert next(c for c in checks if c["name"] == "chat-router")["smoke"] is True
    # the KV payloads really went prefill -> decode: the decode verified one per request (smoke + ours)
    decode = state.hosts["npu-node-2"].serving["chat-decode"].endpoint
    with urllib.request.urlopen(f"{decode}/metrics", timeout=10) as resp:
        metrics = resp.read().decode()
    verified = re.search(r"^simnpu_kv_payloads_verified_total (\d+)", metrics, re.M)
    assert verified is not None and int(verified.group(1)) >= 2, metrics

    # the audit report carries each process's status, endpoint and smoke timing
    pack = site.root / "pack"
    audited = run_cli("audit", site.path, "-o", pack)
    assert audited.code == 0, audited.text
    report = json.loads((pack / "report.json").read_text())
    rows = {s["name"]: s for h in report["installed"] for s in h["serving"]}
    assert rows["chat-router"]["status"] == "ready" and rows["chat-router"]["ttft_ms"] == router.ttft_ms
    assert "smoke request: first token in" in (pack / "report.html").read_text()

    # `serving stop` stops every process and records it; the inventory still wants them, so plan restarts them
    stopped = run_cli("serving", "stop", site.path)
    assert stopped.code == 0, stopped.text
    assert running(site.root) == {}
    assert {n: s.status for rec in _state(site).hosts.values() for n, s in rec.serving.items()} == {
        "chat-prefill": "stopped", "chat-router": "stopped", "chat-decode": "stopped"}
    replan = json.loads(run_cli("plan", site.path, "--json").out)["plan"]["changes"]
    assert {(c["name"], c["action"]) for c in replan} == {
        ("chat-prefill", "update"), ("chat-router", "update"), ("chat-decode", "update")}
    assert all(c["reason"].startswith("service is stopped: restart it") for c in replan)


def test_killed_server_is_drift_and_apply_restarts_it(served: Site) -> None:
    site = served
    pid = running(site.root)["sovkit-chat-decode"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while "sovkit-chat-decode" in running(site.root) and time.monotonic() < deadline:
        time.sleep(0.1)

    planned = run_cli("plan", site.path, "--refresh", "--json")
    assert planned.code == 0, planned.text
    doc = json.loads(planned.out)
    drift = [(c["host"], c["component"], c["name"], c["reason"]) for c in doc["drift"]["changes"]]
    assert len(drift) == 1 and drift[0][:3] == ("npu-node-2", "serving", "chat-decode"), drift
    assert "service is stopped" in drift[0][3]
    assert [(c["host"], c["action"], c["name"]) for c in doc["plan"]["changes"]] == [
        ("npu-node-2", "update", "chat-decode")]
    down = run_cli("serving", "status", site.path)
    assert down.code == 1 and "chat-decode on npu-node-2" in down.err

    r = run_cli("apply", site.path, "--auto-approve", "--refresh")
    assert r.code == 0, r.text
    assert running(site.root)["sovkit-chat-decode"] != pid
    assert _state(site).hosts["npu-node-2"].serving["chat-decode"].status == "ready"
    answer = run_cli("serving", "request", site.path, "--json")
    assert answer.code == 0 and "version 1.0" in json.loads(answer.out)["text"], answer.text


def test_decode_failing_readiness_rolls_the_pair_back_to_the_previous_version(served: Site) -> None:
    """Model 2.0 limits the context to 2048 tokens; the decode asks for 4096 and refuses to start, so the whole
    group goes back to 1.0 — prefill included, though it started fine — and both outcomes are attested."""
    site = served
    before = running(site.root)
    site.bump_model("demo-ko-chat", "2.0", _model_files({**DEMO_CONFIG, "max_position_embeddings": 2048}))
    prefill = next(d for d in site.data["deployments"] if d["name"] == "chat-prefill")
    prefill["max_model_len"] = 2048
    site.save()

    r = run_cli("apply", site.path, "--auto-approve")
    assert r.code == 1, r.text
    assert "group chat: chat-decode on npu-node-2: did not start" in r.text and "--max-model-len 4096" in r.text
    assert "rolled back to the previous config and model, which answers" in r.text

    state = _state(site)
    for host in ("npu-node-1", "npu-node-2"):
        model = state.hosts[host].models["demo-ko-chat"]
        assert (model.version, model.previous) == ("1.0", "2.0")
        current = site.host_root(host) / "opt/sovkit/models/demo-ko-chat/current"
        assert os.readlink(current).endswith("/1.0")
    assert {n: (s.status, s.model_version) for n, s in state.hosts["npu-node-1"].serving.items()} == {
        "chat-prefill": ("rolled-back", "1.0"), "chat-router": ("rolled-back", "1.0")}
    assert (state.hosts["npu-node-2"].serving["chat-decode"].status,
            state.hosts["npu-node-2"].serving["chat-decode"].model_version) == ("rolled-back", "1.0")
    assert running(site.root).keys() == before.keys()
    answer = run_cli("serving", "request", site.path, "--json")
    assert answer.code == 0 and "version 1.0" in json.loads(answer.out)["text"], answer.text

    last = {p["host"]: p for p in _provision_predicates(site)[-2:]}
    assert last["npu-node-2"]["outcome"] == "failed"
    phases = {(c["name"], c["phase"], c["ready"]) for p in last.values() for c in p["serving_checks"]}
    assert {("chat-decode", "apply", False), ("chat-decode", "rollback", True),
            ("chat-prefill", "rollback", True)} <= phases
    # the inventory still asks for 2.0: the next plan says so
    again = run_cli("plan", site.path, "--json")
    assert {(c["host"], c["component"]) for c in json.loads(again.out)["plan"]["changes"]} >= {
        ("npu-node-2", "model"), ("npu-node-2", "serving")}


def test_first_install_that_fails_its_check_is_stopped_and_fails_the_host(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    site.bump_model("demo-ko-chat", "2.0", _model_files({**DEMO_CONFIG, "max_position_embeddings": 2048}))
    site.save()
    r = run_cli("apply", site.path, "--auto-approve")
    assert r.code == 1, r.text
    assert "nothing to roll back to (first install): its new processes were stopped" in r.text
    assert running(site.root) == {}
    state = _state(site)
    assert {n: s.status for rec in state.hosts.values() for n, s in rec.serving.items()} == {
        "chat-prefill": "stopped", "chat-decode": "stopped", "chat-router": "stopped"}
