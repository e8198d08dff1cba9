"""apply on the local demo-like site records provision attestations that `attest verify` accepts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sovkit.attest.log import read_log
from sovkit.attest.predicates import POLICY_DECISION_PREDICATE, PROVISION_PREDICATE
from sovkit.state.models import State
from tests.conftest import run_cli
from tests.sitefactory import make_site

pytestmark = pytest.mark.slow


def _state_digests(state: State, host: str) -> set[str]:
    rec = state.hosts[host]
    out = {fw.image_sha256 for fw in rec.firmware.values()}
    for rt in rec.runtimes.values():
        out |= set(rt.artifacts.values())
    for m in rec.models.values():
        out |= set(m.files.values())
    out |= {s.config_sha256 for s in rec.serving.values()}
    return out


def test_apply_records_verifiable_provision_attestations(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    pub = site.root / ".sovkit" / "keys" / "operator.key.pub"
    r = run_cli("apply", site.path, "--auto-approve")
    assert r.code == 0, r.text
    state = State.model_validate_json((site.root / ".sovkit" / "state.json").read_bytes())
    entries = read_log(site.root / ".sovkit" / "attestations")
    provision = [e for e in entries if e.predicate_type == PROVISION_PREDICATE]
    assert sorted(e.predicate["host"] for e in provision) == ["npu-node-1", "npu-node-2"]
    for e in provision:
        host = e.predicate["host"]
        p = e.predicate
        assert p["outcome"] == "success" and p["operation"] == "apply"
        assert p["site"] == state.site
        assert {d["firmware"] for d in p["devices"]} == {"1.2.0"}, "firmware read back from the devices"
        assert len(p["devices"]) == sum(len(fw.devices) for fw in state.hosts[host].firmware.values())
        assert p["models"][0]["name"] == "demo-ko-chat" and p["models"][0]["signature"]["verified"] is True
        assert p["runtimes"] == [{"name": "simnpu-serve", "version": "1.0.0", "package": "simnpu-serve"}]
        assert p["plan_digest"].startswith("sha256:") and p["run_id"].startswith("apply-")
        assert p["started"] <= p["finished"]
        assert p["policy"]["allowed"] is True
        subjects = {s["digest"]["sha256"] for s in e.subjects}
        assert subjects == _state_digests(state, host), "subjects are exactly what the state records"
        names = {s["name"] for s in e.subjects}
        assert "models/demo-ko-chat/1.0/model.safetensors" in names
        for name in names:
            if (site.store / name).is_file():
                assert (site.store / name).exists()
    ok = run_cli("attest", "verify", site.path, "--key", pub)
    assert ok.code == 0, ok.text
    for title in ("envelope format", "keyid", "signature", "chain continuity", "signed head",
                  "subjects against recorded state"):
        assert title in ok.out
    assert "FAILED" not in ok.out and "All steps verified" in ok.out

    # plan records a policy decision; the log still verifies, from the log directory itself too
    again = run_cli("plan", site.path)
    assert again.code == 0, again.text
    entries = read_log(site.root / ".sovkit" / "attestations")
    assert entries[-1].predicate_type == POLICY_DECISION_PREDICATE
    assert entries[-1].predicate["operation"] == "plan" and entries[-1].predicate["allowed"] is True
    js = run_cli("attest", "verify", site.root / ".sovkit" / "attestations", "--key", pub, "--json")
    assert js.code == 0, js.text
    doc = json.loads(js.out)
    assert doc["ok"] is True and doc["facts"]["entries"] == 3
    assert [s["name"] for s in doc["steps"]] == ["envelope-format", "keyid", "signature", "chain", "head", "keyring",
                                                 "signing-time", "anchor", "subjects"]

    # a changed model file in the artifact store no longer matches its attested subject
    weights = site.store / "models/demo-ko-chat/1.0/model.safetensors"
    weights.write_bytes(weights.read_bytes() + b"x")
    bad = run_cli("attest", "verify", site.path, "--key", pub)
    assert bad.code == 1
    assert "subject models/demo-ko-chat/1.0/model.safetensors" in bad.err
    assert "artifact store" in bad.err and "Traceback" not in bad.err


def test_apply_refuses_without_operator_key_and_changes_nothing(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    (site.root / ".sovkit" / "keys" / "operator.key").unlink()
    r = run_cli("apply", site.path, "--auto-approve")
    assert r.code == 1
    assert "signing key" in r.err and "sovkit keys generate" in r.err
    assert not (site.root / ".sovkit" / "state.json").exists()
    assert not (site.root / ".sovkit" / "attestations").exists()
